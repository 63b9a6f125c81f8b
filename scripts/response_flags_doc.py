"""Regenerate the table in docs/response-flags.md from ``commands.checks.envoy.flags.FAILURE_MODES``.

``python scripts/response_flags_doc.py`` rewrites the block between the flags markers; tests/test_envoy_flags.py
fails when the page and the table differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from commands.checks.envoy.flags import FAILURE_MODES  # noqa: E402

PAGE = ROOT / "docs" / "response-flags.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    PAGE.write_text(f"{head}{START}\n{FAILURE_MODES.markdown()}{END}{tail}", encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
