"""deploy/helm/meshbot, rendered and linted by the real Helm engine for a matrix of values.

helm-python-sdk embeds Helm v4's Go SDK (no helm binary, no network): ``Chart.render`` is Helm's template
engine and ``lint`` is ``helm lint``.  Every render is validated strictly: built-in kinds with
kubernetes-validate --strict (as tests/test_deploy.py does for kustomize), the CRD kinds (PrometheusRule,
ServiceMonitor, HTTPRoute) against their CRDs' openAPIV3Schema (tests/data/crds) with unknown fields
refused, as the API server's fieldValidation=Strict does.

The chart is the one source of truth: deploy/kubernetes/meshbot.yaml is its render with default values
(release meshbot, namespace meshbot) minus Helm's bookkeeping labels; ``python -m tests.test_helm``
regenerates it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import KUBERNETES_VERSION, KUSTOMIZE_DIR, ROOT, RULES_FILE, documents, run, tool

CHART = ROOT / "deploy" / "helm" / "meshbot"
BASE = KUSTOMIZE_DIR / "meshbot.yaml"
CRDS = ROOT / "tests" / "data" / "crds"
RELEASE = NAMESPACE = "meshbot"
HELM_BOOKKEEPING = ("helm.sh/chart", "app.kubernetes.io/managed-by")
# Helm's install order (pkg/release/util/kind_sorter.go), so the generated base reads like an install.
INSTALL_ORDER = ["Namespace", "NetworkPolicy", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim",
                 "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment",
                 "PodDisruptionBudget", "Ingress", "HTTPRoute", "ValidatingAdmissionPolicy",
                 "ValidatingAdmissionPolicyBinding", "ServiceMonitor", "PrometheusRule"]

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "http-with-ingress": {"slack": {"mode": "http", "ingress": {"enabled": True, "className": "nginx",
                                                                "tlsSecretName": "meshbot-tls"}}},
    "http-with-httproute": {"slack": {"mode": "http", "httpRoute": {
        "enabled": True, "parentRefs": [{"name": "public", "namespace": "gateways"}]}}},
    "high-availability": {"replicas": 3, "database": {"postgres": True, "cidrs": ["10.20.0.0/16"]},
                          "networkPolicy": {"enabled": True}},
    "openshift": {"securityContext": {"openshift": True}},
    "scheduling": {"nodeSelector": {"kubernetes.io/os": "linux"},
                   "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "node-role", "operator": "In", "values": ["ops"]}]}]}}},
                   "priorityClassName": "system-cluster-critical", "podAnnotations": {"team": "sre"},
                   "podLabels": {"cost-center": "sre"}, "imagePullSecrets": [{"name": "ghcr"}]},
    "pinned-digest": {"image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "IfNotPresent"}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "actions-off": {"actions": {"enabled": False}},
    "actions-namespaced": {"actions": {"namespaces": ["istio-system", "prod"]}},
    "secrets": {"caSecrets": {"enabled": True},
                "gatewaySecrets": [{"namespace": "istio-ingress", "names": ["shop-example-com-tls"]}]},
    "network-policy-http": {"slack": {"mode": "http"}, "networkPolicy": {"enabled": True,
                                                                         "prometheusNamespace": "observability"}},
}
MATRIX["everything"] = {**MATRIX["high-availability"], **MATRIX["scheduling"], **MATRIX["monitoring"],
                        **MATRIX["secrets"], "slack": MATRIX["http-with-ingress"]["slack"],
                        "securityContext": {"openshift": True}}


def helm():
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm-python-sdk is not installed: pip install 'helm-python-sdk>=0.2.2' (the test extras)",
                    pytrace=False)
    return helm_python


def rendered_files(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, as ``helm install --dry-run`` would render it (values checked first)."""
    engine = helm()
    with engine.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The objects of a release, in Helm's install order."""
    files = rendered_files(values, name=name, namespace=namespace)
    return in_install_order([obj for path, text in files.items() if not path.endswith("NOTES.txt")
                             for obj in documents(text)])


def notes(values: dict | None = None, **release: str) -> str:
    return next(text for path, text in rendered_files(values, **release).items() if path.endswith("NOTES.txt"))


def without_helm_bookkeeping(objs: list[dict]) -> list[dict]:
    objs = copy.deepcopy(objs)
    for obj in objs:
        for label in HELM_BOOKKEEPING:
            obj["metadata"].get("labels", {}).pop(label, None)
    return objs


def in_install_order(objs: list[dict]) -> list[dict]:
    return sorted(objs, key=lambda o: (INSTALL_ORDER.index(o["kind"]), o["metadata"].get("namespace", ""),
                                       o["metadata"]["name"]))


def write_kustomize_base() -> None:
    """deploy/kubernetes/meshbot.yaml: the chart with default values, comments kept, as kustomize's base."""
    header = ("# GENERATED from deploy/helm/meshbot with its default values (release meshbot, namespace meshbot),\n"
              "# without Helm's bookkeeping labels: do not edit; change the chart and run `python -m tests.test_helm`.\n"
              "# tests/test_helm.py fails when this file and the chart disagree.\n")
    files = [text for path, text in rendered_files().items() if not path.endswith("NOTES.txt") and documents(text)]
    files.sort(key=lambda text: INSTALL_ORDER.index(documents(text)[0]["kind"]))
    bookkeeping = re.compile(r"^ *(?:%s): .*\n" % "|".join(map(re.escape, HELM_BOOKKEEPING)), re.M)
    body = "\n---\n".join(bookkeeping.sub("", text).strip("\n").removeprefix("---\n") for text in files)
    BASE.write_text(header + body + "\n")


def find(objs: list[dict], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def kinds(objs: list[dict]) -> set[str]:
    return {o["kind"] for o in objs}


def bot_container(objs: list[dict]) -> dict[str, Any]:
    [only] = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def env_of(objs: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in bot_container(objs)["env"]}


# -- strict validation ----------------------------------------------------------------------------

def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever the CRD does not preserve them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    return schema


def crd_schemas() -> dict[tuple[str, str], dict]:
    loaded = (json.loads(path.read_text()) for path in CRDS.glob("*.json"))
    return {(crd["apiVersion"], crd["kind"]): strict(crd["schema"]) for crd in loaded}


def validate_strictly(objs: list[dict], tmp_path: Path) -> None:
    import jsonschema

    custom = crd_schemas()
    builtin = [o for o in objs if (o["apiVersion"], o["kind"]) not in custom]
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in custom:
            errors = sorted(jsonschema.Draft7Validator(custom[obj["apiVersion"], obj["kind"]]).iter_errors(obj),
                            key=str)
            assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
    manifest = tmp_path / "render.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin))
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Couldn't find schema" not in result.stdout + result.stderr, "every object must be checked"


@pytest.mark.parametrize("variant", MATRIX)
def test_helm_lint_is_clean(variant):
    report = helm().lint(CHART, MATRIX[variant], strict=True, namespace=NAMESPACE,
                         kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]   # 2 warning, 3 error; 1 is info
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("variant", MATRIX)
def test_every_values_set_renders_and_validates_strictly(variant, tmp_path):
    objs = render(MATRIX[variant])
    assert find(objs, "Deployment")
    validate_strictly(objs, tmp_path)


def test_the_crd_check_refuses_what_the_api_server_would(tmp_path):
    """Strictness of the CRD validation itself: a misspelt field is an error, not a silently pruned key."""
    rule = find(render(MATRIX["monitoring"]), "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for_"] = "1m"
    with pytest.raises(AssertionError, match="Additional properties"):
        validate_strictly([rule], tmp_path)


def test_the_kustomize_base_is_the_chart_rendered_with_default_values():
    committed = in_install_order(documents(BASE.read_text()))
    assert committed == without_helm_bookkeeping(render()), "run `python -m tests.test_helm` to regenerate it"
    kustomization = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", "meshbot.yaml"]


# Each kustomize component stands for chart values: what it renders must be what Helm renders for them.
COMPONENT_VALUES = {
    "high-availability": {"replicas": 3, "database": {"postgres": True}},
    "http-mode": {"slack": {"mode": "http"}},
    "ca-secrets": {"caSecrets": {"enabled": True}},
    "namespaced-actions": {"actions": {"namespaces": ["istio-system", "prod"]}},
}


def comparable(objs: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Objects by identity, env as a mapping (a strategic merge appends where the template inserts)."""
    out = {}
    for obj in without_helm_bookkeeping(objs):
        obj.get("metadata", {}).get("labels", {}).pop("app.kubernetes.io/version", None)
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            container["env"] = {e["name"]: e for e in container.get("env", [])}
        out[obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]] = obj
    return out


@pytest.mark.parametrize("component", COMPONENT_VALUES)
def test_each_kustomize_component_renders_what_the_chart_renders_for_its_values(component, tmp_path):
    import shutil

    shutil.copytree(KUSTOMIZE_DIR, tmp_path / "base")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["../base"],
        "components": [f"../base/components/{component}"]}))
    result = run(tool("kubectl"), "kustomize", str(tmp_path / "overlay"))
    assert result.returncode == 0, result.stderr
    kustomized = comparable([o for o in documents(result.stdout) if o["kind"] != "Namespace"])
    charted = comparable(render(COMPONENT_VALUES[component]))
    assert kustomized.keys() == charted.keys()
    for key in charted:
        assert kustomized[key] == charted[key], key


# -- values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, refused", [
    ({"replicas": 3}, "database"),
    ({"slack": {"mode": "events"}}, "mode"),
    ({"slack": {"ingress": {"enabled": True}}}, "http"),
    ({"image": {"digest": "latest"}}, "digest"),
    ({"resources": {"requests": {"memory": "256Mi"}}, "replica": 1}, "replica"),
])
def test_the_values_schema_refuses_what_would_install_a_broken_meshbot(values, refused):
    engine = helm()
    with engine.Chart.load(CHART) as chart, pytest.raises(engine.HelmValuesError, match=refused):
        chart.validate_schema(values)


def test_the_templates_refuse_several_replicas_on_sqlite_even_without_the_schema(tmp_path):
    """`helm template --skip-schema-validation` still cannot put three replicas on one SQLite volume."""
    import shutil

    engine = helm()
    copy_without_schema = tmp_path / "meshbot"
    shutil.copytree(CHART, copy_without_schema)
    (copy_without_schema / "values.schema.json").unlink()
    with engine.Chart.load(copy_without_schema) as chart, \
            pytest.raises(engine.HelmRenderError, match="replicas > 1 needs database.postgres=true"):
        chart.render({"replicas": 2}, name=RELEASE, namespace=NAMESPACE)


def test_the_default_image_is_the_one_the_release_workflow_publishes():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert bot_container(render())["image"] == f"{values['image']['repository']}:{chart['appVersion']}"
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert values["image"]["repository"] in workflow


def test_a_digest_pins_the_image_whatever_the_tag():
    objs = render({"image": {"tag": "9.9.9", "digest": "sha256:" + "b" * 64}})
    assert bot_container(objs)["image"] == "ghcr.io/meshbot/meshbot@sha256:" + "b" * 64


# -- Slack: Socket Mode by default, HTTP with a route and a warning --------------------------------------

def test_socket_mode_reads_the_app_token_from_the_secret_and_opens_nothing_to_the_outside():
    objs = render()
    env = env_of(objs)
    assert env["SLACK_APP_TOKEN_FILE"]["value"] == "/var/run/secrets/meshbot/slack-app-token"
    assert "SLACK_SIGNING_SECRET_FILE" not in env, "Socket Mode verifies nothing: Slack's requests never arrive"
    assert not kinds(objs) & {"Ingress", "HTTPRoute"}
    assert find(objs, "Service")["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert "nothing needs to reach it" in notes()


def test_secret_names_and_keys_come_from_values():
    objs = render({"secret": {"name": "slack-creds", "keys": {"slackAppToken": "xapp", "slackBotToken": "xoxb"}}})
    env = env_of(objs)
    assert env["SLACK_APP_TOKEN_FILE"]["value"].endswith("/xapp") and env["SLACK_BOT_TOKEN_FILE"]["value"].endswith("/xoxb")
    volumes = {v["name"]: v for v in find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "slack-creds"
    assert not kinds(objs) & {"Secret"}, "the chart never carries a token"


def test_http_mode_exposes_only_slack_events_and_warns_against_the_istio_ingress_gateway():
    objs = render(MATRIX["http-with-ingress"])
    assert "SLACK_SIGNING_SECRET_FILE" in env_of(objs) and "SLACK_APP_TOKEN_FILE" not in env_of(objs)
    [rule] = find(objs, "Ingress")["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/slack/events", "Exact")]
    route = find(render(MATRIX["http-with-httproute"]), "HTTPRoute")
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "Exact", "value": "/slack/events"}}]
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    text = notes(MATRIX["http-with-ingress"])
    assert "do not route /slack/events through the Istio ingress gateway" in text
    values_text = (CHART / "values.yaml").read_text()
    assert "Do NOT route it through the Istio ingress gateway" in values_text


# -- replicas, PostgreSQL, resources ---------------------------------------------------------------------

def test_several_replicas_run_on_postgresql_from_the_secret_and_keep_all_but_one_through_a_drain():
    objs = render(MATRIX["high-availability"])
    deployment = find(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert find(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert "PersistentVolumeClaim" not in kinds(objs)
    env = env_of(objs)
    assert env["MESHBOT_DATABASE_URL_FILE"]["value"] == "/var/run/secrets/meshbot/database-url"
    assert "MESHBOT_DATABASE_URL" not in env


def test_high_availability_with_a_network_policy_can_reach_postgresql():
    """issue 28: egress allowed 53, 443, 6443 and 15014 only, so three replicas never reached their database."""
    policy = find(render(MATRIX["high-availability"]), "NetworkPolicy")
    [database] = [rule for rule in policy["spec"]["egress"] if {"port": 5432, "protocol": "TCP"} in rule["ports"]]
    assert database["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    sqlite = find(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert 5432 not in {p["port"] for rule in sqlite["spec"]["egress"] for p in rule["ports"]}


def test_resources_follow_the_benchmarked_memory_with_margin():
    """docs/benchmarks.md: 208 MB peak for 20 concurrent namespace diagnoses of 10,000 injected pods, 439 MB for a
    whole-mesh one, which stays under 60 % of the limit (issue 26)."""
    resources = bot_container(render())["resources"]
    assert resources["requests"]["memory"] == "256Mi" and resources["limits"]["memory"] == "768Mi"
    assert "113 MB" in (ROOT / "docs" / "benchmarks.md").read_text()
    assert "256Mi" in (ROOT / "docs" / "deployment.md").read_text()


def test_scheduling_values_reach_the_pod():
    pod = find(render(MATRIX["scheduling"]), "Deployment")["spec"]["template"]
    spec = pod["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert spec[key] == MATRIX["scheduling"][key], key
    assert pod["metadata"]["annotations"] == {"team": "sre"} and pod["metadata"]["labels"]["cost-center"] == "sre"


def test_openshift_leaves_the_user_and_groups_to_the_platform():
    """restricted-v2 assigns UID/GID from the namespace's range and refuses a fixed runAsUser outside it."""
    pod = find(render(MATRIX["openshift"]), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert not {"runAsUser", "runAsGroup"} & set(pod["containers"][0]["securityContext"])
    default = find(render(), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert default["runAsUser"] == 10001


# -- monitoring ------------------------------------------------------------------------------------------

def test_the_prometheus_rule_carries_the_shipped_rules_and_only_the_labels_asked_for():
    rule = find(render(MATRIX["monitoring"]), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = find(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert "release" not in plain["metadata"]["labels"], "no guessed operator release label"
    assert "ruleSelector" in notes({"prometheusRule": {"enabled": True}})


def test_the_service_monitor_scrapes_meshbots_metrics_as_job_meshbot():
    objs = render(MATRIX["monitoring"])
    monitor, service = find(objs, "ServiceMonitor"), find(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items() | \
        service["spec"]["selector"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "meshbot"} in endpoint["relabelings"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert 'up{job="meshbot"}' in RULES_FILE.read_text(), "MeshbotDown reads the job this sets"


def test_the_notes_carry_the_alertmanager_receiver_with_the_services_address_and_the_shipped_route():
    from tests.test_deploy import ALERTMANAGER_CONFIG

    text = notes(name="meshbot-ops", namespace="ops")
    assert "url: http://meshbot-ops.ops.svc:3000/alertmanager" in text
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    [route] = [r for r in config["route"]["routes"] if r["receiver"] == "meshbot"]
    [matcher] = route["matchers"]
    assert f"matchers: ['{matcher}']" in text, "NOTES.txt and deploy/alertmanager/alertmanager.yaml route alike"


# -- RBAC and actions ------------------------------------------------------------------------------------

def write_verbs(objs: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for o in objs if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]
            if verb not in ("get", "list")}


def test_with_actions_off_meshbot_has_no_write_permission_and_no_admission_policy():
    objs = render(MATRIX["actions-off"])
    assert write_verbs(objs) == {("", "pods/portforward", "create"), ("coordination.k8s.io", "leases", "create"),
                                 ("coordination.k8s.io", "leases", "patch")}
    assert not kinds(objs) & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_namespaced_actions_bind_the_write_role_per_namespace_only():
    objs = render(MATRIX["actions-namespaced"])
    assert not [o for o in objs if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "meshbot-actions"]
    bindings = [o for o in objs if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "meshbot-actions"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"istio-system", "prod"}
    assert find(objs, "ClusterRoleBinding", "meshbot-read")


def test_the_read_role_covers_every_kind_the_diagnostics_read():
    """commands.resources.kinds lists what a snapshot lists; a kind the role misses becomes a 403 finding."""
    from commands.resources.kinds import KINDS

    read = find(render(), "ClusterRole", "meshbot-read")
    granted = {(group, resource) for rule in read["rules"] if {"get", "list"} <= set(rule["verbs"])
               for group in rule["apiGroups"] for resource in rule["resources"]}
    # Secrets are read one by one by name (rbac-secrets.yaml), the Lease only in meshbot's namespace.
    listed = {(info.group, info.plural) for info in KINDS.values()} - {("", "secrets"), ("coordination.k8s.io", "leases")}
    assert listed - granted == set()


def test_the_read_role_covers_what_the_timeline_lists():
    """The timeline makes its own list calls (commands/telemetry): mesh config, ReplicaSets, Warning Events."""
    from commands.resources.kinds import kind_info
    from commands.telemetry.changes import MESH_KINDS, REPLICA_SETS

    read = find(render(), "ClusterRole", "meshbot-read")
    granted = {(group, resource) for rule in read["rules"] if {"get", "list"} <= set(rule["verbs"])
               for group in rule["apiGroups"] for resource in rule["resources"]}
    listed = {(kind_info(kind).group, kind_info(kind).plural) for kind in MESH_KINDS}
    listed |= {(REPLICA_SETS.group, REPLICA_SETS.plural), ("", "events"), ("", "namespaces"), ("", "pods"),
               ("", "configmaps")}
    assert listed - granted == set()


def test_secret_reads_are_by_name_and_opt_in():
    objs = render(MATRIX["secrets"])
    grants = {(o["metadata"]["namespace"], name) for o in objs if o["kind"] == "Role" for rule in o["rules"]
              if "secrets" in rule["resources"] for name in rule["resourceNames"]}
    assert grants == {("istio-system", "istio-ca-secret"), ("istio-system", "cacerts"),
                      ("istio-ingress", "shop-example-com-tls")}
    assert env_of(objs)["MESHBOT_READ_CA_SECRETS"]["value"] == "true"
    assert not [o for o in render() if o["kind"] == "Role" and any("secrets" in r["resources"] for r in o["rules"])]


def test_an_install_under_another_name_and_namespace_binds_and_matches_its_own_service_account():
    objs = render(name="meshbot-ops", namespace="ops")
    subject = {"kind": "ServiceAccount", "name": "meshbot-ops", "namespace": "ops"}
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [subject], binding["metadata"]["name"]
    for policy in (o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"):
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:ops:meshbot-ops'"
    assert find(objs, "Role", "meshbot-ops-leader-election")["metadata"]["namespace"] == "ops"
    assert env_of(objs)["MESHBOT_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_a_renamed_install_into_another_namespace_keeps_every_admission_policy_in_force():
    """issue 28: the policies matched system:serviceaccount:meshbot:meshbot literally, so an install named
    meshbot-ops in namespace ops (its token is system:serviceaccount:ops:meshbot-ops) wrote unchecked."""
    from tests.test_deploy import deployment, destination_rule, namespace, patched, peer_authentication, review

    objs = render(name="meshbot-ops", namespace="ops")
    ops_bot = "system:serviceaccount:ops:meshbot-ops"
    image = (("spec", "template", "spec", "containers"), [{"name": "payment", "image": "evil.example.com/miner:1"}])
    writes = [
        ("apps", "deployments", patched(deployment(), image), deployment()),
        ("", "namespaces", patched(namespace(), (("metadata", "labels", "pod-security.kubernetes.io/enforce"),
                                                 "privileged")), namespace()),
        ("security.istio.io", "peerauthentications", peer_authentication("default", {"mtls": {"mode": "DISABLE"}}),
         peer_authentication("default", {"mtls": {"mode": "STRICT"}})),
        ("networking.istio.io", "destinationrules", patched(destination_rule(), (("spec", "host"), "other")),
         destination_rule()),
    ]
    for group, resource, new, old in writes:
        assert review(group, resource, "UPDATE", new, old, username=ops_bot, policies=objs) != [], resource
        # The default install's identity is nobody special to this release.
        assert review(group, resource, "UPDATE", new, old, policies=objs) == [], resource


def test_the_root_namespace_the_policies_protect_follows_values():
    from commands.actions.planners import NAMESPACE_INJECTION
    from tests.test_deploy import MESHBOT_USER, namespace, patched, review

    objs = render({"istio": {"rootNamespace": "mesh-root"}})
    root = namespace()
    root["metadata"]["name"] = "mesh-root"
    denied = review("", "namespaces", "UPDATE", patched(root, (NAMESPACE_INJECTION, "disabled")), root,
                    username=MESHBOT_USER, policies=objs)
    assert len(denied) == 1 and "mesh-root" in denied[0] and "kube-system" in denied[0], denied


def test_two_installs_share_no_cluster_scoped_name():
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

    def names(objs):
        return {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] in cluster_scoped}

    assert not names(render()) & names(render(name="meshbot-ops", namespace="ops"))


if __name__ == "__main__":
    write_kustomize_base()
