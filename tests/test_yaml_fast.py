"""The fast YAML loader gives exactly what PyYAML's CSafeLoader gives, refusals included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from commands.cluster.sources.yaml_fast import FastSafeLoader, construct

ROOT = Path(__file__).resolve().parent.parent
SAFE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def fast_load_all(text: str) -> list:
    loader = FastSafeLoader(text)
    try:
        documents = []
        while loader.check_node():
            documents.append(construct(loader, loader.get_node()))
        return documents
    finally:
        loader.dispose()


def safe_load_all(text: str) -> list:
    return list(yaml.load_all(text, Loader=SAFE))


SCALARS = """\
plain: payment-service
quoted_number: "8080"
number: 8080
octal: 0o17
hex: 0x1F
float: 1.5
exp: 6.02e+23
infinity: .inf
bools: [true, false, yes, no, on, off, True]
nulls: [~, null, ]
empty:
timestamp: 2024-05-14T09:12:00Z
date: 2024-05-14
binary: !!binary aGVsbG8=
forced_string: !!str 123
version: 1.22.3
wildcard: "*.example.com"
colon_value: "a: b"
multi: |
  line one
  line two
folded: >
  folded
  text
"""

STRUCTURES = """\
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: prod, labels: {app: reviews}}
spec:
  hosts: [reviews.prod.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
---
# an empty document
---
[1, [2, [3, []]], {}]
---
duplicate: first
duplicate: last
---
1: one
2.5: two and a half
null: nothing
true: yes
"""


@pytest.mark.parametrize("text", [SCALARS, STRUCTURES], ids=["scalars", "structures"])
def test_documents_load_equal_to_csafeloader(text):
    assert fast_load_all(text) == safe_load_all(text)


def test_types_match_not_only_values():
    fast, safe = fast_load_all(SCALARS)[0], safe_load_all(SCALARS)[0]
    assert {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in safe.items()}
    assert fast["quoted_number"] == "8080" and fast["number"] == 8080


def test_an_alias_is_the_same_object_as_its_anchor():
    text = "base: &labels {app: reviews}\ncopy: *labels\nlist: &l [1]\nagain: *l\n"
    [data] = fast_load_all(text)
    assert data == safe_load_all(text)[0]
    assert data["copy"] is data["base"] and data["again"] is data["list"]


def test_merge_keys_follow_pyyaml():
    text = "defaults: &d {timeout: 5s, retries: 3}\nroute:\n  <<: *d\n  retries: 5\n"
    [data] = fast_load_all(text)
    assert data == safe_load_all(text)[0]
    assert data["route"] == {"timeout": "5s", "retries": 5}


def test_a_recursive_alias_builds_the_same_cycle():
    [data] = fast_load_all("&a [1, *a]\n")
    assert data[1] is data


@pytest.mark.parametrize("text, problem", [
    ("!Ref something\n", "could not determine a constructor for the tag '!Ref'"),
    ("? [a, b]\n: value\n", "found unhashable key"),
    ("!!python/object:os.system {}\n", "could not determine a constructor"),
])
def test_what_csafeloader_refuses_is_refused_the_same_way(text, problem):
    with pytest.raises(yaml.constructor.ConstructorError) as safe_error:
        safe_load_all(text)
    with pytest.raises(yaml.constructor.ConstructorError) as fast_error:
        fast_load_all(text)
    assert problem in str(fast_error.value)
    assert str(fast_error.value) == str(safe_error.value)


def test_every_yaml_file_in_the_project_loads_equal_to_csafeloader():
    # A Helm chart's templates are Go templates that render to YAML, not YAML themselves.
    files = [p for folder in ("examples", "playbooks", "deploy", "tests/data")
             for p in sorted((ROOT / folder).rglob("*.y*ml"))
             if not (p.parent.name == "templates" and (p.parent.parent / "Chart.yaml").exists())]
    assert len(files) > 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert fast_load_all(text) == safe_load_all(text), path
