"""The code catalogue and docs/codes.md stay in step."""

from __future__ import annotations

from pathlib import Path

from commands.codes import ALL_CODES, ISTIO_CODES, MESHBOT_CODES, finding, markdown_table

CODES_PAGE = Path(__file__).resolve().parent.parent / "docs" / "codes.md"


def test_codes_page_meshbot_code_table_matches_the_catalogue():
    text = CODES_PAGE.read_text()
    block = text.split("<!-- codes:start -->", 1)[1].split("<!-- codes:end -->", 1)[0].strip()
    assert block == markdown_table(), "run `meshbot codes --markdown` and paste it into docs/codes.md"


def test_codes_page_lists_every_istio_code_with_its_level():
    rows = {line.split("|")[1].strip(): line for line in CODES_PAGE.read_text().splitlines()
            if line.startswith("| IST")}
    for entry in ISTIO_CODES.values():
        assert entry.code in rows, entry.code
        assert entry.name in rows[entry.code] and rows[entry.code].rstrip().endswith(f"| {entry.level} |")


def test_every_template_formats_with_its_named_fields():
    import string

    for entry in ALL_CODES.values():
        fields = {name for _, name, _, _ in string.Formatter().parse(entry.template) if name}
        made = finding(entry.code, origin="Pod x/y", **{name: f"<{name}>" for name in fields})
        assert made.level == entry.level
        assert "{" not in made.message


def test_codes_are_unique_and_prefixed_by_their_family():
    assert not set(ISTIO_CODES) & set(MESHBOT_CODES)
    assert all(code.startswith("IST") for code in ISTIO_CODES)
    assert all(code.startswith("MB") for code in MESHBOT_CODES)
