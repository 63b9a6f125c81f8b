"""Block Kit rendering stays inside Slack's limits whatever the findings look like."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.incidents import blocks as incident_blocks
from bot.incidents import triage_reply
from bot.incidents.records import Incident, IncidentStatus
from bot.slack import blocks
from commands import codes
from commands.coverage import coverage
from commands.findings import Finding, Level, Remediation


def finding(i: int, level: Level = Level.ERROR, message: str = "broken", **kwargs) -> Finding:
    return Finding(check="analyze", code="IST0101", level=level, message=message, origin=f"VirtualService p/vs-{i}",
                   **kwargs)


def test_a_5000_finding_report_fits_in_50_blocks_and_counts_the_rest():
    findings = [finding(i, [Level.ERROR, Level.WARNING, Level.INFO][i % 3]) for i in range(5000)]
    message, hidden = blocks.findings_report("analyze \u00b7 prod", findings)
    assert len(message.blocks) <= blocks.MAX_BLOCKS
    assert hidden == 4980
    assert "4980 more findings" in str(message.blocks[-1])
    assert message.text.startswith("analyze \u00b7 prod: 1667 errors, 1667 warnings, 1666 info")


def test_most_severe_findings_are_shown_first():
    findings = [finding(1, Level.INFO), finding(2, Level.ERROR), finding(3, Level.WARNING)]
    message, _ = blocks.findings_report("t", findings)
    shown = [b["text"]["text"] for b in message.blocks if b["type"] == "section" and "`IST0101`" in b["text"]["text"]]
    assert ["Error" in shown[0], "Warning" in shown[1], "Info" in shown[2]] == [True, True, True]


def test_huge_texts_are_clipped_to_slack_limits():
    long = "x" * 10_000
    message, _ = blocks.findings_report("h" * 400, [finding(1, message=long, remediation=Remediation(long, long))])
    header = message.blocks[0]
    assert len(header["text"]["text"]) == blocks.MAX_HEADER_TEXT
    for block in message.blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= blocks.MAX_SECTION_TEXT
    assert len(message.text) <= blocks.MAX_FALLBACK_TEXT


def test_user_controlled_text_cannot_mention_channels_or_fake_links():
    evil = finding(1, message="<!channel> click <https://evil.example|here> & co")
    text = blocks.finding_text(evil)
    assert "<!channel>" not in text and "<https://" not in text
    assert "&lt;!channel&gt;" in text and "&amp; co" in text


def test_every_message_has_a_plain_text_fallback():
    for message in (blocks.running("diagnose", "prod", "U1"), blocks.failed("status", None, "U1", "boom"),
                    blocks.outcome("certs", None, "U1", [], 1.0), blocks.cluster_unavailable("down"),
                    blocks.findings_report("t", [])[0]):
        assert message.text and message.blocks


def test_an_empty_report_without_what_was_scanned_is_no_all_clear():
    message, hidden = blocks.findings_report("status \u00b7 prod", [])
    assert hidden == 0 and "no all-clear" in str(message.blocks)
    assert "white_check_mark" not in str(message.blocks)


def test_an_empty_report_ticks_only_with_what_was_scanned():
    seen = coverage([], scope="prod", checks=("certs",))
    message, _ = blocks.findings_report("certs \u00b7 prod", [], seen=seen)
    assert ":white_check_mark: prod: checked: certs; nothing wrong" in str(message.blocks)


def test_evidence_that_could_not_be_read_is_a_warning_not_a_tick():
    unread = codes.finding("MB0004", check="envoy", origin="check envoy", check_name="envoy",
                           reason="no running sidecars to inspect")
    seen = coverage([unread], scope="prod", checks=("envoy",))
    message, _ = blocks.findings_report("envoy \u00b7 prod", [unread], seen=seen)
    outcome = blocks.outcome("envoy", "prod", "U1", [unread], 1.0, seen)
    assert ":warning: prod: checked: envoy; nothing wrong in what was checked, but NOT checked: envoy skipped: " \
           "no running sidecars to inspect" in str(message.blocks)
    assert "white_check_mark" not in str(message.blocks) + str(outcome.blocks)


def test_a_special_mention_in_an_alert_title_or_note_notifies_nobody():
    message = incident_blocks.note_message("UALICE", "paging <!channel> and <!subteam^S0SRE>")
    assert "<!" not in message.text and "&lt;!channel" in message.text
    assert "<@UALICE>" in message.text, "meshbot's own mention of the author stays"
    assert "<!" not in str(message.blocks)


# -- counts, plurals, the incident's top message, the triage reply -----------------------------------

def test_counts_leave_out_empty_levels_and_use_the_singular_for_one():
    text = blocks.counts_text([finding(1, Level.WARNING), finding(2, Level.INFO)])
    assert text == ":large_orange_circle: 1 warning \u00b7 :large_blue_circle: 1 info"
    assert blocks.plural(1, "sidecar") == "1 sidecar" and blocks.plural(3, "sidecar") == "3 sidecars"


def incident_row(status="open", resolved_at=None, severity="critical") -> Incident:
    return Incident(id=7, group_key="g", title="ServiceMeshHighErrorRate: payment answers 38% 5xx", severity=severity,
                    status=IncidentStatus(status), channel="CINCIDENT", top_message=1,
                    opened_at=datetime(2026, 11, 24, 4, 3, tzinfo=timezone.utc), resolved_at=resolved_at,
                    resolved_by=None, labels={}, namespaces=("prod",), services=(), external_url="", playbook="p",
                    diagnosed=False, source="alertmanager")


ALERT = {"status": "firing", "starts_at": "2026-11-24T02:58:00Z", "ends_at": None, "generator_url": ""}
NOW = datetime(2026, 11, 24, 4, 10, tzinfo=timezone.utc)


def test_open_top_message_counts_firing_time_from_starts_at_not_from_when_meshbot_heard():
    view = incident_blocks.TopView(incident=incident_row(), alerts=[ALERT])
    text = incident_blocks.incident_message(view, NOW).blocks[0]["text"]["text"]
    assert "Firing since <!date^1795489080^{date_short_pretty} {time}|2026-11-24 02:58 UTC> (1h 12m)" in text


def test_resolved_top_message_drops_the_bold_severity_and_says_how_long_it_lasted():
    view = incident_blocks.TopView(incident=incident_row("resolved", resolved_at=NOW + timedelta(minutes=1)),
                                   alerts=[{**ALERT, "status": "resolved", "ends_at": "2026-11-24T04:10:00Z"}])
    message = incident_blocks.incident_message(view, NOW)
    text = message.blocks[0]["text"]["text"]
    assert text.startswith(":white_check_mark: Resolved \u00b7 ServiceMeshHighErrorRate")
    assert "Lasted 1h 12m (2026-11-24 02:58 UTC \u2192 2026-11-24 04:10 UTC) \u00b7 was critical" in text
    assert "*CRITICAL" not in str(message.blocks) and message.text.startswith("RESOLVED:")


def test_a_first_step_that_is_a_command_is_shown_as_the_command_without_a_button():
    step = incident_blocks.FirstStep(summary="raise istiod's memory limit",
                                     command="kubectl -n istio-system set resources deployment/istiod "
                                             "--limits=memory=4Gi")
    view = incident_blocks.TopView(incident=incident_row(), alerts=[ALERT], diagnosed=True,
                                   headline=incident_blocks.Headline(
                                       key="MB1002:Pod istio-system/istiod", title="istiod OOMKilled",
                                       explains="explains 2 of 2 errors", confidence="high", first_step=step))
    message = incident_blocks.incident_message(view, NOW)
    assert "`kubectl -n istio-system set resources deployment/istiod --limits=memory=4Gi`" in str(message.blocks)
    assert not [b for b in message.blocks if b["type"] == "actions"]


def test_a_first_step_meshbot_can_take_is_a_button_with_the_incidents_own_action_id():
    step = incident_blocks.FirstStep(summary="let plaintext in while the CA is fixed", action="permissive-mtls prod",
                                     button_value="7:0")
    view = incident_blocks.TopView(incident=incident_row(), alerts=[ALERT], diagnosed=True,
                                   headline=incident_blocks.Headline(
                                       key="MB2001:Namespace prod", title="mTLS handshakes fail",
                                       explains="explains 1 of 1 errors", confidence="high", first_step=step))
    [actions] = [b for b in incident_blocks.incident_message(view, NOW).blocks if b["type"] == "actions"]
    [button] = actions["elements"]
    assert button["action_id"] == f"{incident_blocks.SUGGESTED_BUTTON}:0" and button["value"] == "7:0"
    assert actions["block_id"] == "incident-7"


def test_a_triage_reply_with_many_causes_and_findings_stays_within_slacks_limits():
    from commands.triage import scoped, triage

    findings = [finding(i) for i in range(300)]
    message, hidden = triage_reply.triage_report("Triage", scoped(triage(findings), []))
    assert len(message.blocks) <= blocks.MAX_BLOCKS
    assert hidden > 0 and "the full report is attached" in str(message.blocks[-1])
