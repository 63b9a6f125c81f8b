"""Loading playbooks: the YAML files in ``playbooks/`` checked and turned into a ``PlaybookSet``.

Each file is checked twice: against ``PLAYBOOK_SCHEMA`` (structure and types, with
``jsonschema``), then for meaning (known checks and finding codes, regexes that
compile, actions meshbot knows).  Every refusal is a ``PlaybookError`` that names the
``file:line`` of the offending YAML node.  The format is documented in docs/incidents.md
(*Playbooks*).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from bot.incidents.playbook_schema import check_names, validator
from bot.incidents.playbooks import (
    FROM_FINDING,
    DiagnosticStep,
    Matcher,
    Playbook,
    PlaybookError,
    PlaybookSet,
    RemediationRule,
    is_namespace,
    meshbot_action,
    template_placeholders,
)
from commands.actions.targets import USAGE
from commands.checks.registry import CheckRegistry
from commands.cluster.sources.yaml_fast import SAFE_LOADER
from commands.codes import ALL_CODES
from commands.validation import NAMESPACE_RULE

log = logging.getLogger(__name__)

DEFAULT_PLAYBOOKS_DIR = Path(__file__).resolve().parents[2] / "playbooks"
PLAYBOOK_SUFFIXES = (".yaml", ".yml")

# What each placeholder becomes when a template is checked at load.  The pod stand-in
# has a dot (valid for an object name, not for a namespace), so ``{pod}`` in a
# namespace slot is refused at load rather than at 3 AM.
_STAND_INS = {"namespace": "example-namespace", "pod": "example.pod"}


# -- loading ------------------------------------------------------------------------------

def load_playbooks(directory: str | Path, checks: CheckRegistry | None = None) -> PlaybookSet:
    """Every ``*.yaml``/``*.yml`` file in ``directory`` (one playbook each), validated as a set.

    ``checks`` names the checks a step may run (default: ``commands.catalog.default_checks()``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PlaybookError("no such directory", path=str(directory))
    files = sorted(p for p in directory.iterdir()
                   if p.suffix in PLAYBOOK_SUFFIXES and p.is_file() and not p.name.startswith("."))
    if not files:
        raise PlaybookError(f"no playbook files ({', '.join('*' + s for s in PLAYBOOK_SUFFIXES)}) in this directory",
                            path=str(directory))
    loaded = [load_playbook_file(path, checks) for path in files]
    _check_set(loaded, directory)
    return PlaybookSet(tuple(item.playbook for item in loaded))


@dataclass(frozen=True)
class LoadedPlaybook:
    playbook: Playbook
    path: str
    lines: Mapping[str, int]
    """Line of each top-level field, for errors that only the whole set reveals."""

    def error(self, key: str, reason: str) -> PlaybookError:
        return PlaybookError(reason, path=self.path, line=self.lines.get(key) or self.lines.get(""))


def load_playbook_file(path: str | Path, checks: CheckRegistry | None = None) -> LoadedPlaybook:
    """One playbook file, checked on its own; PlaybookError names the offending line."""
    where = str(path)
    document = _Document(where, _compose(where, _read(where)))
    data = document.data
    _check_schema(document, data, validator(check_names(checks)))
    return LoadedPlaybook(_build_playbook(document, data), where, document.top_level_lines())


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlaybookError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except OSError as exc:
        raise PlaybookError(exc.strerror or str(exc), path=path) from None


_LOADER = SAFE_LOADER
"""libyaml's loader when PyYAML was built with it: composing the 14 playbooks at every start took 1.3 s with the
pure-Python one on a loaded machine and 0.08 s with libyaml; both keep the marks the line numbers come from."""


def _compose(path: str, text: str) -> yaml.Node:
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(part for part in (exc.context, exc.problem) if part)
        raise PlaybookError(f"invalid YAML: {reason}", path=path, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"invalid YAML: {exc}", path=path) from None
    finally:
        loader.dispose()
    if node is None:
        raise PlaybookError("empty file; a playbook is a mapping with name, description and diagnostics",
                            path=path, line=1)
    _refuse_duplicate_keys(path, node)
    return node


def _refuse_duplicate_keys(path: str, node: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys silently; a playbook author meant one of them."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise PlaybookError(f"duplicate key {key.value!r}", path=path, line=key.start_mark.line + 1)
                seen.add(key.value)
            _refuse_duplicate_keys(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(path, item)


class _Document:
    """The composed YAML of one file: its data, and the line of any node by path."""

    def __init__(self, path: str, root: yaml.Node):
        self.path = path
        self.root = root
        constructor = yaml.SafeLoader("")
        try:
            self.data = constructor.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise PlaybookError(f"invalid YAML: {exc.problem}", path=path,
                                line=mark.line + 1 if mark else None) from None
        finally:
            constructor.dispose()

    def node_at(self, path: Sequence[str | int]) -> yaml.Node:
        """The deepest node along ``path`` (a jsonschema error path: keys and list indexes)."""
        node = self.root
        for step in path:
            child = _child(node, step)
            if child is None:
                break
            node = child
        return node

    def key_node(self, path: Sequence[str | int], key: str) -> yaml.Node:
        """The key node itself (``namespce:``), so an unknown field points at its own line."""
        mapping = self.node_at(path)
        if isinstance(mapping, yaml.MappingNode):
            for key_node, _ in mapping.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    return key_node
        return mapping

    def error(self, path: Sequence[str | int], reason: str, *, key: str | None = None) -> PlaybookError:
        node = self.key_node(path, key) if key is not None else self.node_at(path)
        where = _dotted(path)
        return PlaybookError(f"{where}: {reason}" if where else reason, path=self.path,
                             line=node.start_mark.line + 1)

    def top_level_lines(self) -> dict[str, int]:
        lines = {"": self.root.start_mark.line + 1}
        if isinstance(self.root, yaml.MappingNode):
            for key, _ in self.root.value:
                lines[str(key.value)] = key.start_mark.line + 1
        return lines


def _child(node: yaml.Node, step: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        return node.value[step]
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return value
    return None


def _dotted(path: Sequence[str | int]) -> str:
    """``["diagnostics", 0, "check"]`` -> ``diagnostics[0].check``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


# -- structure (jsonschema) ---------------------------------------------------------------

def _check_schema(document: _Document, data: Any, validator: jsonschema.Draft202012Validator) -> None:
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    # Report the error nearest the top of the file, as a person reads it.
    first = min(errors, key=lambda e: (document.node_at(list(e.absolute_path)).start_mark.index,
                                       len(e.absolute_path)))
    raise _schema_error(document, first)


def _details(error: jsonschema.ValidationError) -> tuple[Any, Any, Mapping[str, Any]]:
    """The failing instance, the rule's value and the subschema of an error that ``iter_errors`` yielded.

    jsonschema fills all three for every error it yields; its stubs also allow ``Unset`` (an error made by hand).
    """
    return cast(Any, error.instance), cast(Any, error.validator_value), cast(Mapping[str, Any], error.schema)


def _schema_error(document: _Document, error: jsonschema.ValidationError) -> PlaybookError:
    path = list(error.absolute_path)
    instance, rule, schema = _details(error)
    if error.validator == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = next(str(k) for k in instance if k not in allowed)
        return document.error(path, f"unknown field {extra!r}{_did_you_mean(extra, allowed)}", key=extra)
    if error.validator == "required":
        missing = next(k for k in rule if k not in instance)
        return document.error(path, f"missing required field {missing!r}")
    return document.error(path, _schema_reason(error))


def _schema_reason(error: jsonschema.ValidationError) -> str:
    (instance, rule, schema), validator = _details(error), error.validator
    if validator == "type":
        return f"expected {_TYPE_WORDS.get(str(rule), rule)}, got {_yaml_type(instance)}"
    if validator == "enum":
        return f"{instance!r} is not one of {', '.join(map(str, rule))}"
    if validator == "minItems":
        return "must not be empty"
    if validator in ("pattern", "maxLength"):
        return f"{instance!r} is not {schema.get('description', 'valid')}"
    return error.message


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "boolean": "true or false",
               "integer": "a whole number", "number": "a number", "null": "nothing"}


def _yaml_type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__} ({value})"  # dates and timestamps: YAML reads 2024-01-01 as one


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; allowed: {', '.join(choices)}"


# -- meaning ------------------------------------------------------------------------------

def _build_playbook(document: _Document, data: Mapping[str, Any]) -> Playbook:
    fallback = bool(data.get("fallback", False))
    _check_fallback_fields(document, data, fallback)
    _require_namespace(document, ["name"], data["name"], what="name")
    return Playbook(
        name=data["name"],
        description=data["description"].strip(),
        alertname=data.get("alertname"),
        matchers=tuple(_matcher(document, i, text) for i, text in enumerate(data.get("matchers") or [])),
        diagnostics=tuple(_step(document, i, step) for i, step in enumerate(data["diagnostics"])),
        remediations=tuple(_rule(document, i, rule) for i, rule in enumerate(data.get("remediations") or [])),
        fallback=fallback,
        source=f"{document.path}:{document.root.start_mark.line + 1}",
    )


def _check_fallback_fields(document: _Document, data: Mapping[str, Any], fallback: bool) -> None:
    if fallback:
        for key in ("alertname", "matchers"):
            if key in data:
                raise document.error([], f"the fallback playbook handles every alert no other playbook matches, "
                                         f"so it takes no {key}", key=key)
    elif "alertname" not in data:
        raise document.error([], "missing required field 'alertname' (only the fallback playbook, "
                                 "with fallback: true, may leave it out)")


def _require_namespace(document: _Document, path: list[str | int], value: str, *, what: str) -> None:
    if not is_namespace(value):
        raise document.error(path, f"{value!r} is not a valid {what} (DNS-1123 label: {NAMESPACE_RULE})")


def _matcher(document: _Document, index: int, text: str) -> Matcher:
    path: list[str | int] = ["matchers", index]
    try:
        return Matcher.parse(text)
    except re.error as exc:
        raise document.error(path, f"invalid regular expression in {text!r}: {exc}") from None
    except ValueError as exc:
        raise document.error(path, str(exc)) from None


def _step(document: _Document, index: int, data: Mapping[str, Any]) -> DiagnosticStep:
    path: list[str | int] = ["diagnostics", index]
    step = DiagnosticStep(check=data["check"], namespace=data.get("namespace"),
                          namespace_label=data.get("namespace_label"), pod_label=data.get("pod_label"))
    if step.namespace is not None:
        _require_namespace(document, [*path, "namespace"], step.namespace, what="namespace")
    if step.pod_label and not (step.namespace or step.namespace_label):
        raise document.error(path, "pod_label needs namespace or namespace_label too: a pod name alone does "
                                   "not say where the pod is", key="pod_label")
    return step


def _rule(document: _Document, index: int, data: Mapping[str, Any]) -> RemediationRule:
    path: list[str | int] = ["remediations", index]
    rule = RemediationRule(
        codes=tuple(data["codes"]), action=_normalized(data.get("action")), title=data["title"].strip(),
        advice=_normalized_text(data.get("advice")), namespace=data.get("namespace"),
        namespace_label=data.get("namespace_label"), pod_label=data.get("pod_label"),
        message_pattern=data.get("message_pattern"))
    for i, code in enumerate(rule.codes):
        if code not in ALL_CODES:
            raise document.error([*path, "codes", i], f"unknown finding code {code!r} (`meshbot codes` lists them)")
    if rule.action is None and rule.advice is None:
        raise document.error(path, "a remediation needs an action, advice, or both")
    if rule.namespace is not None:
        _require_namespace(document, [*path, "namespace"], rule.namespace, what="namespace")
    if rule.message_pattern is not None:
        try:
            re.compile(rule.message_pattern)
        except re.error as exc:
            raise document.error([*path, "message_pattern"],
                                 f"invalid regular expression {rule.message_pattern!r}: {exc}") from None
    _check_action(document, path, rule)
    return rule


def _normalized(action: str | None) -> str | None:
    """Actions compare by their words, so ``restart  istiod`` and ``restart istiod`` are one."""
    return " ".join(action.split()) if action is not None else None


def _normalized_text(text: str | None) -> str | None:
    return " ".join(text.split()) if text is not None else None


def _check_action(document: _Document, path: list[str | int], rule: RemediationRule) -> None:
    scope_keys = [k for k in ("namespace", "namespace_label", "pod_label") if getattr(rule, k) is not None]
    if rule.action is None or rule.action == FROM_FINDING:
        if scope_keys:
            raise document.error(path, f"{scope_keys[0]} only fills {{namespace}}/{{pod}} in an action template; "
                                       f"this rule has {'no action' if rule.action is None else 'action from-finding'}",
                                 key=scope_keys[0])
        return
    action_path = [*path, "action"]
    try:
        needed = template_placeholders(rule.action)
    except ValueError as exc:
        raise document.error(action_path, str(exc)) from None
    sample = rule.action.format(**{name: _STAND_INS[name] for name in needed})
    if meshbot_action(sample) is None:  # the same grammar as /mesh (commands.actions.targets)
        raise document.error(action_path, f"{rule.action!r} is not a meshbot action; use one of: "
                                          f"{'; '.join(USAGE.values())} (or {FROM_FINDING}), with {{namespace}} "
                                          "and {pod} for values from the alert's labels")
    _check_placeholder_sources(document, path, rule, needed)


def _check_placeholder_sources(document: _Document, path: list[str | int], rule: RemediationRule,
                               needed: tuple[str, ...]) -> None:
    if "namespace" in needed and rule.namespace is None and rule.namespace_label is None:
        raise document.error([*path, "action"], "{namespace} needs namespace_label (or a fixed namespace) "
                                                "in this remediation")
    if "pod" in needed and rule.pod_label is None:
        raise document.error([*path, "action"], "{pod} needs pod_label in this remediation")
    unused = [key for key, name in (("namespace_label", "namespace"), ("namespace", "namespace"),
                                    ("pod_label", "pod"))
              if getattr(rule, key) is not None and name not in needed]
    if unused:
        raise document.error(path, f"{unused[0]} is set but the action has no "
                                   f"{{{'pod' if unused[0] == 'pod_label' else 'namespace'}}}", key=unused[0])


# -- the whole set ------------------------------------------------------------------------

def _check_set(loaded: Sequence[LoadedPlaybook], directory: Path) -> None:
    by_name: dict[str, LoadedPlaybook] = {}
    by_trigger: dict[tuple[str | None, frozenset[str]], LoadedPlaybook] = {}
    fallback: LoadedPlaybook | None = None
    for item in loaded:
        playbook = item.playbook
        if playbook.name in by_name:
            raise item.error("name", f"duplicate playbook name {playbook.name!r}; "
                                     f"{by_name[playbook.name].playbook.source} already uses it")
        by_name[playbook.name] = item
        if playbook.fallback:
            if fallback is not None:
                raise item.error("fallback", f"a second fallback playbook; {fallback.playbook.name!r} at "
                                             f"{fallback.playbook.source} already is the fallback (only one may be)")
            fallback = item
            continue
        trigger = (playbook.alertname, frozenset(str(m) for m in playbook.matchers))
        if trigger in by_trigger:
            other = by_trigger[trigger].playbook
            raise item.error("alertname", f"playbook {playbook.name!r} can never be chosen: {other.name!r} at "
                                          f"{other.source} has the same alertname and matchers")
        by_trigger[trigger] = item
    if fallback is None:
        raise PlaybookError("no fallback playbook; add one with `fallback: true` for alerts no other playbook "
                            "matches", path=str(directory))

