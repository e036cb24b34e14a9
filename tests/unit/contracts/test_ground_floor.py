"""The contracts are the ground floor: no module of them imports any other package of ours."""

from __future__ import annotations

import ast
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[3] / "flywheel" / "contracts"
OURS = ("flows", "steps", "stacks", "serving", "benchmarks", "flywheel")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_contracts_import_only_contracts_and_libraries() -> None:
    modules = sorted(CONTRACTS.glob("*.py"))
    assert len(modules) >= 7  # schema, validation, problem, expression, model_version, layout, events
    offending = {
        path.name: name
        for path in modules
        for name in _imports(path)
        if name.split(".")[0] in OURS and not name.startswith("flywheel.contracts")
    }
    assert offending == {}
