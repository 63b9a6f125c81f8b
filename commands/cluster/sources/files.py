"""Snapshot from YAML/JSON files and directories — the offline mode of ``istioctl analyze -f``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from commands.certificates.secrets import public_secret
from commands.cluster.snapshot import DEFAULT_ISTIO_NAMESPACE, Resource, Snapshot
from commands.cluster.sources.collector import collector_paused
from commands.cluster.sources.yaml_fast import FastSafeLoader, construct
from commands.errors import InputError
from commands.resources.kinds import ISTIO_GROUPS, KNOWN_ISTIO_KINDS

MAX_FILE_BYTES = 64 * 1024 * 1024
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class FileSource:
    """Reads every object in the given files/directories once, then serves snapshots."""

    def __init__(self, paths: Sequence[str | os.PathLike], *, default_namespace: str = "default",
                 istio_namespace: str = DEFAULT_ISTIO_NAMESPACE, mesh_config: str | os.PathLike | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES):
        self.paths = [Path(p) for p in paths]
        self.default_namespace = default_namespace
        self.istio_namespace = istio_namespace
        self.max_file_bytes = max_file_bytes
        with collector_paused():
            self.resources = list(self._load_all())
        self.mesh_config = load_mesh_config(mesh_config) if mesh_config else _mesh_config_from(
            self.resources, istio_namespace)

    def snapshot(self, kinds: Iterable[str] | None = None) -> FileSnapshot:
        wanted = set(kinds) if kinds is not None else None
        selected = [r for r in self.resources if wanted is None or r.kind in wanted]
        assumed = [r for r in offline_defaults(self.istio_namespace, self.mesh_config)
                   if wanted is None or r.kind in wanted]
        return FileSnapshot(selected, istio_namespace=self.istio_namespace, mesh_config=self.mesh_config,
                            assumed=tuple(assumed))

    def _load_all(self) -> Iterator[Resource]:
        for path in expand_paths(self.paths):
            size = path.stat().st_size
            if size > self.max_file_bytes:
                raise InputError(f"file is {size / 2**20:.1f} MiB, larger than the "
                                 f"{self.max_file_bytes / 2**20:.0f} MiB limit", path=str(path))
            name = str(path)
            documents = _json_documents(path) if name.endswith(".json") else _documents(_read_text(path), name)
            yield from _resources(documents, name, self.default_namespace)


@dataclass
class FileSnapshot(Snapshot):
    """A snapshot read from files, plus the objects a files-only ``istioctl analyze`` assumes Istio provides.

    The assumed objects are kept apart: only the analyzers see them (``--use-kube=false``
    semantics); status and the other checks must not report on a pod that does not exist.
    """

    assumed: tuple[Resource, ...] = ()


# istio/istio pkg/config/analysis/local/defaults.go (added by IstiodAnalyzer.AddDefaultResources when
# istioctl analyze runs without a cluster): a stand-in ingress gateway Pod and Service, so a Gateway
# selecting ``istio: ingressgateway`` is not reported as selecting nothing (IST0101) and the analyzers
# behind it (credentials IST0161, ports IST0162) still run.
DEFAULT_INGRESS_SERVICE = "istio-ingressgateway"  # MeshConfig.ingressService default (pkg/config/mesh/mesh.go)
DEFAULT_INGRESS_PORTS = (("http2", 80), ("https", 443), ("tcp", 31400), ("tls", 15443))
OFFLINE_DEFAULTS_SOURCE = "internal-ingress"  # the name istioctl gives this reader source


def offline_defaults(istio_namespace: str, mesh_config: Mapping[str, Any]) -> list[Resource]:
    """The default ingress gateway Pod and Service; none when ``ingressControllerMode: OFF``."""
    if str(mesh_config.get("ingressControllerMode") or "").upper() == "OFF":
        return []
    service = str(mesh_config.get("ingressService") or DEFAULT_INGRESS_SERVICE)
    selector = {"istio": "ingressgateway"}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{service}-dummypod", "namespace": istio_namespace, "labels": dict(selector)},
           "spec": {"containers": [{"name": "istio-proxy"}]}}
    ports = [{"name": name, "port": port, "protocol": "TCP", "targetPort": port}
             for name, port in DEFAULT_INGRESS_PORTS]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": istio_namespace},
           "spec": {"ports": ports, "selector": dict(selector)}}
    return [Resource.from_object(obj, source=OFFLINE_DEFAULTS_SOURCE) for obj in (pod, svc)]


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; directories recursively (``.yaml``/``.yml``/``.json`` only), in a stable order."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.is_file() and found.suffix.lower() in CONFIG_SUFFIXES:
                    yield found
        elif path.is_file():
            yield path
        else:
            raise InputError("no such file or directory", path=str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path=str(path)) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=str(path)) from None
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path=str(path)) from None


def parse_objects(text: str, path: str, *, default_namespace: str = "default") -> Iterator[Resource]:
    """Every Kubernetes object in one file: multi-document YAML, JSON, and ``kind: List``."""
    return _resources(_documents(text, path), path, default_namespace)


def _resources(documents: Iterable[tuple[Any, int]], path: str, default_namespace: str) -> Iterator[Resource]:
    for obj, line in documents:
        yield from _expand_list(obj, line, path, default_namespace)


def _json_documents(path: Path) -> list[tuple[Any, int]]:
    """A JSON file's one document, decoded by msgspec: the same values as ``json.loads``, in 60 % of its time.

    msgspec refuses a few inputs the standard library takes (NaN and Infinity, numbers beyond a double, a byte-order
    mark, lone surrogates) and every invalid file; those go through ``json`` exactly as before, so they decode to the
    same values or fail with the same message and line.
    """
    try:
        return [(msgspec.json.decode(_read_bytes(path)), 1)]
    except msgspec.DecodeError:
        return list(_documents(_read_text(path), str(path)))


def _documents(text: str, path: str) -> Iterator[tuple[Any, int]]:
    if path.endswith(".json"):
        try:
            yield json.loads(text), 1
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
        return
    loader = FastSafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield _ListWithLines.construct(loader, node), node.start_mark.line + 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise InputError(f"invalid YAML: {reason}", path=path, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", path=path) from None
    finally:
        loader.dispose()


class _ListWithLines:
    """Keeps the line of each ``items[]`` entry of a ``kind: List`` document."""

    @staticmethod
    def construct(loader: Any, node: yaml.Node) -> Any:
        data = construct(loader, node)
        if isinstance(data, dict) and isinstance(data.get("items"), list) and isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == "items" and isinstance(value_node, yaml.SequenceNode):
                    lines = [item.start_mark.line + 1 for item in value_node.value]
                    return _Listed(data, lines)
        return data


class _Listed(dict):
    """A List document that remembers its items' line numbers."""

    def __init__(self, data: dict, item_lines: list[int]):
        super().__init__(data)
        self.item_lines = item_lines


def _expand_list(obj: Any, line: int, path: str, default_namespace: str) -> Iterator[Resource]:
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise InputError(f"expected a Kubernetes object (a mapping), found a {type(obj).__name__}",
                         path=path, line=line)
    if not _is_list(obj):
        yield _resource(obj, f"{path}:{line}", path, line, default_namespace)
        return
    items = obj["items"]
    item_lines = getattr(obj, "item_lines", None) or [line] * len(items)
    source_line, source = None, ""
    for item, item_line in zip(items, item_lines):
        if type(item) is not dict or _is_list(item):
            yield from _expand_list(item, item_line, path, default_namespace)
            continue
        if item_line != source_line:  # a JSON List's items all share line 1: one source string, not one per item
            source_line, source = item_line, f"{path}:{item_line}"
        yield _resource(item, source, path, item_line, default_namespace)


def _is_list(obj: dict) -> bool:
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list)


def _resource(obj: dict, source: str, path: str, line: int, default_namespace: str) -> Resource:
    _validate_object(obj, path, line)
    if obj["kind"] == "Secret":
        obj = public_secret(obj)
    return Resource.from_object(obj, source=source, default_namespace=default_namespace)


def _validate_object(obj: dict, path: str, line: int) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise InputError("object has no apiVersion", path=path, line=line)
    if not isinstance(kind, str) or not kind:
        raise InputError("object has no kind", path=path, line=line)
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise InputError(f"{kind} has no metadata.name", path=path, line=line)
    group, slash, _ = api_version.partition("/")
    if slash and group in ISTIO_GROUPS and kind not in KNOWN_ISTIO_KINDS:
        raise InputError(f"unknown kind {kind!r} for apiVersion {api_version}", path=path, line=line)
    for section in ("spec", "data", "status"):
        value = obj.get(section)
        if value is not None and not isinstance(value, dict):
            raise InputError(f"{kind} {meta['name']}: {section} must be a mapping", path=path, line=line)


def load_mesh_config(path: str | os.PathLike) -> dict[str, Any]:
    """A MeshConfig YAML file (``istioctl analyze --meshConfigFile``)."""
    text = _read_text(Path(path))
    try:
        data = yaml.load(text, Loader=FastSafeLoader) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise InputError(f"invalid YAML: {exc.problem}", path=str(path), line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("mesh config must be a mapping", path=str(path))
    return data


def _mesh_config_from(resources: Sequence[Resource], istio_namespace: str) -> dict[str, Any]:
    """The ``mesh`` key of the ``istio`` ConfigMap, when the files include it."""
    for resource in resources:
        if resource.kind == "ConfigMap" and resource.name == "istio" and resource.namespace == istio_namespace:
            text = (resource.body.get("data") or {}).get("mesh")
            if text:
                try:
                    data = yaml.load(text, Loader=FastSafeLoader)
                except yaml.YAMLError as exc:
                    raise InputError(f"istio ConfigMap: mesh config is not valid YAML: {exc}",
                                     path=resource.source) from None
                return data if isinstance(data, dict) else {}
    return {}
