"""A real Prometheus (Debian's package) scrapes a real service with the rules made from the SLOs: quick
single-row requests keep the latency SLO, then 1,000-row requests (the injected slowdown) break it and the
alert fires; ``flywheel metrics status`` says so. promtool accepts the generated configuration and rules."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from stacks.components import prometheus
from stacks.config import PrometheusConfig, ServiceLevelObjectives
from stacks.loader import load_stack
from tests.e2e.support import (
    Timeline,
    free_port,
    isolated_home,
    serve_model,
    start_detached,
    stop_detached,
    wait_for,
)
from tests.unit.serving.conftest import record_from, train_and_register

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODEL = "flight-delay"
INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "apt-install.sh"
SLO_MS = 2.0


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    done = subprocess.run(
        ["bash", str(INSTALLER), "prometheus", name], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"prometheus could not be installed: {done.stderr[-2000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory, "prometheus-home") as home:
        yield home


@pytest.fixture(scope="module")
def running(home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """A champion, its service, and a Prometheus scraping it every second with a 2 ms p99 SLO."""
    champion = train_and_register(flights_sample, weather)
    service_port, prom_port = free_port(), free_port()
    config = PrometheusConfig(
        url=f"http://127.0.0.1:{prom_port}",
        port=prom_port,
        scrape_interval_s=1,
        evaluation_interval_s=1,
        slos=ServiceLevelObjectives(latency_p99_ms=SLO_MS, alert_for_s=0),
    )
    folder = home / "prometheus"
    path = prometheus.write_config(config, folder, [prometheus.Target(f"127.0.0.1:{service_port}", MODEL)])
    checked = subprocess.run(
        [_binary("promtool"), "check", "config", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = home / "service.log"
    service = serve_model(MODEL, service_port, log, FLYWHEEL_PROFILING="off", FLYWHEEL_WATCH_INTERVAL_S="0.5")
    server = start_detached(
        [
            _binary("prometheus"),
            f"--config.file={path}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        home / "prometheus.log",
    )
    api = prometheus.PrometheusAPI(config)
    url = f"http://127.0.0.1:{service_port}"
    try:
        wait_for(lambda: requests.get(f"{url}/ready", timeout=2).status_code == 200, 120, "the service")
        wait_for(lambda: any(t["health"] == "up" for t in api.targets()), 60, "Prometheus to scrape it", 0.5)
        yield {"url": url, "api": api, "config": config, "champion": champion}
    finally:
        stop_detached(server)
        stop_detached(service)


def _send(url: str, body: Any, path: str, seconds: float) -> None:
    session = requests.Session()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert session.post(f"{url}{path}", json=body, timeout=10).status_code == 200


def test_an_injected_slowdown_fires_the_latency_alert(running: dict[str, Any], home: Path) -> None:
    say = Timeline()
    url, api, config, champion = running["url"], running["api"], running["config"], running["champion"]
    say("Prometheus scrapes the service")
    record = record_from(champion["test"], 0)
    rows = len(champion["test"].frame)
    batch = {"records": [record_from(champion["test"], i % rows) for i in range(1000)]}
    _send(url, record, "/predict", 8)
    p99 = wait_for(lambda: api.query(prometheus.LATENCY_P99), 30, "the p99 recording rule", 0.5)
    say(f"single rows: p99 {p99[0][1] * 1000:.2f} ms against the {SLO_MS:g} ms SLO")
    assert p99[0][1] * 1000 < SLO_MS
    assert not [a for a in api.alerts() if a["labels"]["alertname"] == "FlywheelLatencySLO"]
    started = time.monotonic()
    fired: list[Any] = []

    def firing() -> bool:
        _send(url, batch, "/predict/batch", 1.0)  # the slowdown: every request scores 1,000 rows
        alerts = api.alerts()
        fired[:] = [
            a for a in alerts if a["labels"]["alertname"] == "FlywheelLatencySLO" and a["state"] == "firing"
        ]
        return bool(fired)

    wait_for(firing, 90, "the latency alert to fire", every=0)
    say(f"FlywheelLatencySLO firing after {time.monotonic() - started:.1f} s of 1,000-row requests")
    assert fired[0]["labels"]["model"] == MODEL
    doc = load_stack("local").to_dict()
    doc["components"]["metrics"] = {"name": "p", "flavor": "prometheus", "configuration": {"url": config.url}}
    stack = home / "stack.yaml"
    stack.write_text(yaml.safe_dump(doc))
    shown = CliRunner().invoke(app, ["metrics", "status", "--stack", str(stack)])
    assert shown.exit_code == 1, shown.output
    assert "FIRING FlywheelLatencySLO (flight-delay)" in shown.output and "p99_latency_ms" in shown.output
    # what the monitoring report shows: each SLO against its target, the budget left, the alerts firing
    from steps.monitor import report, service_level

    level = service_level.read(config, MODEL)
    assert level.figures["p99_latency_ms"] is not None and level.figures["p99_latency_ms"] > SLO_MS
    assert level.figures["availability"] == 1.0 and level.figures["error_budget_left"] == 1.0
    assert "FlywheelLatencySLO" in level.firing
    table = report.service_level_table(level)
    assert table is not None and ["availability", "1", "0.999", "met"] in table.rows
    assert next(r for r in table.rows if r[0] == "p99 latency ms")[3] == "BROKEN"


def test_the_guardrails_read_the_same_figures_from_prometheus(
    running: dict[str, Any], flights_sample: pd.DataFrame, weather: pd.DataFrame
) -> None:
    from flywheel.contracts.rollout import RolloutState
    from stacks.components import model_versions
    from steps.rollout import guardrails

    url, api, champion = running["url"], running["api"], running["champion"]
    candidate = train_and_register(flights_sample, weather, rounds=40)
    model_versions.make_champion(MODEL, champion["version"])
    state = RolloutState(candidate["version"], champion["version"], "shadow", 0.0, 1, 2, time.time())
    model_versions.set_rollout(MODEL, state)
    try:
        time.sleep(2)  # the service's watch ticks load the candidate
        _send(url, record_from(champion["test"], 1), "/predict", 3)
        time.sleep(3)  # the shadow thread's last scoring, then a scrape after it
        direct, unreachable = guardrails.scrape([url])
        through, failures = guardrails.from_prometheus(api, MODEL)
    finally:
        model_versions.set_rollout(MODEL, None)
    assert not unreachable and not failures
    shadow = (candidate["version"], "shadow")
    assert direct[shadow].rows > 0 and through[shadow].rows == direct[shadow].rows
    for key, figures in direct.items():
        assert through[key].rows == figures.rows and through[key].scorings == figures.scorings, key
        assert through[key].buckets == figures.buckets and through[key].mean_count == figures.mean_count
