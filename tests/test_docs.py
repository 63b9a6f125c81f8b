"""The documentation: a short README, and no relative link in it or in docs/ that leads nowhere."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from commands.catalog import default_checks
from commands.codes import MESHBOT_CODES

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT_BYTES = 12 * 1024
"""Issue 11: the README is what a newcomer reads first; everything else belongs in docs/."""

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ID = re.compile(r"""<a\s+(?:[^>]*\s)?(?:id|name)=["']([^"']+)["']""", re.I)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, …


def documentation_pages() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [page for page in pages if page.exists()]


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where a link is a link."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    text = prose(markdown)
    return INLINE_LINK.findall(text) + REFERENCE_DEFINITION.findall(text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: plain text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch in "-_ " or unicodedata.category(ch)[0] in "LNM")
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every fragment a link into this page may use: heading slugs (numbered when repeated) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(HTML_ID.findall(markdown))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not destination.exists():
            problems.append(f"{target}: no such file")
            continue
        if fragment and destination.suffix == ".md" and fragment not in anchors(destination.read_text("utf-8")):
            problems.append(f"{target}: no heading or id '{fragment}' in {destination.relative_to(root).as_posix()}")
    return problems


@pytest.mark.parametrize("page", documentation_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_an_existing_file_and_anchor(page):
    assert broken_links(page) == []


def test_readme_stays_under_12_kib():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes; move details to docs/"


def test_readme_contributing_and_every_feature_page_exist():
    """The pages the README promises; a missing one would pass the link test by not being scanned."""
    pages = {page.relative_to(ROOT).as_posix() for page in documentation_pages()}
    expected = {"README.md", "CONTRIBUTING.md", "docs/README.md", "docs/architecture.md", "docs/cli.md",
                "docs/codes.md", "docs/slack-app.md", "docs/settings.md", "docs/incidents.md", "docs/approvals.md",
                "docs/reminders.md", "docs/deployment.md", "docs/security.md", "docs/benchmarks.md"}
    assert expected <= pages, sorted(expected - pages)


def test_docs_index_links_every_page_in_docs():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in link_targets(index)}
    pages = {page.name for page in (ROOT / "docs").glob("*.md") if page.name != "README.md"}
    assert pages <= linked, sorted(pages - linked)


def test_every_meshbot_code_url_lands_on_its_row_in_the_codes_page():
    """A finding's documentationUrl is docs/codes.md#<code>; the generated table must carry that anchor."""
    page_anchors = anchors((ROOT / "docs" / "codes.md").read_text(encoding="utf-8"))
    for entry in MESHBOT_CODES.values():
        path, _, fragment = entry.documentation_url.partition("#")
        assert path.endswith("/docs/codes.md"), entry.documentation_url
        assert fragment in page_anchors, entry.code


# -- the link checker itself: a broken link must be caught, a good one must not --------------


def test_link_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Set up\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("[gone](docs/gone.md) [bad](docs/page.md#install) [ok](docs/page.md#set-up) "
                      "[dir](docs) [web](https://example.com/x.md) `[code](nowhere.md)`\n", encoding="utf-8")
    assert broken_links(readme, root=tmp_path) == ["docs/gone.md: no such file",
                                    "docs/page.md#install: no heading or id 'install' in docs/page.md"]


def test_github_slugs_drop_punctuation_and_code_marks():
    assert github_slug("`/mesh` commands") == "mesh-commands"
    assert github_slug("Kubernetes permissions (least privilege)") == "kubernetes-permissions-least-privilege"
    assert github_slug("4. Prometheus and Alertmanager") == "4-prometheus-and-alertmanager"
    assert github_slug("Slack: 1,000 `/mesh diagnose` requests") == "slack-1000-mesh-diagnose-requests"


def test_repeated_headings_get_numbered_anchors():
    assert {"speed", "speed-1"} <= anchors("## Speed\n\ntext\n\n## Speed\n")


def test_cli_page_table_of_checks_matches_the_registry():
    text = (ROOT / "docs" / "codes.md").read_text(encoding="utf-8")
    block = text.split("<!-- checks:start -->", 1)[1].split("<!-- checks:end -->", 1)[0].strip()
    assert block == default_checks().markdown_table(), "run `meshbot checks --markdown` and paste it into docs/codes.md"
