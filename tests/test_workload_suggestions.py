"""A mistyped workload is refused with "did you mean" (issue 27): every `/mesh` action that names a Deployment.

`/mesh restart chekout -n prod`, `/mesh bypass chekout -n prod` and `/mesh memory chekout -n prod --limit 1Gi`
plan against the API server (kmock's emulator): an unknown Deployment is an error naming the closest ones in
that namespace, and when the namespace is the typo the answer says so instead.  Nothing is planned either way.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from commands.actions import parse_action, plan_action
from commands.errors import UserError
from tests.support.kube import FakeKube
from tests.test_actions import deployment, meshed_namespace, namespace

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
WORKLOAD_ACTIONS = ("restart {name} -n {ns}", "bypass {name} -n {ns}", "memory {name} -n {ns} --limit 1Gi")


@pytest.fixture
def shop(kube: FakeKube) -> FakeKube:
    kube.add(meshed_namespace("prod"), namespace("staging"),
             deployment("checkout", "prod"), deployment("cart", "prod"), deployment("payment", "prod"))
    return kube


def refusal(kube: FakeKube, text: str) -> str:
    with pytest.raises(UserError) as refused:
        plan_action(kube.client(), parse_action(text.split()), NOW)
    return str(refused.value)


@pytest.mark.parametrize("command", WORKLOAD_ACTIONS)
def test_an_unknown_deployment_is_refused_with_the_closest_one_in_its_namespace(shop, command):
    answer = refusal(shop, command.format(name="chekout", ns="prod"))
    assert answer == ("there is no Deployment chekout in namespace prod, so nothing was planned. "
                      "Did you mean `checkout`?")


@pytest.mark.parametrize("command", WORKLOAD_ACTIONS)
def test_a_mistyped_namespace_is_named_as_the_problem_with_its_suggestion(shop, command):
    answer = refusal(shop, command.format(name="checkout", ns="prdo"))
    assert answer == ("namespace prdo does not exist, so there is no Deployment checkout in it and nothing was "
                      "planned. Did you mean `prod`?")


def test_a_name_like_nothing_there_lists_the_namespaces_deployments_instead(shop):
    answer = refusal(shop, "restart zzzzzzzz -n prod")
    assert answer.endswith("Its Deployments: `cart`, `checkout`, `payment`.")


def test_a_namespace_scoped_action_on_a_mistyped_namespace_suggests_the_namespace(shop):
    assert refusal(shop, "bypass namespace prdo") == ("namespace prdo does not exist, so nothing was planned. "
                                                      "Did you mean `prod`?")


def test_a_diagnosis_typed_with_a_workload_says_checks_take_the_namespace():
    from bot.slack.slash import UsageError, diagnose_parser

    with pytest.raises(UsageError) as refused:
        diagnose_parser("diagnose", ("all",))(["prod/chekout"], "prod/chekout")
    assert str(refused.value) == ("`/mesh diagnose` takes a namespace, not a workload: `/mesh diagnose prod` checks "
                                  "every workload there, `chekout` included if it exists (its findings name it).")
