"""``flywheel model``: two versions trained by the flow; list and show them, promote one past the gate
(recorded), roll the champion back (recorded, history cut) and promote through the gate (the test rows
rebuilt from the record); then a rollback under load on a two-worker service: no request fails and both
workers serve the old version within the watch interval (measured)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.training import training
from flywheel.cli import app
from flywheel.contracts.model_version import CHAMPION
from stacks.components import model_versions
from tests.e2e.support import Timeline, free_port, serve_model, stop_detached, wait_for
from tests.unit.serving.conftest import record_from

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODEL = "flight-delay"
WATCH_S = 1.0


@pytest.fixture(scope="module")
def two(module_home: Path) -> Iterator[dict[str, Any]]:
    first = training(problem="flights", n_trials=2, sample_rows=8_000, seed=11)
    second = training(problem="flights", n_trials=2, sample_rows=8_000, seed=12)
    assert first["version"] == "1" and second["version"] == "2"
    yield {"champion": second["champion_version"]}


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_list_show_force_and_roll_back(two: dict[str, Any]) -> None:
    champion = two["champion"]
    other = "2" if champion == "1" else "1"
    listed = _cli("model", "list", "--model", MODEL)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["version", "aliases", "created", "mode"] and "roc_auc" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["2", "1"]
    assert "champion" in next(line for line in lines[1:3] if line.split()[0] == champion)
    history_line = lines[-1]
    assert history_line.startswith("champion history") and history_line.endswith(f"v{champion}")

    forced = _cli("model", "promote", f"{MODEL}/{other}", "--reason", "a test", "--force")
    assert forced.exit_code == 0, forced.output
    assert model_versions.alias_version(MODEL) == other
    mv = model_versions.get_version(MODEL, other)
    assert mv.tags.forced and mv.tags.raw["flywheel.promotion.by"]
    assert "promoted by hand past the gate" in mv.tags.promotion.reason  # type: ignore[union-attr]
    assert model_versions.champion_history(MODEL)[-2:] == [champion, other]

    rolled = _cli("model", "rollback", "--model", MODEL, "--reason", "live errors")
    assert rolled.exit_code == 0, rolled.output
    assert f"champion v{other} rolled back to v{champion}" in rolled.output
    assert model_versions.alias_version(MODEL) == champion
    record = model_versions.get_version(MODEL, other).tags.rollback
    assert record is not None and record.reason == "live errors" and record.to == champion and record.at
    assert model_versions.champion_history(MODEL)[-1] == champion
    shown = _cli("model", "show", f"{MODEL}/{other}")
    assert f"rolled back     to v{champion}" in shown.output and "(forced past the gate)" in shown.output
    # its model card says so too: the approvals-and-rollouts section was rewritten from the tags
    import mlflow

    from flywheel.contracts.model_version import MODEL_CARD_MARKDOWN, runs_uri

    run_id = model_versions.get_version(MODEL, other).run_id
    card = mlflow.artifacts.load_text(runs_uri(run_id, MODEL_CARD_MARKDOWN))
    assert f"Rolled back to v{champion}" in card and "live errors" in card

    gated = _cli("model", "promote", f"{MODEL}/{other}", "--reason", "second look")
    now = model_versions.alias_version(MODEL)
    # the gate decides on the rows it judged the version on; either way the CLI says so and records it
    assert (gated.exit_code == 0) == (now == other), gated.output
    reason = model_versions.get_version(MODEL, other).tags.promotion.reason  # type: ignore[union-attr]
    assert "asked by hand" in reason and "second look" in reason
    if now == other:  # put the champion back for the next test
        MlflowClient().set_registered_model_alias(MODEL, CHAMPION, champion)
        model_versions.make_champion(MODEL, champion)


def _records(count: int) -> list[dict[str, Any]]:
    from flywheel.contracts.problem import load_spec
    from steps.data.features import build_dataset
    from steps.data.sources import read_source
    from steps.data.split import split

    spec = load_spec("flights")
    flights = read_source(spec.source).sample(n=3_000, random_state=4)
    dataset = build_dataset(flights, spec, {"weather": read_source(spec.joins[0].source)})
    test = split(dataset, spec).test
    return [record_from(test, i) for i in range(min(count, len(test.frame)))]


def test_rollback_under_load_on_two_workers(two: dict[str, Any], module_home: Path) -> None:
    say = Timeline()
    champion = model_versions.alias_version(MODEL)
    assert champion is not None
    other = "2" if champion == "1" else "1"
    model_versions.make_champion(MODEL, other)  # the version that will be rolled back
    port = free_port()
    log = module_home / "service.log"
    service = serve_model(
        MODEL, port, log, 2, FLYWHEEL_WATCH_INTERVAL_S=str(WATCH_S), FLYWHEEL_PROFILING="off"
    )
    url = f"http://127.0.0.1:{port}"
    records = _records(200)
    seen: list[tuple[float, str]] = []  # (time, version) of each answer
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            try:
                r = session.post(f"{url}/predict", json=records[i % len(records)], timeout=10)
                if r.status_code == 200:
                    seen.append((time.monotonic(), r.json()["model_version"]))
                else:
                    failed.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                failed.append(repr(exc))
            i += 1
            if i % 10 == 0:  # a new connection now and then: both workers take requests
                session.close()

    try:
        wait_for(lambda: requests.get(f"{url}/ready", timeout=2).status_code == 200, 120, "the service")
        say(f"service up, serving v{other} on 2 workers")
        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        moved: list[float] = []

        def watch_alias() -> None:  # when the registry first names the old champion again
            while not moved and not stop.is_set():
                if model_versions.alias_version(MODEL) == champion:
                    moved.append(time.monotonic())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch_alias, daemon=True)
        watcher.start()
        started = time.monotonic()
        rolled = _cli("model", "rollback", "--model", MODEL, "--reason", "under load")
        assert rolled.exit_code == 0, rolled.output
        watcher.join(10)
        assert moved, "the alias never moved back"
        alias_moved = moved[0]
        took = time.monotonic() - started
        say(f"rollback flow done in {took:.1f} s, the alias moved {alias_moved - started:.1f} s in")
        time.sleep(WATCH_S * 3 + 2)
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop_detached(service)
    assert not failed, failed[:5]
    old_after = [t for t, v in seen if v == other and t > alias_moved]
    last_old = max(old_after) if old_after else alias_moved
    switched = last_old - alias_moved
    say(f"{len(seen):,} requests, none failed; v{other}'s last answer {switched:.2f} s after the alias moved")
    assert switched <= WATCH_S + 1.0, switched
    assert any(v == champion for t, v in seen if t > last_old)
