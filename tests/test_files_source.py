"""Reading objects from YAML/JSON files: the offline source behind `meshbot analyze -f`."""

from __future__ import annotations

import base64
import json
import math

import pytest

from commands.cluster.sources.files import FileSource
from commands.errors import InputError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_multi_document_file_keeps_each_objects_line(tmp_path):
    path = write(tmp_path, "a.yaml", "# comment\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n"
                                     "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: prod}\n")
    resources = FileSource([path]).resources
    assert [(r.qualified_name, r.source) for r in resources] == [
        ("default/a", f"{path}:2"), ("prod/b", f"{path}:6")]


def test_list_kind_expands_items_with_their_own_lines(tmp_path):
    path = write(tmp_path, "list.yaml", "apiVersion: v1\nkind: List\nitems:\n"
                                        "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: prod}\n"
                                        "- apiVersion: v1\n  kind: Service\n  metadata: {name: s, namespace: prod}\n")
    resources = FileSource([path]).resources
    assert [(r.origin, r.source) for r in resources] == [
        ("Namespace prod", f"{path}:4"), ("Service prod/s", f"{path}:7")]


def test_json_files_and_typed_lists_are_read(tmp_path):
    path = write(tmp_path, "pods.json", json.dumps({"apiVersion": "v1", "kind": "PodList", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"}}]}))
    assert [r.origin for r in FileSource([path]).resources] == ["Pod x/p"]


def test_json_numbers_keep_the_values_the_json_module_gives(tmp_path):
    # The fast decoder (msgspec) refuses NaN and numbers beyond a double; such a file still reads as json.loads reads it.
    path = write(tmp_path, "cm.json", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": '
                                      '{"big": 123456789012345678901234567890, "half": 0.5, "nan": NaN, "inf": 1e400}}')
    [config_map] = FileSource([path]).resources
    data = config_map.body["data"]
    assert (data["big"], data["half"], data["inf"]) == (123456789012345678901234567890, 0.5, math.inf)
    assert math.isnan(data["nan"])


def test_large_integers_are_exact_when_the_fast_decoder_reads_the_file(tmp_path):
    path = write(tmp_path, "cm.json", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, '
                                      '"data": {"big": 18446744073709551616, "negative": -9223372036854775809}}')
    [config_map] = FileSource([path]).resources
    assert config_map.body["data"] == {"big": 2**64, "negative": -(2**63) - 1}


def test_invalid_json_is_an_input_error_with_the_json_modules_message_and_line(tmp_path):
    path = write(tmp_path, "bad.json", '{"apiVersion": "v1",\n "kind": "Pod",\n}')
    with pytest.raises(InputError) as caught:
        FileSource([path])
    assert caught.value.reason == "invalid JSON: Expecting property name enclosed in double quotes"
    assert caught.value.location == f"{path}:3"


def test_directories_are_read_recursively_and_only_config_files(tmp_path):
    write(tmp_path, "a/b/svc.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: deep}\n")
    write(tmp_path, "a/notes.txt", "this: is not config\n")
    write(tmp_path, "top.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: top}\n")
    assert sorted(r.name for r in FileSource([tmp_path]).resources) == ["deep", "top"]


def test_empty_documents_are_skipped(tmp_path):
    path = write(tmp_path, "e.yaml", "---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n")
    assert len(FileSource([path]).resources) == 1


@pytest.mark.parametrize("text, reason, line", [
    ("apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n", "invalid YAML", 4),
    ("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n", "Service has no metadata.name", 1),
    ("kind: Service\nmetadata: {name: a}\n", "object has no apiVersion", 1),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n- just\n- a list\n", "expected a Kubernetes object", 5),
    ("apiVersion: networking.istio.io/v1\nkind: VirtualServis\nmetadata: {name: a}\n", "unknown kind 'VirtualServis'", 1),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: [1, 2]\n", "spec must be a mapping", 1),
])
def test_bad_input_is_an_input_error_with_file_and_line(tmp_path, text, reason, line):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(InputError) as caught:
        FileSource([path])
    assert reason in caught.value.reason
    assert caught.value.location == f"{path}:{line}"


def test_kinds_outside_istio_are_carried_without_complaint(tmp_path):
    path = write(tmp_path, "crd.yaml", "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\n")
    assert [r.kind for r in FileSource([path]).resources] == ["Certificate"]


def test_file_larger_than_the_limit_is_refused_before_parsing(tmp_path):
    path = write(tmp_path, "huge.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n" + "#" * 4096)
    with pytest.raises(InputError, match="larger than"):
        FileSource([path], max_file_bytes=1024)


def test_missing_path_and_binary_file_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        FileSource([tmp_path / "nope.yaml"])
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        FileSource([binary])


def test_secret_private_keys_never_enter_the_snapshot(tmp_path):
    key = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n").decode()
    path = write(tmp_path, "s.yaml", f"""apiVersion: v1
kind: Secret
metadata:
  name: gw
  namespace: istio-system
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{{"data": {{"tls.key": "{key}"}}}}'
data:
  tls.crt: Y2VydA==
  tls.key: {key}
  ca-key.pem: {key}
""")
    [secret] = FileSource([path]).resources
    assert secret.body["data"] == {"tls.crt": "Y2VydA=="}
    assert key not in json.dumps(secret.body)


def test_mesh_config_comes_from_the_istio_configmap_in_files(tmp_path):
    path = write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                                      "data:\n  mesh: |\n    rootNamespace: istio-config\n")
    assert FileSource([path]).mesh_config == {"rootNamespace": "istio-config"}


def test_invalid_mesh_config_file_names_file_and_line(tmp_path):
    mesh = write(tmp_path, "mesh.yaml", "rootNamespace: [\n")
    with pytest.raises(InputError) as caught:
        FileSource([], mesh_config=mesh)
    assert caught.value.path == str(mesh) and caught.value.line == 2
