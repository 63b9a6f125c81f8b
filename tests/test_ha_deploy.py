"""deploy/kubernetes/components/high-availability: three replicas on PostgreSQL; the default stays one on SQLite.

Rendered here by the real ``kubectl kustomize``; tests/test_deploy.py renders the same variant for
kubernetes-validate, checkov and its RBAC and lock-down checks."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.test_deploy import KUSTOMIZE_DIR, container, find, load, objects, run, tool

HA = "with-high-availability"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """``base/`` and ``with-high-availability/`` (an overlay adding the component), as kubectl renders them."""
    tree, out = tmp_path_factory.mktemp("ha-overlay"), tmp_path_factory.mktemp("ha-rendered")
    shutil.copytree(KUSTOMIZE_DIR, tree / "base")
    (tree / HA).mkdir()
    (tree / HA / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["../base"],
        "components": ["../base/components/high-availability"]}))
    for variant in ("base", HA):
        result = run(tool("kubectl"), "kustomize", str(tree / variant))
        assert result.returncode == 0, result.stderr
        (out / variant).mkdir()
        (out / variant / "meshbot.yaml").write_text(result.stdout)
    return out


def deployment(rendered_dir, variant: str) -> dict:
    return find(objects(rendered_dir, variant), "Deployment", "meshbot")


def test_the_default_stays_one_replica_on_sqlite_with_its_volume(rendered):
    default = deployment(rendered, "base")
    assert default["spec"]["replicas"] == 1 and default["spec"]["strategy"]["type"] == "Recreate"
    assert [o for o in objects(rendered) if o["kind"] == "PersistentVolumeClaim"]
    assert "MESHBOT_DATABASE_URL_FILE" not in {e["name"] for e in container(objects(rendered))["env"]}


def test_the_ha_variant_runs_three_rolling_replicas_spread_over_nodes(rendered):
    spec = deployment(rendered, HA)["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    [term] = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_ha_variant_keeps_two_of_three_up_through_a_drain(rendered):
    budget = find(objects(rendered, HA), "PodDisruptionBudget", "meshbot")
    assert budget["spec"]["minAvailable"] == 2
    assert budget["spec"]["selector"]["matchLabels"] == deployment(rendered, HA)["spec"]["selector"]["matchLabels"]


def test_the_ha_variant_has_no_volume_claim_and_reads_the_database_from_the_secret(rendered):
    objs = objects(rendered, HA)
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in deployment(rendered, HA)["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"] and "persistentVolumeClaim" not in volumes["data"]
    env = {e["name"]: e.get("value") for e in container(objs)["env"]}
    template = load(KUSTOMIZE_DIR / "secret.template.yaml")["stringData"]
    for setting, key in (("MESHBOT_DATABASE_URL_FILE", "database-url"),
                         ("MESHBOT_DATABASE_PASSWORD_FILE", "database-password"),
                         ("MESHBOT_AUDIT_KEY_FILE", "audit-key")):
        assert env[setting] == f"/var/run/secrets/meshbot/{key}" and key in template
    assert "MESHBOT_DATABASE_URL" not in env, "the URL comes from the Secret, not the pod spec"
