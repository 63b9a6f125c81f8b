"""CONTRIBUTING.md's recipes, followed with only the files they name.

"Add a /mesh sub-command" is one ``SlashCommands.add`` call in a feature's ``register``: here the call is
made on the registry of a real ``build()``, and the new sub-command answers signed Slack requests, shows in
``/mesh help``, refuses an author without its permission, runs on its pool and gets a docs row, with no
other edit.  "Add a check" is applied for real to a copy of the repository (the recipe's six files, and
nothing else), and the tests that hold every list of checks to the registry must pass on that copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bot.slack.roles import Permission
from bot.slack.slash import SlashCommands, expect_at_most, namespace_argument
from tests.support.bot import quiesce
from tests.support.slack import post_signed, slash_command_body

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
MAX_FILES_PER_RECIPE = 5
"""Issue 20: adding a check or a sub-command touches at most five files."""
CHECK_RECIPE_FILES = MAX_FILES_PER_RECIPE
"""The check table and the code table are generated into one page (docs/codes.md), so a check with codes
touches five files."""


# -- the sub-command, exactly as the recipe writes it ------------------------------------------


@dataclass(frozen=True)
class GatewaysRequest:
    namespace: str | None


def parse_gateways(words: list[str], rest: str) -> GatewaysRequest:
    expect_at_most(words, 1, "gateways [NAMESPACE]")
    return GatewaysRequest(namespace_argument(words[0]) if words else None)


@dataclass
class GatewaysCommands:
    ran_on: list[str]

    def answer(self, who, request: GatewaysRequest) -> None:
        self.ran_on.append(threading.current_thread().name)
        who.tell(f"gateways in {request.namespace}: none")


def register(commands: SlashCommands, gateways: GatewaysCommands) -> None:
    commands.add("gateways", usage="gateways [NAMESPACE]", summary="gateway listeners and their certificates",
                 parse=parse_gateways, handle=gateways.answer, permission=Permission.REQUEST, background=True)


def slash(meshbot, fake_slack, text: str, user_id: str = "UALICE"):
    body = slash_command_body(text, user_id=user_id, response_url=fake_slack.response_url())
    return post_signed(f"{meshbot.url}/slack/events", body)


def test_a_subcommand_registered_in_one_call_is_routed_listed_guarded_and_documented(meshbot, fake_slack):
    gateways = GatewaysCommands(ran_on=[])
    register(meshbot.services.slash, gateways)  # what the feature's register() does inside build()

    assert "`/mesh gateways [NAMESPACE]` \u2014 gateway listeners and their certificates" in \
        slash(meshbot, fake_slack, "help").json()["text"]
    assert "| `/mesh gateways [NAMESPACE]` | gateway listeners and their certificates | request | worker pool |" \
        in meshbot.services.slash.markdown_table()

    assert slash(meshbot, fake_slack, "gateways prod").status_code == 200  # UALICE is a responder
    answer = fake_slack.wait_for(lambda: fake_slack.responses, what="the answer")[0]
    assert answer["text"] == "gateways in prod: none" and answer["response_type"] == "ephemeral"
    assert gateways.ran_on[0].startswith("work")  # background=True: the worker pool, not the messengers

    slash(meshbot, fake_slack, "gateways prod", user_id="UMALLORY")
    refusal = fake_slack.wait_for(lambda: fake_slack.responses[1:], what="the refusal")[0]
    assert refusal["text"].startswith("Sorry, only the responders (MESHBOT_RESPONDERS) and approvers may ask")
    quiesce(meshbot)
    assert len(gateways.ran_on) == 1


def recipe_files(title: str) -> list[str]:
    """The paths a CONTRIBUTING recipe's *Files* line names (in backticks)."""
    section = CONTRIBUTING.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    line = re.search(r"^\*\*Files\*\*[^\n]*(?:\n(?!\n)[^\n]*)*", section, re.M)
    assert line, f"the recipe '{title}' has no **Files** line"
    return [name for name in re.findall(r"`([^`]+)`", line.group(0)) if "/" in name]


def test_the_subcommand_recipe_names_at_most_five_files_and_the_check_recipe_six():
    assert 1 <= len(recipe_files("Add a `/mesh` sub-command")) <= MAX_FILES_PER_RECIPE
    assert len(recipe_files("Add a check")) == CHECK_RECIPE_FILES


# -- the check, applied to a copy of the repository --------------------------------------------

CHECK_MODULE = '''\
"""Sidecars older than istiod (a check written by following CONTRIBUTING.md)."""

from __future__ import annotations

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.findings import Finding


@check("sidecar-versions", kinds=("Pod",), summary="sidecars older than istiod")
def sidecar_versions(ctx: CheckContext) -> list[Finding]:
    return []
'''

CHECK_TEST = '''\
from commands.catalog import default_checks


def test_the_new_check_is_in_the_catalogue():
    assert "sidecar-versions" in default_checks().names()
'''

CODE_ENTRY = '''\
    _code("MB9001", "SidecarOlderThanIstiod", W, "sidecar-versions",
          "sidecar {pod} runs {version}, older than istiod",
          "A sidecar injected before the last control-plane upgrade."),
'''

PROOF = '''\
import shutil
import tempfile
from pathlib import Path

from bot.cli import build_parser
from bot.incidents.playbook_loader import load_playbooks
from bot.slack.slash import SlashCommands, add_diagnoses
from commands.catalog import default_checks

checks = default_checks()
assert checks.names()[-1] == "sidecar-versions", checks.names()
assert build_parser().parse_args(["diagnose", "sidecar-versions"])  # argparse exits 2 on an unknown choice
commands = SlashCommands()
add_diagnoses(commands, checks, lambda who, request: None)
assert "`/mesh sidecar-versions [NAMESPACE]` \\u2014 sidecars older than istiod" in commands.help_text()
assert commands.parse("sidecar-versions prod").checks == ("sidecar-versions",)
playbooks = Path(tempfile.mkdtemp()) / "playbooks"
shutil.copytree("playbooks", playbooks)  # the shipped ones, fallback included, plus one naming the new check
(playbooks / "old-sidecars.yaml").write_text(
    "# SidecarsOld: a playbook naming the new check\\nname: old-sidecars\\ndescription: sidecars lag istiod.\\n"
    "alertname: SidecarsOld\\ndiagnostics:\\n  - check: sidecar-versions\\nremediations: []\\n")
[playbook] = [p for p in load_playbooks(playbooks).playbooks if p.name == "old-sidecars"]
assert [step.check for step in playbook.diagnostics] == ["sidecar-versions"]
print("ok")
'''


def copy_of_repository(target: Path) -> Path:
    """The working tree as it is (uncommitted edits included), without git, the venv or caches."""
    ignore = shutil.ignore_patterns(".git", ".venv", ".venv-checkov", ".cache", "__pycache__", "*.egg-info",
                                    ".artifacts", ".ruff_cache", ".mypy_cache", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # The copy comes first on the path, so its edited modules are the ones imported.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def regenerate(repo: Path, command: str, page: str) -> None:
    """``meshbot COMMAND --markdown`` pasted between the page's ``COMMAND:`` markers, as the recipe says."""
    table = run(["-m", "bot.cli", command, "--markdown"], repo)
    assert table.returncode == 0, table.stderr
    path = repo / page
    start, end = f"<!-- {command}:start -->", f"<!-- {command}:end -->"
    before, rest = path.read_text().split(start, 1)
    path.write_text(f"{before}{start}\n{table.stdout.strip()}\n{end}{rest.split(end, 1)[1]}")


def test_adding_a_check_with_only_the_recipes_files_keeps_every_list_of_checks_in_step(tmp_path):
    repo = copy_of_repository(tmp_path / "repo")
    touched = {
        "commands/checks/sidecar_versions.py": lambda path: path.write_text(CHECK_MODULE),
        "commands/catalog.py": lambda path: path.write_text(
            path.read_text().replace("from commands.checks.registry import CheckRegistry\n",
                                     "from commands.checks.registry import CheckRegistry\n"
                                     "from commands.checks.sidecar_versions import sidecar_versions\n")
            .replace("        analyze,\n    ])", "        analyze,\n        sidecar_versions,\n    ])")),
        "commands/codes.py": lambda path: path.write_text(
            path.read_text().replace("\n]}\n\nALL_CODES", "\n" + CODE_ENTRY + "]}\n\nALL_CODES", 1)),
        "tests/test_sidecar_versions.py": lambda path: path.write_text(CHECK_TEST),
    }
    for relative, edit in touched.items():
        edit(repo / relative)
    for command, page in (("codes", "docs/codes.md"), ("checks", "docs/codes.md")):
        regenerate(repo, command, page)
        touched[page] = None
    assert set(touched) <= set(recipe_files("Add a check"))
    assert len(touched) == CHECK_RECIPE_FILES

    proof = run(["-c", PROOF], repo)
    assert proof.returncode == 0 and proof.stdout.strip() == "ok", proof.stderr
    tests = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "tests/test_sidecar_versions.py",
                 "tests/test_codes.py", "tests/test_docs.py", "tests/test_wiring.py", "tests/test_slash.py"], repo)
    assert tests.returncode == 0, tests.stdout[-3000:]
