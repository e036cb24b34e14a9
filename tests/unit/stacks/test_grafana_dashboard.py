"""The shipped Grafana dashboard is what the code builds, has the fields Grafana's import needs, conforms to
Grafana's dashboard schema (the types grafana-foundation-sdk generates from it: every field known, every
enumerated value allowed, nothing lost in a round trip), and every query parses as PromQL (promtool,
Debian's prometheus package) and names only series the service exports or the SLO rules record."""

from __future__ import annotations

import builtins
import enum
import json
import keyword
import re
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import yaml

from stacks.components import grafana, prometheus
from stacks.config import PrometheusConfig

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "docs" / "grafana" / "flywheel-dashboard.json"
INSTALLER = ROOT / "scripts" / "apt-install.sh"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    done = subprocess.run(
        ["bash", str(INSTALLER), "prometheus", "promtool"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"prometheus (promtool) could not be installed: {done.stderr[-2000:]}"
    return done.stdout.strip().splitlines()[-1]


def test_the_shipped_dashboard_is_the_built_one() -> None:
    assert json.loads(SHIPPED.read_text()) == grafana.dashboard()  # `flywheel metrics dashboard` rewrites it


def test_it_has_what_an_import_needs() -> None:
    board = grafana.dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["model"]["type"] == "query"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24  # Grafana's grid is 24 wide
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])


def test_every_query_is_promql_on_series_that_exist(tmp_path: Path) -> None:
    exprs = [t["expr"].replace("$model", ".*") for p in grafana.dashboard()["panels"] for t in p["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    recorded = {
        r["record"] for r in prometheus.rules(PrometheusConfig())["groups"][0]["rules"] if "record" in r
    }
    exported = {
        "flywheel_requests_total",
        "flywheel_model_version",
        "flywheel_version_scored_rows_total",
        "flywheel_shadow_decisions_total",
    }
    for expr in exprs:
        for name in re.findall(r"\b(flywheel[:_][a-z0-9_:]+)", expr):
            assert name in recorded | exported, f"{name} is neither exported nor recorded"


def _enum_of(hint: Any) -> type[enum.Enum] | None:
    """The enumeration a field's type allows (``Optional[LegendDisplayMode]`` -> LegendDisplayMode)."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _attribute(key: str) -> str:
    """The SDK's attribute for a JSON key: ``gridPos`` -> ``grid_pos``; a Python name gets ``_val``
    (``type`` -> ``type_val``, ``from`` -> ``from_val``)."""
    name = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
    return f"{name}_val" if keyword.iskeyword(name) or hasattr(builtins, name) else name


def _conformance(decoded: Any, data: dict[str, Any], path: str, problems: list[str]) -> None:
    """What of ``data`` Grafana's schema does not know, or does not allow, with its path."""
    emitted = decoded.to_json()
    hints = typing.get_type_hints(type(decoded))
    for key, value in data.items():
        where = f"{path}.{key}"
        if key not in emitted:
            problems.append(f"{where}: not a field of {type(decoded).__name__}")
            continue
        kind = _enum_of(hints.get(_attribute(key)))
        if kind is not None and value is not None:
            try:
                kind(value)
            except ValueError:
                problems.append(f"{where}: {value!r} is not one of {[m.value for m in kind]}")
        inner = emitted[key]
        if hasattr(inner, "to_json") and isinstance(value, dict):
            _conformance(inner, value, where, problems)
        elif isinstance(inner, list) and isinstance(value, list):
            for i, (item, raw) in enumerate(zip(inner, value, strict=True)):
                if hasattr(item, "to_json") and isinstance(raw, dict):
                    _conformance(item, raw, f"{where}[{i}]", problems)


def test_it_conforms_to_grafanas_dashboard_schema() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel
    from grafana_foundation_sdk.models.prometheus import Dataquery
    from grafana_foundation_sdk.models.timeseries import Options

    register_default_plugins()  # panels' options by panel type, queries by data source type
    board = grafana.dashboard()
    decoded = Dashboard.from_json(board)
    problems: list[str] = []
    _conformance(decoded, board, "", problems)
    assert not problems, "\n".join(problems)
    assert decoded.panels and all(isinstance(p, Panel) for p in decoded.panels)
    assert all(isinstance(p.options, Options) for p in decoded.panels)  # decoded as timeseries panels
    assert all(isinstance(t, Dataquery) for p in decoded.panels for t in p.targets or [])
    again = json.loads(JSONEncoder().encode(decoded))
    assert again["panels"][0]["targets"] == board["panels"][0]["targets"]  # nothing lost on the way


def test_the_conformance_check_finds_what_grafana_would_not_know() -> None:
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    board = grafana.dashboard()
    board["panels"][0]["gridPosition"] = board["panels"][0].pop("gridPos")
    board["panels"][1]["options"]["legend"]["displayMode"] = "sideways"
    board["graphTooltip"] = "shared"
    problems: list[str] = []
    _conformance(Dashboard.from_json(board), board, "", problems)
    assert any(p.startswith(".panels[0].gridPosition: not a field") for p in problems), problems
    assert any(p.startswith(".panels[1].options.legend.displayMode: 'sideways'") for p in problems), problems
    assert any(p.startswith(".graphTooltip: 'shared' is not one of [0, 1, 2]") for p in problems), problems
