"""The card's effect lines: however many edges a look reports, the card keeps the first ones and the last line,
which says where the traffic was measured (Prometheus or Envoy's counters)."""

from __future__ import annotations

from bot.approvals.rule import RequestState
from commands.actions.plan import Plan
from tests.test_approval_cards import card_request, card_text

SOURCE = "traffic measured by Prometheus http://prometheus:9090 (istio_requests_total, ...)"


def test_a_look_with_many_edges_keeps_the_line_saying_where_traffic_was_measured():
    edges = [f"shop/caller-{n} -> shop/payments: error share 90% \u2192 0% in 3 minutes" for n in range(12)]
    verification = {"effect": {"outcome": "seen", "lines": [*edges, SOURCE]}}
    text = card_text(card_request(Plan("bypass namespace shop", "bypass", ()), state=RequestState.SUCCEEDED,
                                  verification=verification))
    assert "caller-0 " in text and "caller-5 " in text and "caller-6 " not in text
    assert "\u2026 and 6 more" in text and SOURCE in text
