"""The shipped Grafana dashboard is what the code builds, has the fields Grafana's import needs, and every
query parses as PromQL (promtool, Debian's prometheus package) and names only series the service exports or
the SLO rules record."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

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
