"""kmock's choice of reaction per request, in constant time instead of a walk over every request so far.

kmock 0.8 (``RawHandler._handle``) decides whether a reaction applies to a request with ``request in
reaction._source``: the view iterates every request the server has recorded, re-applies its filters to each, and
compares identities.  With ~14 reactions per emulator that is O(requests so far) per request: measured here, 30 ms
per request after 500 requests and over 200 ms after 2,000.  ``meshbot demo``'s API server (bot.demo.cluster)
would slow down the longer the demo stays open, and the tests' emulator (tests/support/kube.py, which imports this
module; bot never imports tests) would spend most of a long test's CPU there.

``sees(view, request)`` answers the same question from the request alone for the views the emulator's reactions
hang on (filters, priorities, the root) and falls back to kmock's own membership test for every other view;
tests/test_kmock_matching.py checks it answers as kmock does.
"""

from __future__ import annotations

from typing import Any

from kmock._internal import apps, dsl, rendering


def sees(view: dsl.View, request: rendering.Request) -> bool:
    """``request in view``: whether ``view`` lets ``request`` through, as kmock's iteration would answer."""
    kind = type(view)
    if kind is dsl.Filter:
        # Filter.__iter__ yields the requests of its source that its criteria accept.
        return bool(view.criteria(request)) and sees(view._source, request)  # type: ignore[attr-defined]
    if kind is dsl.Priority:
        # A priority only orders reactions; it yields its source unchanged (Chained.__iter__).
        return sees(view._source, request)  # type: ignore[attr-defined]
    if isinstance(view, dsl.Root) and kind.__iter__ is dsl.Root.__iter__:
        # A root yields the requests it recorded; the one being served is among the newest.
        return any(recorded is request for recorded in reversed(view._requests))
    return request in view


class ConstantTimeMatching(apps.RawHandler):
    """kmock's ``RawHandler._handle`` (0.8) with ``sees`` in place of ``request in payload._source``.

    Mix in after ``kmock.KubernetesEmulator`` so the emulator's own ``_handle`` still runs first and calls this."""

    __slots__ = ()

    async def _handle(self, request: rendering.Request) -> Any:
        # As kmock orders them: highest priority first, shorter priority tuples padded with zeroes.
        priorities = [payload.priorities for payload in self._payloads]
        width = max((len(priority) for priority in priorities), default=0)
        keys = [tuple(-p for p in priority) + (0,) * (width - len(priority)) for priority in priorities]
        payloads = [self._payloads[index] for index in sorted(range(len(keys)), key=keys.__getitem__)]
        for payload in payloads:
            if sees(payload._source, request) and not payload._disabled.is_set():  # type: ignore[attr-defined]
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:  # mismatched or depleted, as kmock handles it
                    payload._disabled.set()  # type: ignore[attr-defined]
                except NotImplementedError:  # matched, but nothing to respond with
                    pass
        # kmock's own protocol, not an unfinished marker: its root raises NotImplementedError when no reaction
        # matches (and a reaction raises it for "nothing to respond with"), and kmock answers that request itself.
        raise NotImplementedError("no reaction matches the request (kmock needs a fallback reaction)")
