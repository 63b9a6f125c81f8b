"""Playbooks: loading and validating the YAML, matching alerts, and suggesting remediations."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks
from bot.incidents.playbooks import (
    DiagnosticStep,
    Matcher,
    PlaybookError,
    PlaybookSet,
    RemediationRule,
    meshbot_action,
    suggest,
)
from commands.actions.targets import USAGE, parse_action
from commands.catalog import default_checks
from commands.codes import ALL_CODES
from commands.findings import Finding, Remediation

FALLBACK = """\
name: fallback
description: Every other alert.
fallback: true
diagnostics:
  - check: all
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def playbook_set(tmp_path: Path, **files: str) -> PlaybookSet:
    """A directory with the given ``name_yaml=text`` files plus a fallback, loaded."""
    write(tmp_path, "zz-fallback.yaml", FALLBACK)
    for name, text in files.items():
        write(tmp_path, name.replace("_yaml", ".yaml"), text)
    return load_playbooks(tmp_path)


def load_error(tmp_path: Path, text: str) -> str:
    """The message of the PlaybookError that loading ``bad.yaml`` (next to a valid fallback) raises."""
    write(tmp_path, "zz-fallback.yaml", FALLBACK)
    write(tmp_path, "bad.yaml", text)
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    return str(caught.value)


def finding(code: str, *, origin: str = "Pod prod/payment-7d9f", action: str | None = None,
            message: str | None = None) -> Finding:
    entry = ALL_CODES[code]
    remediation = Remediation("do something", action=action) if action else None
    return Finding(check=entry.check, code=code, level=entry.level, message=message or entry.name, origin=origin,
                   remediation=remediation)


def one_playbook(tmp_path: Path, remediations: str, *, diagnostics: str = "  - check: status\n"):
    text = "name: test\ndescription: A test.\nalertname: TestAlert\ndiagnostics:\n" + diagnostics
    text += "remediations:\n" + textwrap.indent(textwrap.dedent(remediations), "  ")
    return playbook_set(tmp_path, test_yaml=text).get("test")


# -- the shipped playbooks ----------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> PlaybookSet:
    return load_playbooks(DEFAULT_PLAYBOOKS_DIR)


def test_shipped_playbooks_all_load(shipped):
    assert len(shipped.playbooks) >= 11
    assert shipped.fallback.name == "fallback"


@pytest.mark.parametrize(("labels", "expected"), [
    ({"alertname": "IstiodDown", "job": "istiod"}, "istiod-down"),
    ({"alertname": "IstiodHighMemory", "namespace": "istio-system", "pod": "istiod-5d8f7c-abcde",
      "container": "discovery"}, "istiod-high-memory"),
    ({"alertname": "ConfigSyncFailure", "type": "ConfigError"}, "config-sync-failure"),
    ({"alertname": "EnvoySidecarCrashLoop", "namespace": "prod", "pod": "payment-7d9f-x2x4q",
      "container": "istio-proxy"}, "envoy-sidecar-crash-loop"),
    ({"alertname": "EnvoyHighMemoryUsage", "namespace": "prod", "pod": "payment-7d9f-x2x4q"},
     "envoy-high-memory-usage"),
    ({"alertname": "EnvoyConfigSyncLag", "namespace": "prod", "pod": "payment-7d9f-x2x4q"}, "envoy-config-sync-lag"),
    ({"alertname": "EnvoyUpstreamFailure", "namespace": "prod", "pod": "payment-7d9f-x2x4q"},
     "envoy-upstream-failure"),
    ({"alertname": "ServiceMeshHighErrorRate", "destination_service_name": "payment"},
     "service-mesh-high-error-rate"),
    ({"alertname": "IstioCertificateExpiringSoon", "namespace": "prod", "pod": "payment-7d9f-x2x4q"},
     "istio-certificate-expiring-soon"),
    ({"alertname": "EnvoyCircuitBreakerOpen", "envoy_cluster_name": "outbound|8080||payment.prod.svc.cluster.local"},
     "envoy-circuit-breaker-open"),
])
def test_each_shipped_alert_gets_its_playbook(shipped, labels, expected):
    assert shipped.match(labels).name == expected


def test_crash_looping_gateway_gets_the_gateway_playbook_not_the_sidecar_one(shipped):
    labels = {"alertname": "EnvoySidecarCrashLoop", "namespace": "istio-system",
              "pod": "istio-ingressgateway-6b7c9d-qwert"}
    assert shipped.match(labels).name == "envoy-gateway-crash-loop"


def test_unknown_alert_gets_the_fallback(shipped):
    assert shipped.match({"alertname": "KubeNodeNotReady", "node": "n1"}).fallback


def test_alert_without_alertname_gets_the_fallback(shipped):
    assert shipped.match({}).fallback


def test_every_shipped_playbook_file_opens_with_a_comment():
    for path in DEFAULT_PLAYBOOKS_DIR.glob("*.yaml"):
        assert path.read_text(encoding="utf-8").startswith("# "), path.name


def test_crash_loop_playbook_suggests_bypassing_the_workload(shipped):
    labels = {"alertname": "EnvoySidecarCrashLoop", "namespace": "prod", "pod": "payment-7d9f-x2x4q"}
    crash = finding("MB1011", action="bypass payment -n prod")
    suggestions = suggest(shipped.match(labels), [crash], labels)
    assert [s.action for s in suggestions] == ["bypass payment -n prod"]


def test_istiod_oom_suggests_raising_istiods_memory_not_a_restart_alone(shipped):
    labels = {"alertname": "IstiodDown"}
    action = "memory istiod -n istio-system --limit 4Gi --container discovery"
    oom = finding("MB1002", origin="Pod istio-system/istiod-5d8f", action=action,
                  message="istiod container discovery in istio-system/istiod-5d8f was OOMKilled")
    suggestions = suggest(shipped.match(labels), [oom], labels)
    assert [(s.title, s.action) for s in suggestions] == [("Raise istiod's memory limit (OOMKilled)", action)]
    assert "first" in suggestions[0].advice and "A restart alone" in suggestions[0].advice


def test_istiod_playbook_does_not_restart_istiod_for_a_gateway(shipped):
    labels = {"alertname": "IstiodDown"}
    gateway_crash = finding("MB1003", origin="Pod istio-system/istio-ingressgateway-1",
                            message="gateway container istio-proxy in istio-system/istio-ingressgateway-1 is in "
                                    "CrashLoopBackOff (9 restarts)")
    assert suggest(shipped.match(labels), [gateway_crash], labels) == []


def test_expired_root_makes_the_whole_mesh_permissive(shipped):
    labels = {"alertname": "IstioCertificateExpiringSoon", "namespace": "prod"}
    root = finding("MB3001", origin="Secret istio-system/cacerts",
                   message='Mesh root CA "O=cluster.local" expired 2d ago (notAfter 2025-01-01T00:00:00Z)')
    actions = [s.action for s in suggest(shipped.match(labels), [root], labels)]
    assert actions == ["permissive-mtls --mesh"]


def test_expired_workload_certificate_makes_only_its_namespace_permissive(shipped):
    labels = {"alertname": "IstioCertificateExpiringSoon", "namespace": "prod"}
    workload = finding("MB3001", message='Workload certificate "spiffe://cluster.local/ns/prod/sa/payment" expired '
                                         "1h ago (notAfter 2025-01-01T00:00:00Z)")
    actions = [s.action for s in suggest(shipped.match(labels), [workload], labels)]
    assert actions == ["permissive-mtls prod"]


def test_a_suggested_restart_waits_while_the_ca_fails_to_sign(shipped):
    labels = {"alertname": "EnvoySidecarCrashLoop", "namespace": "prod", "pod": "payment-7d9f-x2x4q"}
    oom = finding("MB1012", action="restart payment -n prod")
    ca = Finding(check="certs", code="MB3020", level=ALL_CODES["MB3020"].level, message="istiod's CA fails to sign",
                 origin="Pod istio-system/istiod-5d8f",
                 remediation=Remediation("Find why the CA cannot sign", command="kubectl -n istio-system logs "
                                                                           "-l app=istiod"))
    [suggestion] = suggest(shipped.match(labels), [oom, ca], labels)
    assert suggestion.action is None
    assert suggestion.title.endswith("(waits on ca)")
    assert suggestion.advice.startswith("Not yet: the mesh CA cannot issue usable certificates")
    assert "First: kubectl -n istio-system logs -l app=istiod" in suggestion.advice


def test_a_suggested_config_change_waits_while_istiod_is_down(shipped):
    labels = {"alertname": "IstioCertificateExpiringSoon", "namespace": "prod"}
    root = finding("MB3001", origin="Secret istio-system/cacerts",
                   message='Mesh root CA "O=cluster.local" expired 2d ago (notAfter 2025-01-01T00:00:00Z)')
    oom = Finding(check="status", code="MB1002", level=ALL_CODES["MB1002"].level,
                  message="istiod container discovery in istio-system/istiod-5d8f was OOMKilled",
                  origin="Pod istio-system/istiod-5d8f", evidence={"role": "istiod"},
                  remediation=Remediation("Raise its memory", command="kubectl -n istio-system set resources "
                                                                      "deployment/istiod -c discovery "
                                                                      "--limits=memory=4Gi"))
    [permissive] = [s for s in suggest(shipped.match(labels), [root, oom], labels) if "mesh" in s.advice.lower()
                    or "permissive" in s.title.lower()]
    assert permissive.action is None and "no proxy can receive this change" in permissive.advice


def test_conflicting_virtualservices_get_merge_advice_without_an_action(shipped):
    labels = {"alertname": "ConfigSyncFailure"}
    conflict = finding("IST0109", origin="VirtualService prod/reviews")
    [suggestion] = suggest(shipped.match(labels), [conflict], labels)
    assert suggestion.action is None
    assert "Merge them" in suggestion.advice


# -- matchers -----------------------------------------------------------------------------

def test_equality_matcher_compares_the_whole_value():
    matcher = Matcher("severity", "=", "critical")
    assert matcher.matches({"severity": "critical"})
    assert not matcher.matches({"severity": "critical-ish"})


def test_equality_matcher_treats_a_missing_label_as_empty():
    assert Matcher("team", "=", "").matches({})
    assert not Matcher("team", "=", "mesh").matches({})


def test_not_equal_matcher_matches_other_values_and_missing_labels():
    matcher = Matcher("severity", "!=", "info")
    assert matcher.matches({"severity": "critical"})
    assert matcher.matches({})
    assert not matcher.matches({"severity": "info"})


def test_regex_matcher_is_anchored_at_both_ends():
    matcher = Matcher("namespace", "=~", "prod|staging")
    assert matcher.matches({"namespace": "prod"})
    assert not matcher.matches({"namespace": "production"})
    assert not matcher.matches({"namespace": "preprod"})


def test_negative_regex_matcher_excludes_full_matches_only():
    matcher = Matcher("pod", "!~", "istio-.*gateway-.+")
    assert not matcher.matches({"pod": "istio-ingressgateway-abc"})
    assert matcher.matches({"pod": "my-istio-ingressgateway-abc"})
    assert matcher.matches({})


def test_matcher_text_accepts_quoted_and_unquoted_values():
    assert Matcher.parse('severity="critical"') == Matcher("severity", "=", "critical")
    assert Matcher.parse("pod =~ istio-.*") == Matcher("pod", "=~", "istio-.*")
    assert Matcher.parse(r'summary!="say \"hi\""') == Matcher("summary", "!=", 'say "hi"')
    assert Matcher.parse('team=""') == Matcher("team", "=", "")


def test_matcher_text_without_an_operator_is_refused():
    with pytest.raises(ValueError, match="is not a matcher"):
        Matcher.parse("severity: critical")


# -- choosing a playbook ------------------------------------------------------------------

SPECIFICITY = {
    "a_yaml": "name: any-crash\ndescription: Any.\nalertname: Crash\ndiagnostics: [{check: status}]\n",
    "b_yaml": ("name: prod-crash\ndescription: Prod.\nalertname: Crash\nmatchers: ['namespace=\"prod\"']\n"
               "diagnostics: [{check: status}]\n"),
    "c_yaml": ("name: prod-critical-crash\ndescription: Prod, critical.\nalertname: Crash\n"
               "matchers: ['namespace=\"prod\"', 'severity=\"critical\"']\ndiagnostics: [{check: status}]\n"),
}


def test_most_specific_matching_playbook_wins(tmp_path):
    playbooks = playbook_set(tmp_path, **SPECIFICITY)
    assert playbooks.match({"alertname": "Crash", "namespace": "prod", "severity": "critical"}).name == \
        "prod-critical-crash"
    assert playbooks.match({"alertname": "Crash", "namespace": "prod", "severity": "warning"}).name == "prod-crash"
    assert playbooks.match({"alertname": "Crash", "namespace": "dev"}).name == "any-crash"


def test_equally_specific_playbooks_are_chosen_in_file_order(tmp_path):
    playbooks = playbook_set(
        tmp_path,
        a_yaml="name: by-team\ndescription: T.\nalertname: Crash\nmatchers: [team=mesh]\ndiagnostics: [{check: status}]\n",
        b_yaml="name: by-ns\ndescription: N.\nalertname: Crash\nmatchers: [namespace=prod]\ndiagnostics: [{check: envoy}]\n")
    assert playbooks.match({"alertname": "Crash", "team": "mesh", "namespace": "prod"}).name == "by-team"


def test_alertname_must_match_exactly(tmp_path):
    playbooks = playbook_set(tmp_path, **SPECIFICITY)
    assert playbooks.match({"alertname": "CrashLoop", "namespace": "prod"}).fallback


def test_playbook_sources_name_file_and_line(tmp_path):
    playbooks = playbook_set(tmp_path, a_yaml="# a comment\n" + SPECIFICITY["a_yaml"])
    assert playbooks.get("any-crash").source == f"{tmp_path / 'a.yaml'}:2"


# -- where a step looks -------------------------------------------------------------------

def test_step_takes_namespace_and_pod_from_alert_labels():
    step = DiagnosticStep("envoy", namespace=None, namespace_label="namespace", pod_label="pod")
    labels = {"namespace": "prod", "pod": "payment-7d9f-x2x4q"}
    assert (step.namespace_for(labels), step.pod_for(labels)) == ("prod", "payment-7d9f-x2x4q")


def test_invalid_namespace_label_falls_back_to_the_fixed_namespace():
    step = DiagnosticStep("status", namespace="istio-system", namespace_label="namespace", pod_label=None)
    assert step.namespace_for({"namespace": "Prod_NS"}) == "istio-system"


def test_invalid_namespace_label_without_fixed_namespace_means_all_namespaces():
    step = DiagnosticStep("status", namespace=None, namespace_label="namespace", pod_label=None)
    assert step.namespace_for({"namespace": "Prod_NS"}) is None
    assert step.namespace_for({}) is None


def test_namespace_label_with_a_trailing_newline_is_not_used():
    step = DiagnosticStep("status", namespace=None, namespace_label="namespace", pod_label=None)
    assert step.namespace_for({"namespace": "prod\n"}) is None


def test_invalid_pod_label_is_not_used():
    step = DiagnosticStep("envoy", namespace="prod", namespace_label=None, pod_label="pod")
    assert step.pod_for({"pod": "payment; rm -rf /"}) is None
    assert step.pod_for({}) is None


# -- suggestions --------------------------------------------------------------------------

def test_rule_is_suggested_when_its_code_is_found(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB4003]
          title: Cap the retries
          advice: Lower retries.attempts.
        """)
    [suggestion] = suggest(playbook, [finding("MB4003")], {})
    assert (suggestion.title, suggestion.action, suggestion.codes, suggestion.origins) == \
        ("Cap the retries", None, ("MB4003",), ("Pod prod/payment-7d9f",))


def test_rule_is_not_suggested_for_other_codes(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB4003]
          title: Cap the retries
          advice: Lower retries.attempts.
        """)
    assert suggest(playbook, [finding("MB4002")], {}) == []


def test_from_finding_suggests_the_findings_own_action(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1011]
          action: from-finding
          title: Bypass the sidecar
        """)
    suggestions = suggest(playbook, [finding("MB1011", action="bypass payment -n prod"),
                                     finding("MB1011", origin="Pod shop/cart-1", action="bypass cart -n shop")], {})
    assert [s.action for s in suggestions] == ["bypass payment -n prod", "bypass cart -n shop"]


def test_from_finding_without_an_action_suggests_nothing(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1011]
          action: from-finding
          title: Bypass the sidecar
          advice: Takes the workload out of the mesh.
        """)
    assert suggest(playbook, [finding("MB1011")], {}) == []


def test_from_finding_action_that_is_not_a_meshbot_action_is_dropped(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1011]
          action: from-finding
          title: Bypass the sidecar
        """)
    assert suggest(playbook, [finding("MB1011", action="kubectl delete ns prod")], {}) == []


TEMPLATE_RULE = """\
    - codes: [MB3010]
      action: permissive-mtls {namespace}
      namespace_label: destination_service_namespace
      title: Permissive mTLS
    """


def test_action_template_is_filled_from_alert_labels(tmp_path):
    playbook = one_playbook(tmp_path, TEMPLATE_RULE)
    [suggestion] = suggest(playbook, [finding("MB3010")], {"destination_service_namespace": "prod"})
    assert suggestion.action == "permissive-mtls prod"


@pytest.mark.parametrize("labels", [{}, {"destination_service_namespace": "Prod_NS"},
                                    {"destination_service_namespace": "prod --mesh"},
                                    {"destination_service_namespace": "prod\n"}])
def test_action_whose_placeholder_cannot_be_filled_safely_is_dropped(tmp_path, labels):
    playbook = one_playbook(tmp_path, TEMPLATE_RULE)
    # A finding that names no namespace: the label is the only source left, and it is unusable.
    assert suggest(playbook, [finding("MB3010", origin="istiod /debug/syncz")], labels) == []


def test_action_template_takes_the_namespace_from_the_finding_before_the_alert_label(tmp_path):
    playbook = one_playbook(tmp_path, TEMPLATE_RULE)
    mismatch = finding("MB3010", origin="ConfigMap legacy/istio-ca-root-cert")
    [suggestion] = suggest(playbook, [mismatch], {"destination_service_namespace": "istio-system"})
    assert suggestion.action == "permissive-mtls legacy"


def test_fixed_namespace_fills_the_template_when_the_label_is_missing(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1003]
          action: restart istiod -n {namespace}
          namespace_label: namespace
          namespace: istio-system
          title: Restart istiod
        """)
    no_namespace = finding("MB1003", origin="istiod /debug/syncz")
    assert [s.action for s in suggest(playbook, [no_namespace], {})] == ["restart istiod -n istio-system"]


def test_pod_placeholder_is_filled_from_its_label(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1011]
          action: bypass {pod} -n {namespace}
          namespace_label: namespace
          pod_label: deployment
          title: Bypass
        """)
    labels = {"namespace": "prod", "deployment": "payment"}
    assert [s.action for s in suggest(playbook, [finding("MB1011")], labels)] == ["bypass payment -n prod"]


def test_pod_placeholder_without_a_label_names_the_deployment_behind_the_findings_pod(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1011]
          action: bypass {pod} -n {namespace}
          namespace_label: namespace
          pod_label: deployment
          title: Bypass
        """)
    crash = finding("MB1011", origin="Pod prod/payment-service-7d9f8c6b5-x2x4k")
    assert [s.action for s in suggest(playbook, [crash], {})] == ["bypass payment-service -n prod"]


def test_same_action_from_two_rules_is_suggested_once_with_all_codes(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB1002]
          action: from-finding
          title: Restart istiod (OOMKilled)
        - codes: [MB1003]
          action: restart istiod -n istio-system
          title: Restart istiod
        """)
    findings = [finding("MB1003", origin="Pod istio-system/istiod-b"),
                finding("MB1002", origin="Pod istio-system/istiod-a", action="restart istiod -n istio-system")]
    [suggestion] = suggest(playbook, findings, {})
    assert suggestion.title == "Restart istiod (OOMKilled)"
    assert suggestion.codes == ("MB1002", "MB1003")
    assert suggestion.origins == ("Pod istio-system/istiod-a", "Pod istio-system/istiod-b")


def test_advice_only_rules_are_deduplicated_by_title(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [IST0109]
          title: Merge the VirtualServices
          advice: Merge them.
        """)
    findings = [finding("IST0109", origin="VirtualService prod/a"), finding("IST0109", origin="VirtualService prod/b")]
    [suggestion] = suggest(playbook, findings, {})
    assert suggestion.origins == ("VirtualService prod/a", "VirtualService prod/b")


def test_suggestions_follow_the_most_severe_finding_first(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB4004]
          title: Watch the memory
          advice: It is a warning.
        - codes: [MB4005]
          title: Restart it
          advice: It is critical.
        """)
    suggestions = suggest(playbook, [finding("MB4004"), finding("MB4005")], {})
    assert [s.title for s in suggestions] == ["Restart it", "Watch the memory"]


def test_message_pattern_limits_a_rule_to_matching_findings(tmp_path):
    playbook = one_playbook(tmp_path, """\
        - codes: [MB3001]
          message_pattern: ^Mesh root CA
          action: permissive-mtls --mesh
          title: Mesh-wide permissive
        """)
    root = finding("MB3001", message="Mesh root CA expired")
    workload = finding("MB3001", message="Workload certificate expired")
    assert [s.action for s in suggest(playbook, [workload], {})] == []
    assert [s.action for s in suggest(playbook, [root], {})] == ["permissive-mtls --mesh"]


def test_remediation_rule_can_be_built_directly():
    rule = RemediationRule(codes=("MB1011",), action="from-finding", title="Bypass", advice=None)
    assert rule.action_for(finding("MB1011", action="bypass payment -n prod"), {}) == "bypass payment -n prod"


# -- actions ------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "command"), [
    ("permissive-mtls prod", "permissive-mtls prod"),
    ("permissive-mtls --mesh", "permissive-mtls --mesh"),
    ("permissive-mtls prod --servers-only", "permissive-mtls prod --servers-only"),
    ("bypass payment -n prod", "bypass payment -n prod"),
    ("bypass namespace prod", "bypass namespace prod"),
    ("restart istiod -n istio-system", "restart istiod -n istio-system"),
    ("restart istiod", "restart istiod -n istio-system"),
    ("restart payment.v2 -n prod", "restart payment.v2 -n prod"),
    ("restart  payment  --namespace=prod", "restart payment -n prod"),
])
def test_playbook_actions_are_read_by_the_same_grammar_as_slash_commands(action, command):
    target = meshbot_action(action)
    assert target is not None and target.command == command
    assert target == parse_action(action.split()), "one grammar: commands.actions.targets"


@pytest.mark.parametrize("action", ["delete namespace prod", "bypass Payment -n prod",
                                    "permissive-mtls prod.example", "restart payment -n prod --force",
                                    "permissive-mtls prod --servers-only --plaintext-clients", ""])
def test_other_text_is_not_an_action(action):
    assert meshbot_action(action) is None


# -- load errors --------------------------------------------------------------------------

def test_invalid_yaml_names_file_and_line(tmp_path):
    message = load_error(tmp_path, "name: x\ndescription: 'unterminated\nalertname: X\n")
    assert message == (f"{tmp_path / 'bad.yaml'}:4: invalid YAML: while scanning a quoted scalar "
                       "found unexpected end of stream")


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    message = load_error(tmp_path, "- check: status\n")
    assert message == f"{tmp_path / 'bad.yaml'}:1: expected a mapping, got a list"


def test_unknown_check_is_refused_with_the_known_ones(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          - check: status
          - check: stauts
        """)
    # The choices are the check registry's, in report order (a new check joins them without a test edit).
    choices = ", ".join([*default_checks().names(), "all"])
    assert message == f"{tmp_path / 'bad.yaml'}:6: diagnostics[1].check: 'stauts' is not one of {choices}"
    assert "proxy-status, certs, envoy" in choices


def test_unknown_finding_code_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB1011, MB1099]
            title: T
            advice: A.
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:6: remediations[0].codes[1]: unknown finding code 'MB1099' "
                       "(`meshbot codes` lists them)")


def test_bad_matcher_regex_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        matchers:
          - 'pod=~"istio-(ingress"'
        diagnostics: [{check: status}]
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:5: matchers[0]: invalid regular expression in "
                       "'pod=~\"istio-(ingress\"': missing ), unterminated subpattern at position 6")


def test_bad_message_pattern_regex_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB3001]
            title: T
            advice: A.
            message_pattern: "[root"
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:9: remediations[0].message_pattern: invalid regular expression "
                       "'[root': unterminated character set at position 0")


def test_matcher_without_operator_is_refused(tmp_path):
    message = load_error(tmp_path, "name: x\ndescription: X.\nalertname: X\nmatchers: ['severity: critical']\n"
                                   "diagnostics: [{check: status}]\n")
    assert message == (f"{tmp_path / 'bad.yaml'}:4: matchers[0]: 'severity: critical' is not a matcher; "
                       'write label="value" with one of =, !=, =~, !~')


def test_action_that_is_not_a_meshbot_action_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB1003]
            title: Restart istiod
            action: restart istiod --force
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:8: remediations[0].action: 'restart istiod --force' is not a "
                       "meshbot action; use one of: " + "; ".join(USAGE.values()) + " (or from-finding), with "
                       "{namespace} and {pod} for values from the alert's labels")


def test_unknown_placeholder_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB1011]
            title: Bypass
            action: bypass {deployment} -n prod
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:8: remediations[0].action: unknown placeholder {{deployment}}; "
                       "use {namespace} or {pod}")


def test_pod_placeholder_in_a_namespace_slot_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB3010]
            title: Permissive
            action: permissive-mtls {pod}
            pod_label: pod
        """)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}:8: remediations[0].action: 'permissive-mtls {{pod}}' is "
                              "not a meshbot action")


def test_placeholder_without_a_label_to_fill_it_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB3010]
            title: Permissive
            action: permissive-mtls {namespace}
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:8: remediations[0].action: {{namespace}} needs namespace_label "
                       "(or a fixed namespace) in this remediation")


def test_label_that_fills_no_placeholder_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB1011]
            title: Bypass
            action: from-finding
            namespace_label: namespace
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:9: remediations[0]: namespace_label only fills "
                       "{namespace}/{pod} in an action template; this rule has action from-finding")


def test_remediation_without_action_or_advice_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics: [{check: status}]
        remediations:
          - codes: [MB1011]
            title: Bypass
        """)
    assert message == f"{tmp_path / 'bad.yaml'}:6: remediations[0]: a remediation needs an action, advice, or both"


def test_missing_required_field_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          - namespace_label: namespace
        """)
    assert message == f"{tmp_path / 'bad.yaml'}:5: diagnostics[0]: missing required field 'check'"


def test_playbook_without_alertname_must_be_the_fallback(tmp_path):
    message = load_error(tmp_path, "name: x\ndescription: X.\ndiagnostics: [{check: status}]\n")
    assert message == (f"{tmp_path / 'bad.yaml'}:1: missing required field 'alertname' (only the fallback "
                       "playbook, with fallback: true, may leave it out)")


def test_fallback_with_an_alertname_is_refused(tmp_path):
    write(tmp_path, "fallback.yaml", FALLBACK + "alertname: Other\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'fallback.yaml'}:6: the fallback playbook handles every alert no "
                                 "other playbook matches, so it takes no alertname")


def test_wrong_type_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          check: status
        """)
    assert message == f"{tmp_path / 'bad.yaml'}:5: diagnostics: expected a list, got a mapping"


def test_unknown_field_is_refused_with_a_suggestion(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          - check: status
            namespce: prod
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:6: diagnostics[0]: unknown field 'namespce' "
                       "(did you mean 'namespace'?)")


def test_invalid_fixed_namespace_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          - check: status
            namespace: Istio_System
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:6: diagnostics[0].namespace: 'Istio_System' is not a namespace "
                       "name (DNS-1123 label: lower-case letters, digits and '-')")


def test_pod_label_without_a_namespace_is_refused(tmp_path):
    message = load_error(tmp_path, """\
        name: x
        description: X.
        alertname: X
        diagnostics:
          - check: envoy
            pod_label: pod
        """)
    assert message == (f"{tmp_path / 'bad.yaml'}:6: diagnostics[0]: pod_label needs namespace or namespace_label "
                       "too: a pod name alone does not say where the pod is")


def test_duplicate_key_is_refused(tmp_path):
    message = load_error(tmp_path, "name: x\ndescription: X.\nalertname: X\ndiagnostics: [{check: status}]\n"
                                   "name: y\n")
    assert message == f"{tmp_path / 'bad.yaml'}:5: duplicate key 'name'"


def test_duplicate_playbook_name_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "name: dup\ndescription: A.\nalertname: A\ndiagnostics: [{check: status}]\n")
    message = load_error(tmp_path, "name: dup\ndescription: B.\nalertname: B\ndiagnostics: [{check: status}]\n")
    assert message == f"{tmp_path / 'bad.yaml'}:1: duplicate playbook name 'dup'; {tmp_path / 'a.yaml'}:1 already uses it"


def test_second_playbook_for_the_same_alert_and_matchers_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "name: a\ndescription: A.\nalertname: A\ndiagnostics: [{check: status}]\n")
    message = load_error(tmp_path, "name: b\ndescription: B.\nalertname: A\ndiagnostics: [{check: envoy}]\n")
    assert message == (f"{tmp_path / 'bad.yaml'}:3: playbook 'b' can never be chosen: 'a' at {tmp_path / 'a.yaml'}:1 "
                       "has the same alertname and matchers")


def test_two_fallbacks_are_refused(tmp_path):
    write(tmp_path, "a-fallback.yaml", FALLBACK)
    write(tmp_path, "b-fallback.yaml", FALLBACK.replace("name: fallback", "name: other-fallback"))
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'b-fallback.yaml'}:3: a second fallback playbook; 'fallback' at "
                                 f"{tmp_path / 'a-fallback.yaml'}:1 already is the fallback (only one may be)")


def test_no_fallback_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "name: a\ndescription: A.\nalertname: A\ndiagnostics: [{check: status}]\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: no fallback playbook; add one with `fallback: true` for alerts no "
                                 "other playbook matches")


def test_empty_directory_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("not a playbook", encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == f"{tmp_path}: no playbook files (*.yaml, *.yml) in this directory"


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path / "nope")
    assert str(caught.value) == f"{tmp_path / 'nope'}: no such directory"


def test_empty_file_is_refused(tmp_path):
    message = load_error(tmp_path, "# only a comment\n")
    assert message == (f"{tmp_path / 'bad.yaml'}:1: empty file; a playbook is a mapping with name, description "
                       "and diagnostics")


def test_playbook_error_carries_path_and_line(tmp_path):
    write(tmp_path, "zz-fallback.yaml", FALLBACK)
    write(tmp_path, "bad.yaml", "name: x\ndescription: X.\nalertname: X\ndiagnostics: []\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert (caught.value.path, caught.value.line, caught.value.reason) == \
        (str(tmp_path / "bad.yaml"), 4, "diagnostics: must not be empty")
