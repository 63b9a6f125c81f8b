"""The bundled broken-mesh scenario: files that stand in for a cluster, istiod and one Envoy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver, parse_envoy_admin_option
from commands.cluster.sources.files import FileSource
from commands.errors import InputError
from commands.times import parse_rfc3339

DEFAULT_SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "scenario.yaml"


@dataclass(frozen=True)
class Scenario:
    title: str
    story: str
    now: datetime
    cluster_dir: Path
    istiod_dir: Path | None
    envoy_dirs: dict[str, Path] = field(default_factory=dict)

    def source(self) -> FileSource:
        return FileSource([self.cluster_dir])

    def endpoints(self) -> EndpointResolver:
        admin = dict(parse_envoy_admin_option(f"{pod}={path}") for pod, path in self.envoy_dirs.items())
        return EndpointResolver(http=http_endpoint, envoy_admin_urls=admin,
                                istiod_urls=[str(self.istiod_dir)] if self.istiod_dir else [])


def _short(path: Path) -> Path:
    """Relative to the working directory when inside it: ``file:line`` references stay readable."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def load_scenario(path: str | Path | None = None) -> Scenario:
    path = _short(Path(path) if path else DEFAULT_SCENARIO)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path=str(path)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", path=str(path)) from None
    if not isinstance(data, dict) or "cluster" not in data:
        raise InputError("a scenario needs at least `cluster: <directory>`", path=str(path))
    base = path.parent
    try:
        now = parse_rfc3339(str(data.get("now"))) if data.get("now") else datetime.now(timezone.utc)
    except ValueError:
        raise InputError(f"now: {data.get('now')!r} is not an ISO 8601 time", path=str(path)) from None
    return Scenario(
        title=str(data.get("title", path.stem)),
        story=str(data.get("story", "")),
        now=now if now.tzinfo else now.replace(tzinfo=timezone.utc),
        cluster_dir=base / data["cluster"],
        istiod_dir=base / data["istiod"] if data.get("istiod") else None,
        envoy_dirs={pod: base / rel for pod, rel in (data.get("envoy") or {}).items()},
    )
