"""Every row of the response-flag table (commands/checks/envoy/flags.py, docs/response-flags.md) against the real
Envoy: the failing sidecar is found with its cause, its healthy twin stays quiet, and the captures under
tests/data/envoy-<case>/ (scripts/capture_envoy_cases.py) give the same answer offline."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from commands.checks.envoy import envoy, parse_stats
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.hosts import parse_clusters
from commands.checks.envoy.names import ClusterName, listener_port
from commands.checks.registry import CheckContext
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.codes import MESHBOT_CODES
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from commands.thresholds import Thresholds
from tests.support import sidecar
from tests.support.analysis import snapshot_from_yaml
from tests.support.envoy import RunningEnvoy
from tests.support.envoy_cases import CASES, CASES_BY_NAME, Case, Lab, run_case, send

POD = PodRef("prod", "checkout-6b7c9d8f5-k2m4p")
ROOT = Path(__file__).resolve().parent.parent
FLAGS_PAGE = ROOT / "docs" / "response-flags.md"
# What must never reach a person: Istio's cluster names and the stat names built from them.
MACHINE_NAME = re.compile(r"outbound\||inbound\||;\.|\bcluster\.[\w|]+\.upstream_|\bupstream_rq_|\bupstream_cx_")


def check(admin_url: str, thresholds: Thresholds | None = None) -> list[Finding]:
    endpoints = EndpointResolver(http=http_endpoint, envoy_admin_urls={POD: admin_url})
    return envoy(CheckContext(snapshot=Snapshot(), thresholds=thresholds or Thresholds(), endpoints=endpoints))


def codes_of(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def texts(findings: list[Finding]) -> Iterator[str]:
    for finding in findings:
        yield finding.message
        if finding.remediation:
            yield finding.remediation.summary
            yield finding.remediation.command or ""


@pytest.fixture
def lab_case(envoy_binary: str, tmp_path: Path) -> Iterator[Callable[[Case, bool], RunningEnvoy]]:
    labs: list[Lab] = []

    def start(case: Case, healthy: bool) -> RunningEnvoy:
        lab, proxy = run_case(envoy_binary, tmp_path / f"{case.name}-{len(labs)}", case, healthy=healthy)
        labs.append(lab)
        return proxy

    yield start
    for lab in labs:
        lab.close()


# -- the captures: every row, offline ----------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_captured_failure_is_found_with_its_cause(case: Case) -> None:
    findings = check(str(case.directory))

    assert codes_of(findings) == list(case.expect)
    for finding in findings:
        mode = next((m for m in FAILURE_MODES if m.code == finding.code), None)
        if mode and "{cause}" in MESHBOT_CODES[finding.code].template:
            assert any(c.state in finding.message for c in mode.causes), finding.message


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_istio_cluster_or_stat_name_reaches_messages_or_commands(case: Case) -> None:
    leaked = [text for text in texts(check(str(case.directory))) if MACHINE_NAME.search(text)]

    assert leaked == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_first_step_restarts_deletes_or_relaxes_mtls(case: Case) -> None:
    steps = [f.remediation for f in check(str(case.directory)) if f.remediation]

    for step in steps:
        assert step.action is None
        assert not re.search(r"delete pod|rollout restart|mode: PERMISSIVE", step.command or ""), step.command
        assert "switch to PERMISSIVE" not in step.summary.replace("never switch to PERMISSIVE", "")


# -- the real Envoy: each row live, and its healthy twin ---------------------------------------------------

@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_real_sidecar_driven_into_the_failure_is_found(case: Case, lab_case) -> None:
    proxy = lab_case(case, False)

    assert codes_of(check(proxy.admin_url)) == list(case.expect)


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_healthy_traffic_of_the_same_shape_stays_quiet(case: Case, lab_case) -> None:
    proxy = lab_case(case, True)

    findings = check(proxy.admin_url)

    # Under Istio's default stats matcher the one thing to say is what could not be checked.
    assert codes_of(findings) == (["MB4012"] if case.istio_defaults_only else [])


# -- silence is earned -------------------------------------------------------------------------------------

@pytest.mark.envoy
def test_sidecar_without_traffic_says_nothing_was_judged(envoy_binary: str, tmp_path: Path) -> None:
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    try:
        proxy = lab.start([sidecar.outbound_listener([sidecar.service_vhost()])],
                          [sidecar.outbound_cluster(lab.upstream())])
        findings = check(proxy.admin_url)
    finally:
        lab.close()

    assert codes_of(findings) == ["MB4026"] and findings[0].level is Level.INFO
    assert "no traffic" in findings[0].message and "not judged" in findings[0].message


@pytest.mark.envoy
def test_sidecar_with_traffic_and_nothing_wrong_is_silent(envoy_binary: str, tmp_path: Path) -> None:
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    try:
        proxy = lab.start([sidecar.outbound_listener([sidecar.service_vhost()])],
                          [sidecar.outbound_cluster(lab.upstream())])
        assert send(proxy, 20) == [200] * 20
        findings = check(proxy.admin_url)
    finally:
        lab.close()

    assert findings == []


@pytest.mark.envoy
def test_a_few_failures_among_many_requests_are_background_not_an_outage(envoy_binary: str, tmp_path: Path) -> None:
    # A long-lived sidecar collects a few failures of every kind; 6 unrouted of 206 requests is under 5%.
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    try:
        proxy = lab.start([sidecar.outbound_listener([sidecar.service_vhost(domains=(sidecar.SERVICE,))])],
                          [sidecar.outbound_cluster(lab.upstream())])
        assert set(send(proxy, 200)) == {200} and set(send(proxy, 6, host="payments.prod")) == {404}
        findings = check(proxy.admin_url)
        strict = check(proxy.admin_url, Thresholds(flag_share=0.01))
    finally:
        lab.close()

    assert findings == []
    assert codes_of(strict) == ["MB4020"]


def meshbot_diagnose_envoy(capture: Path, files: Path) -> subprocess.CompletedProcess[str]:
    files.mkdir(exist_ok=True)
    (files / "empty.yaml").write_text("")
    return subprocess.run([sys.executable, "-m", "bot.cli", "diagnose", "envoy", "-f", str(files),
                           "--envoy-admin", f"{POD}={capture}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_cli_exits_79_on_a_failing_sidecar_and_names_service_and_cause(tmp_path: Path) -> None:
    result = meshbot_diagnose_envoy(CASES_BY_NAME["uf-refused"].directory, tmp_path)

    assert result.returncode == 79, result.stderr
    assert "Error [MB4014]" in result.stdout and "payment.prod:8080" in result.stdout
    assert not MACHINE_NAME.search(result.stdout)


def test_cli_never_calls_an_idle_sidecar_healthy(tmp_path: Path) -> None:
    result = meshbot_diagnose_envoy(CASES_BY_NAME["no-traffic"].directory, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Info [MB4026]" in result.stdout and "NOT checked" in result.stdout
    assert "No problems found" not in result.stdout


def test_unreadable_host_health_is_said_not_passed_over(tmp_path: Path) -> None:
    captured = CASES_BY_NAME["nr-no-route"].directory
    for name in ("stats.txt", "memory.json"):
        (tmp_path / name).write_text((captured / name).read_text())

    findings = check(str(tmp_path))

    unread = next(f for f in findings if f.code == "MB4027")
    assert unread.level is Level.INFO and "/clusters?format=json did not answer" in unread.message
    assert "MB4020" in codes_of(findings)


def test_fewer_failures_than_the_floor_are_noise(tmp_path: Path) -> None:
    findings = check(str(CASES_BY_NAME["nr-no-route"].directory), Thresholds(min_flag_failures=21))

    assert "MB4020" not in codes_of(findings)


CHECKOUT_WITH_POLICY = f"""
apiVersion: v1
kind: Pod
metadata: {{name: {POD.name}, namespace: prod, labels: {{app: checkout}}}}
spec: {{serviceAccountName: checkout, containers: [{{name: app}}, {{name: istio-proxy}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: checkout-allow, namespace: prod}}
spec:
  selector: {{matchLabels: {{app: checkout}}}}
  action: ALLOW
"""


def test_rbac_denials_name_the_authorization_policy_behind_them() -> None:
    endpoints = EndpointResolver(http=http_endpoint,
                                 envoy_admin_urls={POD: str(CASES_BY_NAME["rbac-denied"].directory)})
    snapshot = snapshot_from_yaml(CHECKOUT_WITH_POLICY)

    findings = envoy(CheckContext(snapshot=snapshot, endpoints=endpoints))

    assert codes_of(findings) == ["MB4022", "MB7004"]
    policy = findings[1]
    assert "denied 20 requests" in policy.message and "prod/checkout-allow has no rules" in policy.message
    assert policy.remediation.command == "kubectl get authorizationpolicy -n prod checkout-allow -o yaml"


def test_a_serviceentry_host_gets_envoys_endpoints_not_kubernetes_endpointslices(tmp_path: Path) -> None:
    # The uf-refused capture with its cluster renamed as istiod names a ServiceEntry's (no Kubernetes Service).
    captured = CASES_BY_NAME["uf-refused"].directory
    for name in ("stats.txt", "clusters.json", "memory.json"):
        text = (captured / name).read_text().replace("outbound|8080||payment.prod.svc.cluster.local",
                                                     "outbound|443||api.stripe.com")
        (tmp_path / name).write_text(text)

    refused = next(f for f in check(str(tmp_path)) if f.code == "MB4014")

    assert "to api.stripe.com:443" in refused.message
    assert refused.remediation.command == (f"istioctl proxy-config endpoint {POD.name} -n prod "
                                           "--fqdn api.stripe.com --port 443")


def test_custom_policy_selection_rules_are_not_mistaken_for_a_dry_run() -> None:
    # CUSTOM policies mark the requests to send to the authorizer with shadow rules prefixed istio_ext_authz_
    # (istio/istio pilot/pkg/security/authz/builder/extauthz.go); a request they do not select is "shadow denied".
    text = "\n".join(["http.inbound_0.0.0.0_9080;.rbac.allowed: 40",
                      "http.inbound_0.0.0.0_9080;.rbac.istio_ext_authz_.shadow_denied: 40",
                      "http.inbound_0.0.0.0_9080;.downstream_rq_total: 40"])

    rbac = parse_stats(text).rbac

    assert [(r.allowed, r.shadow_denied) for r in rbac] == [(40, 0)]


def test_istio_delimited_stat_names_read_per_cluster_and_prefixed_variants_do_not_count_twice() -> None:
    name = "outbound|8080||payment.prod.svc.cluster.local"
    stats = parse_stats("\n".join([
        f"cluster.{name};.upstream_rq_503: 40", f"cluster.{name};.external.upstream_rq_503: 40",
        f"cluster.{name};.retry.upstream_rq_503: 80", f"cluster.{name};.ssl.fail_verify_san: 7",
        f"cluster.{name};.circuit_breakers.default.rq_open: 1", "http.outbound_0.0.0.0_8080;.no_route: 3",
        "listener.0.0.0.0_8080.http.outbound_0.0.0.0_8080;.downstream_rq_5xx: 40",
        "http.admin.downstream_rq_total: 9", "cluster_manager.cds.update_rejected: 2"]))

    payment = stats.clusters[name]
    assert (payment["upstream_rq_503"], payment["ssl.fail_verify_san"], payment.open_breakers) == (
        40, 7, ("default.rq_open",))
    assert list(stats.clusters) == [name]
    assert {p: dict(m.counters) for p, m in stats.connection_managers.items()} == {
        "outbound_0.0.0.0_8080": {"no_route": 3}}
    assert stats.xds_rejected == {"clusters (CDS)": 2}


def test_host_counters_arrive_as_strings_and_zeros_are_left_out() -> None:
    answer = {"cluster_statuses": [{"name": "outbound|8080||payment.prod.svc.cluster.local", "host_statuses": [{
        "address": {"socket_address": {"address": "10.0.0.7", "port_value": 8080}},
        "stats": [{"name": "cx_connect_fail", "value": "3"}, {"name": "rq_total"}, {"name": "bad", "value": "x"}],
        "health_status": {"failed_outlier_check": True, "eds_health_status": "HEALTHY"}}]}]}

    [cluster] = parse_clusters(answer).values()

    [host] = cluster.hosts
    assert (host.address, host["cx_connect_fail"], host["rq_total"], host.ejected, host.healthy) == (
        "10.0.0.7:8080", 3, 0, True, False)
    assert parse_clusters([]) == {} and parse_clusters({"cluster_statuses": None}) == {}


# -- the table itself ---------------------------------------------------------------------------------------

def test_every_row_has_a_code_of_the_envoy_check_and_a_capture_that_shows_it() -> None:
    for mode in FAILURE_MODES:
        assert MESHBOT_CODES[mode.code].check == "envoy", mode.code
        assert mode.causes and mode.sources and mode.evidence, mode.code
        for capture in mode.captures:
            case = CASES_BY_NAME[capture.removeprefix("envoy-")]
            assert mode.code in case.expect and case.directory.is_dir(), capture


def test_the_flags_page_is_generated_from_the_table() -> None:
    page = FLAGS_PAGE.read_text(encoding="utf-8")
    block = page.split("<!-- flags:start -->", 1)[1].split("<!-- flags:end -->", 1)[0]

    assert block.strip() == FAILURE_MODES.markdown().strip(), "run python scripts/response_flags_doc.py"


@pytest.mark.parametrize(("name", "service"), [
    ("outbound|8080||payment.prod.svc.cluster.local;", "payment.prod:8080"),
    ("outbound|9080|v2|reviews.bookinfo.svc.cluster.local", "reviews.bookinfo:9080 subset v2"),
    ("outbound|443||api.stripe.com", "api.stripe.com:443"),
    ("inbound|9080||", "its own inbound port 9080"),
    ("BlackHoleCluster", "destinations outside the service registry"),
])
def test_istio_cluster_names_read_as_services(name: str, service: str) -> None:
    assert ClusterName.parse(name).service == service


def test_listener_stat_prefixes_read_as_ports() -> None:
    names: Mapping[str, str] = {"outbound_0.0.0.0_8080;": "outbound port 8080",
                                "inbound_0.0.0.0_9080;": "inbound port 9080", "ingress": "ingress"}
    assert {prefix: listener_port(prefix) for prefix in names} == names
