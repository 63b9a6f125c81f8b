""".github/workflows/release.yml: a tag publishes the multi-arch image and the chart where the chart points.

No GitHub runner here, so the workflow is checked as data: its trigger, permissions, the platforms it
builds, and that the image and chart it pushes are the ones deploy/helm/meshbot and the docs name.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml

from tests.test_deploy import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
CHART = ROOT / "deploy" / "helm" / "meshbot"


def workflow() -> dict[str, Any]:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    loaded = yaml.safe_load(WORKFLOW.read_text())
    loaded["on"] = loaded.pop(True)
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    return workflow()["jobs"][job]["steps"]


def uses(job: str) -> list[str]:
    return [step["uses"].split("@")[0] for step in steps(job) if "uses" in step]


def test_it_runs_on_version_tags_only():
    assert workflow()["on"] == {"push": {"tags": ["v*.*.*"]}}


def test_only_the_publishing_jobs_may_write_packages():
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    for job in ("image", "chart"):
        assert flow["jobs"][job]["permissions"] == {"contents": "read", "packages": "write"}
    assert "permissions" not in flow["jobs"]["versions"]


def test_every_action_is_pinned_to_a_major_version():
    for job in workflow()["jobs"]:
        for step in steps(job):
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]


def test_the_image_is_built_for_amd64_and_arm64_and_pushed_to_the_charts_default_repository():
    assert uses("image") == ["actions/checkout", "docker/setup-qemu-action", "docker/setup-buildx-action",
                             "docker/login-action", "docker/build-push-action"]
    build = steps("image")[-1]["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert workflow()["env"]["IMAGE"] == values["image"]["repository"]
    assert "${{ env.IMAGE }}:${{ needs.versions.outputs.version }}" in build["tags"]


def test_the_chart_is_pushed_after_the_image_at_the_tags_version():
    flow = workflow()
    assert flow["jobs"]["chart"]["needs"] == ["versions", "image"], "never a chart whose image is missing"
    [script] = [step["run"] for step in steps("chart") if "run" in step]
    assert 'helm lint --strict deploy/helm/meshbot' in script
    assert '--version "$VERSION" --app-version "$VERSION"' in script
    assert 'helm push "dist/meshbot-$VERSION.tgz" "$CHART_REPOSITORY"' in script
    assert flow["env"]["CHART_REPOSITORY"] == "oci://ghcr.io/meshbot/charts"


def test_a_tag_that_disagrees_with_the_versions_in_the_tree_stops_the_release():
    [check] = [step for step in steps("versions") if step.get("id") == "check"]
    for source in ("pyproject.toml", "Chart.yaml version", "Chart.yaml appVersion", "sys.exit"):
        assert source in check["run"], source
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == project, "the next tag must be able to pass this check"


def test_the_docs_install_the_chart_from_where_the_workflow_pushes_it():
    for page in ("README.md", "docs/deployment.md"):
        assert "oci://ghcr.io/meshbot/charts/meshbot" in (ROOT / page).read_text(), page
