"""Block Kit rendering stays inside Slack's limits whatever the findings look like."""

from __future__ import annotations

from bot.slack import blocks
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


def test_empty_report_says_no_problems():
    message, hidden = blocks.findings_report("status \u00b7 prod", [])
    assert hidden == 0 and "No problems found" in str(message.blocks)


def test_a_special_mention_in_an_alert_title_or_note_notifies_nobody():
    message = blocks.note_message("UALICE", "paging <!channel> and <!subteam^S0SRE>")
    assert "<!" not in message.text and "&lt;!channel>" in message.text
    assert "<@UALICE>" in message.text, "meshbot's own mention of the author stays"
    assert "<!" not in str(message.blocks)
