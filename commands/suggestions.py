"""Suggestions for a mistyped name ("did you mean …?"): the closest names that exist, by edit distance."""

from __future__ import annotations

from collections.abc import Iterable


def edit_distance(typed: str, known: str) -> int:
    """Insertions, deletions, substitutions and swaps of two neighbours (``prdo`` -> ``prod`` is 1).

    The optimal-string-alignment variant of Damerau-Levenshtein: a swapped pair is the commonest typo, and
    plain Levenshtein would count it as two edits and rank it below unrelated names."""
    previous_row: list[int] | None = None
    row = list(range(len(known) + 1))
    for i, a in enumerate(typed, 1):
        before, previous_row, row = previous_row, row, [i] + [0] * len(known)
        for j, b in enumerate(known, 1):
            row[j] = min(previous_row[j] + 1, row[j - 1] + 1, previous_row[j - 1] + (a != b))
            if before is not None and i > 1 and j > 1 and a == known[j - 2] and typed[i - 2] == b:
                row[j] = min(row[j], before[j - 2] + 1)
    return row[-1]


def closest(typed: str, names: Iterable[str], *, limit: int = 3) -> list[str]:
    """Up to ``limit`` names a typo of ``typed`` could mean, nearest first.

    A name counts when it is within a third of the typed length (at least 2 edits) or when one is a prefix of
    the other (``prod-eu`` for ``prod``, ``diag`` for ``diagnose``)."""
    typed = typed.lower()
    allowed = max(2, len(typed) // 3)
    scored = []
    for name in set(names):
        lowered = name.lower()
        if lowered == typed:
            continue
        distance = edit_distance(typed, lowered)
        if distance <= allowed or (min(len(typed), len(lowered)) >= 3
                                   and (lowered.startswith(typed) or typed.startswith(lowered))):
            scored.append((distance, name))
    return [name for _, name in sorted(scored)[:limit]]


def did_you_mean(typed: str, names: Iterable[str], *, limit: int = 3) -> str:
    """`` Did you mean `prod`?`` (leading space included), or nothing when no name is close."""
    found = closest(typed, names, limit=limit)
    if not found:
        return ""
    options = " or ".join(f"`{name}`" for name in found)
    return f" Did you mean {options}?"


def unknown_namespace(namespace: str | None, known: Iterable[str]) -> str | None:
    """Why ``namespace`` cannot be diagnosed (it is not among ``known``), with suggestions; None when it exists
    or when nothing is known (a source that lists no namespaces cannot tell a typo from an empty namespace)."""
    names = set(known)
    if namespace is None or not names or namespace in names:
        return None
    return f"no namespace `{namespace}` exists, so nothing was checked.{did_you_mean(namespace, names)}"
