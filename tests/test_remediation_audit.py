"""No remediation meshbot can emit tells anyone to delete istio-ca-secret or restart/delete ztunnel.

- Deleting istio-ca-secret makes istiod mint a new key and root (istio security/pkg/pki/ca/ca.go
  NewSelfSignedIstioCAOptions): every workload holding a certificate from the old root fails mTLS until it
  restarts.  istiod renews its self-signed root from the existing key instead
  (security/pkg/pki/ca/selfsignedcarootcertrotator.go).
- ztunnel carries every ambient pod's traffic on its node; restarting or deleting it drops all of their
  connections at once (https://istio.io/latest/docs/ambient/upgrade/helm/ upgrades it node by node for that reason).

The texts are collected three ways: the code catalogue and the shipped playbooks as loaded, every string
literal of the modules that write remediations and action plans (f-string holes read as ``X``), and the
remediations the certs check actually renders for clusters in every CA layout.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks
from commands.checks.certs import certs
from commands.checks.registry import CheckContext, Thresholds
from commands.codes import ALL_CODES
from commands.findings import Finding
from tests.support.certs import mint
from tests.test_certs import (
    ISTIO, ingress_gateway, injected_pod, istio_cacerts, root_ca, root_configmap, secret, secret_with, snapshot,
    tls_cacerts,
)

REPO = Path(__file__).resolve().parent.parent
# Modules whose strings become remediations, triage advice or action plans.
REMEDIATION_SOURCES = (
    "commands/checks", "commands/actions", "commands/analyze", "commands/certificates", "commands/triage.py")

_NAMESPACE_FLAG = r"(?:-n|--namespace)(?:=|\s+)\S+"
DELETES_CA_SECRET = re.compile(
    rf"\bdelete\b(?:\s+{_NAMESPACE_FLAG})?\s+secrets?(?:/|\s+)(?:{_NAMESPACE_FLAG}\s+)?"
    r"(?:[^\s;&|]+\s+)*?istio-ca-secret\b", re.IGNORECASE)
# An order to act on ztunnel: an imperative verb (not "restarting", "restarts") with ztunnel among the next few
# words, or ztunnel said to need it ("the ztunnel pods should be deleted").
_ACT_ON_ZTUNNEL = re.compile(
    r"\b(restart|delete|kill|bounce|recreate|redeploy|evict|roll\s+out)\s+(?:\S+\s+){0,3}?\S*ztunnel"
    r"|ztunnel\S*\s+(?:\S+\s+){0,3}?(?:should|must|needs?\s+to)\s+be\s+"
    r"(?:restarted|deleted|killed|bounced|recreated|redeployed|evicted)\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(never|not|don't|avoid)\b", re.IGNORECASE)


def deletes_ca_secret(text: str) -> bool:
    return DELETES_CA_SECRET.search(" ".join(text.split())) is not None


def disrupts_ztunnel(text: str) -> bool:
    """A sentence telling someone to restart/delete ztunnel, unless it says not to."""
    return any(_ACT_ON_ZTUNNEL.search(sentence) and not _NEGATION.search(sentence)
               for sentence in re.split(r"[.;\n]", text))


def violations(texts: Iterator[tuple[str, str]]) -> list[str]:
    return [f"{where}: {text!r}" for where, text in texts if deletes_ca_secret(text) or disrupts_ztunnel(text)]


# -- the detectors themselves ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "kubectl -n istio-system delete secret istio-ca-secret",
    "kubectl delete secret istio-ca-secret -n istio-system && kubectl rollout restart deployment/istiod",
    "kubectl delete -n istio-system secret istio-ca-secret",
    "kubectl delete secret -n istio-system istio-ca-secret",
    "kubectl delete secret --namespace=istio-system istio-ca-secret",
    "kubectl delete secrets/istio-ca-secret",
    "kubectl delete secret/istio-ca-secret",
    "kubectl  delete\n   secret   istio-ca-secret",
    "kubectl -n istio-system delete secret cacerts istio-ca-secret",
])
def test_every_form_of_deleting_istio_ca_secret_is_caught(text: str) -> None:
    assert deletes_ca_secret(text)


@pytest.mark.parametrize("text", [
    "Never delete istio-ca-secret: istiod would mint a new key and root",
    "kubectl -n istio-system get secret istio-ca-secret -o name",
    "kubectl -n legacy delete configmap istio-ca-root-cert",
    "kubectl -n istio-system delete secret shop-tls; kubectl get secret istio-ca-secret",
])
def test_mentioning_istio_ca_secret_without_deleting_it_is_fine(text: str) -> None:
    assert not deletes_ca_secret(text)


@pytest.mark.parametrize("text", [
    "kubectl -n istio-system rollout restart daemonset/ztunnel",
    "Restart ztunnel on the node",
    "kubectl -n istio-system delete pod ztunnel-abcde",
    "the ztunnel pods should be deleted",
    "Then roll out the ztunnel DaemonSet again",
])
def test_restarting_or_deleting_ztunnel_is_caught(text: str) -> None:
    assert disrupts_ztunnel(text)


@pytest.mark.parametrize("text", [
    "Do not restart ztunnel: every ambient pod on the node loses its connections",
    "Check ztunnel's log for the workload. Then restart the workload",
    "kubectl -n istio-system logs daemonset/ztunnel",
    "Restarting ztunnel cuts every ambient pod on its node. Fix the policy ztunnel names instead",
    "A ztunnel restart drops every connection on the node",
])
def test_ztunnel_without_a_restart_or_with_a_warning_is_fine(text: str) -> None:
    assert not disrupts_ztunnel(text)


# -- what meshbot emits --------------------------------------------------------------------------------------------

def catalogue_texts() -> Iterator[tuple[str, str]]:
    for entry in ALL_CODES.values():
        yield f"codes.py {entry.code}", entry.template
        yield f"codes.py {entry.code} description", entry.description


def playbook_texts() -> Iterator[tuple[str, str]]:
    for playbook in load_playbooks(DEFAULT_PLAYBOOKS_DIR).playbooks:
        yield playbook.source, playbook.description
        for rule in playbook.remediations:
            where = f"{playbook.source} {rule.title!r}"
            yield where, rule.title
            for text in (rule.advice, rule.action):
                if text:
                    yield where, text


def source_literals() -> Iterator[tuple[str, str]]:
    """Every string literal of the remediation-writing modules; f-string holes read as ``X``."""
    for root in REMEDIATION_SOURCES:
        path = REPO / root
        for module in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            tree = ast.parse(module.read_text(), filename=str(module))
            for node in ast.walk(tree):
                text = _literal(node)
                if text:
                    yield f"{module.relative_to(REPO)}:{node.lineno}", text


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "X" for part in node.values)
    return None


def certificate_clusters(now: datetime) -> Iterator[tuple[str, object]]:
    """A cluster for every CA layout and root state the certs check tells apart."""
    expired, valid = root_ca(not_after=now - timedelta(days=1)), root_ca()
    expiring = root_ca(days=5)
    intermediate = mint("Intermediate CA", issuer=expiring, is_ca=True, days=3)
    yield "self-signed, expired", snapshot(secret(ISTIO, "istio-ca-secret", ca_cert_pem=expired.cert_pem),
                                           root_configmap(ISTIO, expired), root_configmap("legacy", valid))
    yield "istio-generated cacerts", snapshot(secret_with(ISTIO, "cacerts", {"ca-cert.pem": expiring.cert_pem,
                                                                             "istio-generated": ""}))
    yield "plugged-in, Istio layout", snapshot(istio_cacerts(intermediate, expiring),
                                               secret(ISTIO, "istio-ca-secret", ca_cert_pem=expired.cert_pem))
    yield "plugged-in, tls layout", snapshot(tls_cacerts(intermediate, expiring), root_configmap("prod", valid))
    yield "plugged-in, incomplete", snapshot(istio_cacerts(intermediate, expiring, with_root_file=False))
    yield "rotation bundle", snapshot(root_configmap(ISTIO, expired, valid), root_configmap("prod", expired),
                                      injected_pod("shop", "cart-1"))
    yield "published root only", snapshot(root_configmap(ISTIO, expiring), ingress_gateway("shop-tls"))


def rendered_certificate_texts() -> Iterator[tuple[str, str]]:
    now = datetime.now(timezone.utc)
    for name, cluster in certificate_clusters(now):
        findings: list[Finding] = certs(CheckContext(snapshot=cluster, now=now, thresholds=Thresholds()))
        assert findings, name
        for finding in findings:
            yield f"certs [{name}] {finding.code}", finding.message
            if finding.remediation:
                for text in (finding.remediation.summary, finding.remediation.command, finding.remediation.action):
                    if text:
                        yield f"certs [{name}] {finding.code} remediation", text


def test_no_code_template_suggests_deleting_istio_ca_secret_or_restarting_ztunnel() -> None:
    texts = list(catalogue_texts())
    assert len(texts) > 100
    assert violations(iter(texts)) == []


def test_no_playbook_suggestion_deletes_istio_ca_secret_or_restarts_ztunnel() -> None:
    texts = list(playbook_texts())
    assert any("istio-ca-secret" in text for _, text in texts)  # the certificate playbook is among them
    assert violations(iter(texts)) == []


def test_no_check_remediation_or_action_plan_text_deletes_istio_ca_secret_or_restarts_ztunnel() -> None:
    texts = list(source_literals())
    assert any(where.startswith("commands/actions/planners.py") for where, _ in texts)
    assert any("rollout restart" in text for _, text in texts)  # restarts of other workloads are collected too
    assert violations(iter(texts)) == []


def test_no_rendered_certificate_remediation_deletes_istio_ca_secret() -> None:
    texts = list(rendered_certificate_texts())
    assert {where.split("]")[0] for where, _ in texts} >= {f"certs [{name}" for name, _ in
                                                           certificate_clusters(datetime.now(timezone.utc))}
    assert violations(iter(texts)) == []
