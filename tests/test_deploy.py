"""Everything under deploy/ and the Dockerfile, checked by the real tools: hadolint, kubectl kustomize,
kubernetes-validate, checkov, promtool, amtool — plus the facts a reviewer would check by eye.

A missing tool fails its test (scripts/test.sh installs them all); nothing here is skipped.
``python tests/test_deploy.py`` regenerates deploy/prometheus/prometheusrule.yaml from the plain rules file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZE_DIR = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
RULES_FILE = PROMETHEUS / "meshbot-alerts.rules.yaml"
PROMETHEUS_RULE = PROMETHEUS / "prometheusrule.yaml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yaml"
VENV_BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"
VARIANTS = ("base", "with-ca")
# The only checkov findings the manifests may skip, each with its reason in the Deployment's annotations.
EXPECTED_CHECKOV_SKIPS = {"CKV_K8S_43", "CKV_K8S_38"}


def tool(name: str, *, env: str | None = None, where: Path | None = None) -> str:
    """A validator binary; missing is a failure (scripts/test.sh installs them all), never a skip."""
    candidates = [os.environ.get(env)] if env and os.environ.get(env) else []
    candidates += [str(where / name)] if where else []
    candidates += [str(VENV_BIN / name), shutil.which(name) or ""]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(f"{name} is not installed; run scripts/test.sh, which installs it", pytrace=False)


def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """``kubectl kustomize deploy/kubernetes`` (base/) and the same with the CA-secrets component (with-ca/)."""
    out = tmp_path_factory.mktemp("rendered")
    kubectl = tool("kubectl")
    tree = tmp_path_factory.mktemp("overlay")
    shutil.copytree(KUSTOMIZE_DIR, tree / "base")
    (tree / "with-ca").mkdir()
    (tree / "with-ca" / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../base"], "components": ["../base/components/ca-secrets"]}))
    for variant in VARIANTS:
        result = run(kubectl, "kustomize", str(tree / variant))
        assert result.returncode == 0, result.stderr
        (out / variant).mkdir()
        (out / variant / "meshbot.yaml").write_text(result.stdout)
    return out


@pytest.fixture(scope="module")
def checkov_report(rendered, tmp_path_factory) -> dict[str, list[dict]]:
    """One checkov run (it is the slow one) over both renderings and the Dockerfile, by framework."""
    checkov = tool("checkov", env="CHECKOV", where=ROOT / ".venv-checkov" / "bin")
    scan = tmp_path_factory.mktemp("checkov")
    for variant in VARIANTS:
        shutil.copytree(rendered / variant, scan / variant)
    shutil.copy(ROOT / "Dockerfile", scan / "Dockerfile")
    result = run(checkov, "-d", str(scan), "--framework", "kubernetes", "dockerfile", "--output", "json",
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


def test_tokens_come_from_files_of_the_secret_the_template_documents(rendered):
    bot = container(objects(rendered))
    env = {e["name"]: e for e in bot["env"]}
    for secret in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ALERTMANAGER_TOKEN"):
        assert secret not in env, f"{secret} must come from a file, not the pod spec"
        assert f"{secret}_FILE" in env
    template = load(KUSTOMIZE_DIR / "secret.template.yaml")
    [mount] = [m for m in bot["volumeMounts"] if m.get("readOnly") and "secrets" in m["mountPath"]]
    [volume] = [v for v in find(objects(rendered), "Deployment", "meshbot")["spec"]["template"]["spec"]["volumes"]
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


def test_gateway_secrets_are_granted_in_the_gateway_namespace_only(rendered):
    assert secret_grants(objects(rendered)) == {("istio-ingress", "shop-example-com-tls")}


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
        ("ClusterRole", "apps", "deployments", "patch"),                          # bypass, restart
        ("ClusterRole", "", "namespaces", "patch"),                               # bypass namespace
        ("ClusterRole", "", "pods/portforward", "create"),                        # Envoy admin
        ("Role", "coordination.k8s.io", "leases", "create"),                      # leader election
        ("Role", "coordination.k8s.io", "leases", "patch"),
    }
    lease_role = find(objects(rendered), "Role", "meshbot-leader-election")
    assert lease_role["metadata"]["namespace"] == "meshbot"


def test_every_binding_grants_to_meshbots_service_account_only(rendered):
    for obj in objects(rendered, "with-ca"):
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "meshbot", "namespace": "meshbot"}]


def test_the_network_policy_admits_only_alertmanager_and_the_ingress_controller(rendered):
    policy = find(objects(rendered), "NetworkPolicy", "meshbot")
    sources = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in policy["spec"]["ingress"] for peer in rule["from"]}
    assert sources == {"monitoring", "ingress-nginx"}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert egress_ports == {53, 443, 6443, 15014}


def test_every_namespaced_object_keeps_the_namespace_it_declares(rendered):
    """A kustomize `namespace:` would move the istio-system Roles to meshbot, where they grant nothing."""
    roles = {o["metadata"]["name"]: o["metadata"]["namespace"] for o in objects(rendered, "with-ca")
             if o["kind"] in ("Role", "RoleBinding")}
    assert roles["meshbot-ca-secrets"] == "istio-system"
    assert roles["meshbot-gateway-secrets"] == "istio-ingress"
    assert roles["meshbot-leader-election"] == "meshbot"


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
                     "labels": {"app.kubernetes.io/name": "meshbot", "app.kubernetes.io/part-of": "meshbot",
                                "release": "prometheus"}},
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
              "# Adjust metadata.labels to your Prometheus' ruleSelector (kube-prometheus-stack: release: <name>).\n")
    body = yaml.dump(prometheus_rule_resource(), Dumper=Dumper, sort_keys=False, width=1000)
    PROMETHEUS_RULE.write_text(header + body)


def test_the_prometheus_rule_resource_carries_exactly_the_plain_rules():
    assert load(PROMETHEUS_RULE) == prometheus_rule_resource(), "run `python tests/test_deploy.py` to regenerate"


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES_FILE)["groups"] for rule in group["rules"]]


def unit_tests() -> list[dict[str, Any]]:
    return [case for test in load(PROMETHEUS / "tests.yaml")["tests"] for case in test.get("alert_rule_test", [])]


def fired(alertname: str) -> list[dict[str, Any]]:
    """The alerts the promtool tests expect from one rule name."""
    return [alert for case in unit_tests() if case["alertname"] == alertname for alert in case["exp_alerts"]]


def playbooks() -> list[dict[str, Any]]:
    return [load(path) for path in sorted((ROOT / "playbooks").glob("*.yaml"))]


def test_every_playbook_alert_has_a_rule_and_every_rule_a_playbook():
    assert {p["alertname"] for p in playbooks() if not p.get("fallback")} == {r["alert"] for r in rules()}


def test_every_alert_has_a_severity_and_the_annotations_meshbot_and_people_read():
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url", "playbook"} <= set(annotations), rule["alert"]
        assert annotations["runbook_url"].endswith(f"/playbooks/{annotations['playbook']}.yaml"), rule["alert"]
        assert annotations["playbook"] in {p["name"] for p in playbooks()}, rule["alert"]


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
    for rule in rules():
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
            if alert["exp_labels"].get("job") == "istiod":  # absent(): no istiod left to have a namespace
                continue
            assert "namespace" in alert["exp_labels"] and "severity" in alert["exp_labels"], (rule["alert"], alert)


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
    for name in {r["alert"] for r in rules()}:
        assert "meshbot" in routed_to({"alertname": name, "namespace": "prod"}), name
    assert "meshbot" not in routed_to({"alertname": "KubeNodeNotReady"})


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
