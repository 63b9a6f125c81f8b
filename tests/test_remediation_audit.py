"""No remediation meshbot can emit tells anyone to delete istio-ca-secret or restart/delete ztunnel, restarts an
OOMKilled istiod without raising its memory first, or offers permissive-mtls without saying what it does; every
playbook remediation cites its source.

- Deleting istio-ca-secret makes istiod mint a new key and root (istio security/pkg/pki/ca/ca.go
  NewSelfSignedIstioCAOptions): every workload holding a certificate from the old root fails mTLS until it
  restarts.  istiod renews its self-signed root from the existing key instead
  (security/pkg/pki/ca/selfsignedcarootcertrotator.go).
- ztunnel carries every ambient pod's traffic on its node; restarting or deleting it drops all of their
  connections at once (https://istio.io/latest/docs/ambient/upgrade/helm/ upgrades it node by node for that reason).

- A restart keeps a container's memory limit, so an OOMKilled istiod restarted alone is OOMKilled again; istiod's
  limit (or, in Istio's chart, only a 2048Mi request) comes from `resources` in its Helm values
  (manifests/charts/istio-control/istio-discovery/values.yaml).
- PERMISSIVE only lets servers accept plaintext; with auto mTLS client sidecars keep originating mTLS unless a
  DestinationRule says tls DISABLE (pilot/pkg/networking/core/cluster_tls.go), and AuthorizationPolicy principals
  and namespaces need mTLS (https://istio.io/latest/docs/reference/config/security/authorization-policy/#Source).

The texts are collected three ways: the code catalogue and the shipped playbooks as loaded, every string
literal of the modules that write remediations and action plans (f-string holes read as ``X``), and the
remediations the certs check actually renders for clusters in every CA layout.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbook_file, load_playbooks
from bot.incidents.playbooks import suggest
from commands import codes
from commands.catalog import default_checks
from commands.checks.certs import certs
from commands.checks.registry import CheckContext, Thresholds
from commands.codes import ALL_CODES
from commands.findings import Finding, Level, Remediation
from commands.preconditions import Effect, effect_of, gate_findings
from tests.support.analysis import snapshot_from_yaml
from tests.support.certs import mint
from tests.test_certs import (
    ISTIO,
    ingress_gateway,
    injected_pod,
    istio_cacerts,
    root_ca,
    root_configmap,
    secret,
    secret_with,
    snapshot,
    tls_cacerts,
)

REPO = Path(__file__).resolve().parent.parent
# Modules whose strings become remediations, triage advice or action plans.
REMEDIATION_SOURCES = (
    "commands/checks", "commands/actions", "commands/analyze", "commands/certificates", "commands/triage.py")

_NAMESPACE_FLAG = r"(?:-n|--namespace)(?:=|\s+)\S+"
DELETES_CA_SECRET = re.compile(
    rf"\bdelete\b(?:\s+{_NAMESPACE_FLAG})?\s+secrets?(?:/|\s+)(?:{_NAMESPACE_FLAG}\s+)?"
    r"(?:[^\s;&|]+\s+)*?istio-ca-secret\b", re.IGNORECASE)
# An order to act on ztunnel: an imperative verb (not "restarting", "restarts") with ztunnel among the next few
# words, or ztunnel said to need it ("the ztunnel pods should be deleted").
_ACT_ON_ZTUNNEL = re.compile(
    r"\b(restart|delete|kill|bounce|recreate|redeploy|evict|roll\s+out)\s+(?:\S+\s+){0,3}?\S*ztunnel"
    r"|ztunnel\S*\s+(?:\S+\s+){0,3}?(?:should|must|needs?\s+to)\s+be\s+"
    r"(?:restarted|deleted|killed|bounced|recreated|redeployed|evicted)\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(never|not|don't|avoid)\b", re.IGNORECASE)


def deletes_ca_secret(text: str) -> bool:
    return DELETES_CA_SECRET.search(" ".join(text.split())) is not None


def disrupts_ztunnel(text: str) -> bool:
    """A sentence telling someone to restart/delete ztunnel, unless it says not to."""
    return any(_ACT_ON_ZTUNNEL.search(sentence) and not _NEGATION.search(sentence)
               for sentence in re.split(r"[.;\n]", text))


def violations(texts: Iterator[tuple[str, str]]) -> list[str]:
    return [f"{where}: {text!r}" for where, text in texts if deletes_ca_secret(text) or disrupts_ztunnel(text)]


# -- the detectors themselves ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "kubectl -n istio-system delete secret istio-ca-secret",
    "kubectl delete secret istio-ca-secret -n istio-system && kubectl rollout restart deployment/istiod",
    "kubectl delete -n istio-system secret istio-ca-secret",
    "kubectl delete secret -n istio-system istio-ca-secret",
    "kubectl delete secret --namespace=istio-system istio-ca-secret",
    "kubectl delete secrets/istio-ca-secret",
    "kubectl delete secret/istio-ca-secret",
    "kubectl  delete\n   secret   istio-ca-secret",
    "kubectl -n istio-system delete secret cacerts istio-ca-secret",
])
def test_every_form_of_deleting_istio_ca_secret_is_caught(text: str) -> None:
    assert deletes_ca_secret(text)


@pytest.mark.parametrize("text", [
    "Never delete istio-ca-secret: istiod would mint a new key and root",
    "kubectl -n istio-system get secret istio-ca-secret -o name",
    "kubectl -n legacy delete configmap istio-ca-root-cert",
    "kubectl -n istio-system delete secret shop-tls; kubectl get secret istio-ca-secret",
])
def test_mentioning_istio_ca_secret_without_deleting_it_is_fine(text: str) -> None:
    assert not deletes_ca_secret(text)


@pytest.mark.parametrize("text", [
    "kubectl -n istio-system rollout restart daemonset/ztunnel",
    "Restart ztunnel on the node",
    "kubectl -n istio-system delete pod ztunnel-abcde",
    "the ztunnel pods should be deleted",
    "Then roll out the ztunnel DaemonSet again",
])
def test_restarting_or_deleting_ztunnel_is_caught(text: str) -> None:
    assert disrupts_ztunnel(text)


@pytest.mark.parametrize("text", [
    "Do not restart ztunnel: every ambient pod on the node loses its connections",
    "Check ztunnel's log for the workload. Then restart the workload",
    "kubectl -n istio-system logs daemonset/ztunnel",
    "Restarting ztunnel cuts every ambient pod on its node. Fix the policy ztunnel names instead",
    "A ztunnel restart drops every connection on the node",
])
def test_ztunnel_without_a_restart_or_with_a_warning_is_fine(text: str) -> None:
    assert not disrupts_ztunnel(text)


# -- what meshbot emits --------------------------------------------------------------------------------------------

def catalogue_texts() -> Iterator[tuple[str, str]]:
    for entry in ALL_CODES.values():
        yield f"codes.py {entry.code}", entry.template
        yield f"codes.py {entry.code} description", entry.description


def playbook_texts() -> Iterator[tuple[str, str]]:
    for playbook in load_playbooks(DEFAULT_PLAYBOOKS_DIR).playbooks:
        yield playbook.source, playbook.description
        for rule in playbook.remediations:
            where = f"{playbook.source} {rule.title!r}"
            yield where, rule.title
            for text in (rule.advice, rule.action):
                if text:
                    yield where, text


def source_literals() -> Iterator[tuple[str, str]]:
    """Every string literal of the remediation-writing modules; f-string holes read as ``X``."""
    for root in REMEDIATION_SOURCES:
        path = REPO / root
        for module in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            tree = ast.parse(module.read_text(), filename=str(module))
            for node in ast.walk(tree):
                text = _literal(node)
                if text:
                    yield f"{module.relative_to(REPO)}:{node.lineno}", text


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "X" for part in node.values)
    return None


def certificate_clusters(now: datetime) -> Iterator[tuple[str, object]]:
    """A cluster for every CA layout and root state the certs check tells apart."""
    expired, valid = root_ca(not_after=now - timedelta(days=1)), root_ca()
    expiring = root_ca(days=5)
    intermediate = mint("Intermediate CA", issuer=expiring, is_ca=True, days=3)
    yield "self-signed, expired", snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=expired.cert_pem),
                                           root_configmap(ISTIO, expired), root_configmap("legacy", valid))
    yield "istio-generated cacerts", snapshot(secret_with(ISTIO, "cacerts", {"ca-cert.pem": expiring.cert_pem,
                                                                             "istio-generated": ""}))
    yield "plugged-in, Istio layout", snapshot(istio_cacerts(intermediate, expiring),
                                               secret(ISTIO, "istio-ca-secret", ca_cert_pem=expired.cert_pem))
    yield "plugged-in, tls layout", snapshot(tls_cacerts(intermediate, expiring), root_configmap("prod", valid))
    yield "plugged-in, incomplete", snapshot(istio_cacerts(intermediate, expiring, with_root_file=False))
    yield "rotation bundle", snapshot(root_configmap(ISTIO, expired, valid), root_configmap("prod", expired),
                                      injected_pod("shop", "cart-1"))
    yield "published root only", snapshot(root_configmap(ISTIO, expiring), ingress_gateway("shop-tls"))


def rendered_certificate_texts() -> Iterator[tuple[str, str]]:
    now = datetime.now(timezone.utc)
    for name, cluster in certificate_clusters(now):
        findings: list[Finding] = certs(CheckContext(snapshot=cluster, now=now, thresholds=Thresholds()))
        assert findings, name
        for finding in findings:
            yield f"certs [{name}] {finding.code}", finding.message
            if finding.remediation:
                for text in (finding.remediation.summary, finding.remediation.command, finding.remediation.action):
                    if text:
                        yield f"certs [{name}] {finding.code} remediation", text


def test_no_code_template_suggests_deleting_istio_ca_secret_or_restarting_ztunnel() -> None:
    texts = list(catalogue_texts())
    assert len(texts) > 100
    assert violations(iter(texts)) == []


def test_no_playbook_suggestion_deletes_istio_ca_secret_or_restarts_ztunnel() -> None:
    texts = list(playbook_texts())
    assert any("istio-ca-secret" in text for _, text in texts)  # the certificate playbook is among them
    assert violations(iter(texts)) == []


def test_no_check_remediation_or_action_plan_text_deletes_istio_ca_secret_or_restarts_ztunnel() -> None:
    texts = list(source_literals())
    assert any(where.startswith("commands/actions/planners.py") for where, _ in texts)
    assert any("rollout restart" in text for _, text in texts)  # restarts of other workloads are collected too
    assert violations(iter(texts)) == []


def test_no_rendered_certificate_remediation_deletes_istio_ca_secret() -> None:
    texts = list(rendered_certificate_texts())
    assert {where.split("]")[0] for where, _ in texts} >= {f"certs [{name}" for name, _ in
                                                           certificate_clusters(datetime.now(timezone.utc))}
    assert violations(iter(texts)) == []


# -- an OOMKilled istiod: raise its memory before any restart -----------------------------------------------------

_RESTART = re.compile(r"\brestart", re.IGNORECASE)
_RAISES_MEMORY = re.compile(r"\brais(?:e|es|ing)\b[^.;]*?\b(?:memory|limit|request)", re.IGNORECASE)
_RESTART_ALONE_FAILS = re.compile(r"\brestart\w*\s+alone\b", re.IGNORECASE)


def restarts_oomkilled_without_raising(text: str) -> bool:
    """Advice for an OOMKilled container that restarts it without saying: raise the memory first, a restart alone
    is OOMKilled again."""
    text = " ".join(text.split())
    return bool(_RESTART.search(text)) and not (_RAISES_MEMORY.search(text) and _RESTART_ALONE_FAILS.search(text))


@pytest.mark.parametrize("text", [
    "Restart istiod (OOMKilled)",
    "istiod ran out of memory and stopped pushing; restart it and raise its memory limit.",
    "istiod is crash-looping, so no proxy gets updates; read its previous log, then restart it.",
    "A restart brings it back for now; raise its memory limit too.",
    "Raise the memory limit. Restart it on its own if that is not possible.",
])
def test_restarting_an_oomkilled_istiod_without_raising_memory_first_is_caught(text: str) -> None:
    assert restarts_oomkilled_without_raising(text)


@pytest.mark.parametrize("text", [
    "Raise the discovery container's memory limit first. A restart alone keeps the same limit and is OOMKilled "
    "again.",
    "Raise its memory request to 4096Mi first. A restart alone can land on a node as short of memory.",
    "istiod issues the workload certificates; while it is down none are renewed.",  # no restart at all
])
def test_oom_advice_that_raises_memory_first_or_does_not_restart_is_fine(text: str) -> None:
    assert not restarts_oomkilled_without_raising(text)


def oomkilled_istiod_clusters() -> Iterator[tuple[str, str]]:
    """An OOMKilled istiod as the status check sees it: crash-looping or back but not ready; with and without a
    limit (Istio's chart sets none)."""
    for limit_name, resources in (("2Gi limit", "{limits: {memory: 2Gi}}"),
                                  ("chart default, no limit", "{requests: {cpu: 500m, memory: 2048Mi}}")):
        for state_name, ready, state in (("crash-looping", "false", "{waiting: {reason: CrashLoopBackOff}}"),
                                         ("restarted, not ready", "false", "{running: {}}")):
            yield f"{limit_name}, {state_name}", f"""
apiVersion: v1
kind: Pod
metadata:
  name: istiod-7c9d8-x2
  namespace: istio-system
  labels: {{app: istiod}}
  ownerReferences: [{{kind: ReplicaSet, name: istiod-7c9d8, apiVersion: apps/v1, uid: u}}]
spec:
  containers: [{{name: discovery, image: "docker.io/istio/pilot:1.24.1", resources: {resources}}}]
status:
  phase: Running
  conditions: [{{type: Ready, status: "False"}}]
  containerStatuses:
  - {{name: discovery, ready: {ready}, restartCount: 6, state: {state},
      lastState: {{terminated: {{reason: OOMKilled, exitCode: 137}}}}}}
"""


def oomkilled_istiod_findings(cluster_yaml: str) -> list[Finding]:
    ctx = CheckContext(snapshot=snapshot_from_yaml(cluster_yaml), thresholds=Thresholds())
    findings = default_checks().run("status", ctx)
    assert "MB1002" in {f.code for f in findings}
    return findings


def test_status_tells_an_oomkilled_istiod_to_raise_memory_before_any_restart() -> None:
    for name, cluster in oomkilled_istiod_clusters():
        for finding in oomkilled_istiod_findings(cluster):
            if finding.remediation:
                text = " ".join(filter(None, (finding.remediation.summary, finding.remediation.action)))
                assert not restarts_oomkilled_without_raising(text), f"{name} {finding.code}: {text!r}"


def test_no_playbook_restarts_an_oomkilled_istiod_without_raising_its_memory_first() -> None:
    playbooks = load_playbooks(DEFAULT_PLAYBOOKS_DIR).playbooks
    suggested = 0
    for name, cluster in oomkilled_istiod_clusters():
        findings = oomkilled_istiod_findings(cluster)
        for playbook in playbooks:
            labels = {"alertname": playbook.alertname or "Other", "namespace": "istio-system"}
            for suggestion in suggest(playbook, findings, labels):
                suggested += 1
                text = " ".join(filter(None, (suggestion.title, suggestion.advice, suggestion.action)))
                assert not restarts_oomkilled_without_raising(text), f"{playbook.source} [{name}]: {text!r}"
    assert suggested >= 8  # IstiodDown, IstiodHighMemory, EnvoyConfigSyncLag, the certificate playbook, the fallback


def test_every_playbook_rule_for_an_oomkilled_control_plane_raises_memory_before_restarting() -> None:
    """The rules themselves, whatever the message: gateways run out of memory the same way."""
    for playbook in load_playbooks(DEFAULT_PLAYBOOKS_DIR).playbooks:
        for rule in playbook.remediations:
            if "MB1002" in rule.codes:
                text = " ".join(filter(None, (rule.title, rule.advice, rule.action)))
                assert not restarts_oomkilled_without_raising(text), f"{playbook.source} {rule.title!r}"


# -- permissive-mtls for certificate problems: both halves and the risk --------------------------------------------

def test_every_playbook_offering_permissive_mtls_says_both_halves_and_the_risk() -> None:
    offered = 0
    for playbook in load_playbooks(DEFAULT_PLAYBOOKS_DIR).playbooks:
        for rule in playbook.remediations:
            if rule.action and rule.action.startswith("permissive-mtls") and "--servers-only" not in rule.action:
                offered += 1
                advice = " ".join((rule.advice or "").split())
                where = f"{playbook.source} {rule.title!r}"
                assert "PERMISSIVE" in advice and "DestinationRule" in advice and "DISABLE" in advice, where
                assert "plaintext" in advice and "AuthorizationPolicies" in advice, where
    assert offered >= 5


# -- every playbook remediation cites its source -------------------------------------------------------------------

_CITATION = re.compile(r"#.*(?:\bsource:|https?://)", re.IGNORECASE)


def remediation_entries(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, the entry's lines plus the comment lines directly above it) for each item of
    ``remediations:``, read from the file text because the YAML loader drops comments."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "remediations:"), None)
    if start is None:
        return
    items = [i for i in range(start + 1, len(lines)) if re.match(r"\s*- ", lines[i])
             and len(lines[i]) - len(lines[i].lstrip()) == _item_indent(lines, start)]
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()
                and not lines[i].startswith(("#", "-"))), len(lines))
    for n, first in enumerate(items):
        last = items[n + 1] if n + 1 < len(items) else end
        above = first
        while above - 1 > start and lines[above - 1].strip().startswith("#"):
            above -= 1
        while last - 1 > first and (not lines[last - 1].strip() or lines[last - 1].strip().startswith("#")):
            last -= 1  # comments at the end belong to the next item, above it
        yield first + 1, lines[above:last]


def _item_indent(lines: list[str], start: int) -> int:
    first = next(line for line in lines[start + 1:] if re.match(r"\s*- ", line))
    return len(first) - len(first.lstrip())


def cites_source(entry: list[str]) -> bool:
    return any(_CITATION.search(line) for line in entry)


def test_the_source_comment_finder_reads_entries_and_the_comments_above_them() -> None:
    text = """name: x
remediations:
  # source: https://istio.io/latest/docs/ops/
  - codes: [MB1002]
    title: Raise it
  - codes: [MB1003]   # the crash loop
    title: Read the log

  # why, but no source
  - codes: [IST0109]
    title: Merge   # source: pkg/config/analysis/msg/messages.yaml IST0109
  - codes: [IST0101]
    # https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage
    title: Fix the reference
  - codes: [IST0173]
    title: Fix the subset

  # source: for the next one only
  - codes: [IST0174]
    title: Fix the host
"""
    entries = list(remediation_entries(text))
    assert [line for line, _ in entries] == [4, 6, 10, 12, 15, 19]
    assert [cites_source(entry) for _, entry in entries] == [True, False, True, True, False, True]


def test_every_playbook_remediation_has_a_source_comment() -> None:
    missing = []
    for path in sorted(DEFAULT_PLAYBOOKS_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        entries = list(remediation_entries(text))
        rules = (load_playbook_file(path).playbook.remediations)
        assert len(entries) == len(rules), path.name  # the text reader sees every rule the loader does
        missing += [f"{path.name}:{line}" for line, entry in entries if not cites_source(entry)]
    assert missing == []



# -- no restart while what the restart depends on is failing (commands/preconditions.py) -------------------------

def failing_dependencies() -> Iterator[tuple[str, Finding]]:
    """One finding per dependency a restart needs, as the checks report it (codes from the catalogue)."""
    _, istiod_cluster = next(oomkilled_istiod_clusters())
    yield "istiod OOMKilled", next(f for f in oomkilled_istiod_findings(istiod_cluster) if f.code == "MB1002")
    yield "CA not signing", codes.finding(
        "MB3020", origin="Pod istio-system/istiod-7c9d8-x2", pod="istio-system/istiod-7c9d8-x2", errors=40,
        requests=52, causes="40 signing errors")
    yield "injection webhook unreachable", codes.finding(
        "MB1040", origin="MutatingWebhookConfiguration istio-sidecar-injector", webhook="istio-sidecar-injector",
        reason="Service istio-system/istiod has no Ready pod", scope="prod", evidence={"namespaces": ["prod"]})
    yield "revision not served", codes.finding(
        "MB1041", origin="Namespace prod", namespace="prod", revision="1-24-canary", served="[default]")


def restart_advice() -> Iterator[tuple[str, Remediation]]:
    """Every pod-restarting command meshbot's remediation modules can write, with its holes filled for prod."""
    for where, text in source_literals():
        if effect_of(Remediation("x", command=text)) is Effect.NEW_PODS and "kubectl" in text:
            command = re.sub(r"\bX\b", "prod", text, count=1).replace("X", "payment-7d9f8c6b5-x2x4k")
            yield where, Remediation("restart it", command=command)
    for where, action in (("action restart", "restart payment -n prod"),):
        yield where, Remediation("restart it", action=action)


def test_restart_advice_is_collected_from_every_module_that_writes_it() -> None:
    sources = {where.split(":")[0] for where, _ in restart_advice()}
    assert any(s.startswith("commands/checks/certs") for s in sources)  # kubectl delete pod for ageing certs
    assert len(sources) >= 3


@pytest.mark.parametrize(("dependency", "blocker"), list(failing_dependencies()), ids=lambda v: str(v)[:30])
def test_no_restart_is_offered_while_a_dependency_of_the_restart_is_failing(dependency: str,
                                                                               blocker: Finding) -> None:
    offered = []
    for where, step in restart_advice():
        victim = Finding(check="status", code="MB1011", level=Level.ERROR, message="x",
                         origin="Pod prod/payment-7d9f8c6b5-x2x4k", remediation=step)
        gated = next(f for f in gate_findings([blocker, victim]) if f.code == "MB1011")
        text = " ".join(filter(None, (gated.remediation.command, gated.remediation.action)))
        if effect_of(gated.remediation) is Effect.NEW_PODS or "delete pod" in text or "rollout restart" in text:
            offered.append(f"{where}: {text}")
        assert gated.evidence.get("blocked_by"), where
    assert offered == [], f"{dependency}: restart still offered"
