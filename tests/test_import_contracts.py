"""The import contracts hold without exceptions between meshbot's own modules (issue 20: layers without ignores).

An ``ignore_imports`` entry naming two meshbot modules means a module sits in the wrong layer; only entries
that let one client module import its outside library (kubernetes, httpx, slack_sdk, …) are allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def import_linter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def internal_ignores(contracts: list[dict], own_packages: set[str]) -> list[str]:
    """The ignored imports whose imported module is one of ours."""
    found = []
    for contract in contracts:
        for entry in contract.get("ignore_imports", []):
            imported = entry.split("->")[1].strip()
            if imported.split(".")[0] in own_packages:
                found.append(f"{contract['name']}: {entry}")
    return found


def test_no_contract_ignores_an_import_between_meshbot_modules():
    config = import_linter_config()

    assert internal_ignores(config["contracts"], set(config["root_packages"])) == []


def test_an_ignore_naming_two_meshbot_modules_is_reported_and_one_naming_a_library_is_not():
    contracts = [{"name": "layers", "ignore_imports": ["commands.clients.kube -> commands.cluster.kinds",
                                                       "commands.clients.kube -> kubernetes"]}]

    assert internal_ignores(contracts, {"commands", "bot"}) == ["layers: commands.clients.kube -> commands.cluster.kinds"]
