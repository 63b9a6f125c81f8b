"""A typo'd namespace is answered to its author alone; nothing is posted in the channel (issue 27, item 1).

`/mesh status prdo` used to post a public "Running…" and then edit it to "✘ … not run": noise in the incident
channel at 3 AM.  The registry checks the namespace a request names before its handler runs, so the refusal
(with its "did you mean") goes only to the slash command's response_url.  Every sub-command that takes a
namespace is covered, on the bundled scenario and on an emulated cluster (kmock), and the actions, which
check namespace and Deployment when they plan, are shown to refuse privately too.
"""

from __future__ import annotations

import itertools

import pytest

from bot.slack.slash import DiagnoseRequest, NamesANamespace, SlashCommands, UnknownNamespace, UsageError
from commands.catalog import default_checks
from tests.support.bot import built_bot, quiesce
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack, post_signed, slash_command_body
from tests.test_actions import deployment, meshed_namespace, namespace

NAMESPACED = (*default_checks().names(), "diagnose", "timeline")
"""The sub-commands whose request names a namespace (``test_this_list_is_what_the_registry_says`` keeps it true)."""
REFUSAL = ":warning: no namespace `prdo` exists, so nothing was checked. Did you mean `prod`?"
_answer_names = itertools.count(1)


def type_command(meshbot, fake_slack: FakeSlack, text: str) -> list[str]:
    """``/mesh text`` as Slack sends it; once the bot has settled, the author's private answers."""
    name = f"typo{next(_answer_names)}"
    body = slash_command_body(text, response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    fake_slack.wait_for(lambda: fake_slack.answers_to(name), timeout=30, what=f"the answer to /mesh {text}")
    quiesce(meshbot)
    return fake_slack.answers_to(name)


def channel_calls(fake_slack: FakeSlack) -> list[str]:
    """What anyone in the channel would see: posts, edits, uploads."""
    return [c.method for c in fake_slack.calls if c.method.startswith(("chat.", "files."))]


def test_this_list_is_what_the_registry_says_names_a_namespace(tmp_path):
    with built_bot(tmp_path) as meshbot:
        commands: SlashCommands = meshbot.services.slash
        named = []
        for name in commands.names():
            try:
                request = commands.parse(f"{name} prod")
            except UsageError:
                continue
            if isinstance(request, NamesANamespace) and request.namespace == "prod":
                named.append(name)
    assert sorted(named) == sorted(NAMESPACED)


@pytest.mark.parametrize("subcommand", NAMESPACED)
def test_a_typod_namespace_gets_one_private_answer_with_the_suggestion_and_no_post(meshbot, fake_slack, subcommand):
    answers = type_command(meshbot, fake_slack, f"{subcommand} prdo")

    assert answers == [REFUSAL]
    assert fake_slack.of("chat.postMessage") == []
    assert channel_calls(fake_slack) == []


@pytest.mark.parametrize("subcommand, posted", [
    ("status", "Running status for prod, requested by <@UALICE>"),
    ("timeline", "Timeline \u00b7 prod \u00b7 last 30 minutes (asked by <@UALICE>)"),
])
def test_a_namespace_that_exists_still_posts_in_the_channel(meshbot, fake_slack, subcommand, posted):
    body = slash_command_body(f"{subcommand} prod", response_url=fake_slack.response_url())
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200

    fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), timeout=30, what="the top-level post")
    quiesce(meshbot)
    [top] = fake_slack.messages(top_level=True)
    assert top["text"] == posted
    assert fake_slack.responses == [], "nothing refused"


def test_the_whole_mesh_is_never_checked_against_the_namespace_list(meshbot, fake_slack):
    body = slash_command_body("status", response_url=fake_slack.response_url())
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200

    fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), timeout=30, what="the top-level post")
    [top] = fake_slack.messages(top_level=True)
    assert top["text"] == "Running status for all namespaces, requested by <@UALICE>"


# -- the registry's check, with no Slack at all ------------------------------------------------


def registry_listing(namespaces) -> tuple[SlashCommands, list]:
    commands, handled = SlashCommands(), []
    commands.add("status", usage="status [NAMESPACE]", summary="s", parse=lambda words, rest: None,
                 handle=lambda who, request: handled.append(request))
    commands.refuse_unknown_namespaces(lambda: namespaces)
    return commands, handled


def handle(commands: SlashCommands, request) -> None:
    [subcommand] = [s for s in commands if s.name == "status"]
    subcommand.handle(None, request)


def test_the_handler_never_runs_for_a_namespace_that_does_not_exist():
    commands, handled = registry_listing({"prod", "staging"})
    with pytest.raises(UnknownNamespace, match="Did you mean `prod`"):
        handle(commands, DiagnoseRequest("status", ("status",), "prdo"))
    assert handled == []


def test_a_namespace_list_that_cannot_be_vouched_for_refuses_nothing():
    # The namespaces could not be listed (forbidden, API down): the diagnosis runs and says what it could not read,
    # rather than a refusal that blames the person's typing for meshbot's missing permission.
    commands, handled = registry_listing(None)
    request = DiagnoseRequest("status", ("status",), "prdo")
    handle(commands, request)
    assert handled == [request]


# -- a live cluster (kmock): the same check, and the actions' own ----------------------------------


@pytest.fixture
def cluster_bot(bot_factory, kube: FakeKube, tmp_path):
    kube.add(meshed_namespace("prod"), namespace("istio-system"), deployment("istiod", "istio-system"),
             deployment("checkout", "prod"))
    return bot_factory(scenario=None, kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
                       kube_context="kmock", kube_timeout=5.0, approvers=("UBOB", "UCAROL"), required_approvals=2,
                       channel="CINCIDENT")


@pytest.mark.parametrize("text, refusal", [
    ("diagnose prdo", REFUSAL),
    ("certs prdo", REFUSAL),
    ("restart checkout -n prdo", "namespace prdo does not exist, so there is no Deployment checkout in it"),
    ("restart chekout -n prod", "there is no Deployment chekout in namespace prod"),
    ("bypass namespace prdo", "namespace prdo does not exist, so nothing was planned. Did you mean `prod`?"),
    ("memory checkout -n prdo --limit 1Gi", "namespace prdo does not exist"),
])
def test_on_a_live_cluster_a_typo_is_answered_privately_and_nothing_is_posted(cluster_bot, fake_slack, text,
                                                                               refusal):
    [answer] = type_command(cluster_bot, fake_slack, text)

    assert refusal in answer
    assert "Did you mean" in answer
    assert fake_slack.of("chat.postMessage") == []
