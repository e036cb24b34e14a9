"""A staged rollout on a real service under load: a good candidate goes shadow -> canary 30% -> canary 60%
-> every request with no request failed, the answers' versions following the steps, its shadow predictions
logged beside the champion's under the same request ids; a candidate whose predictions are skewed (it
learned inverted labels) passes nothing live: the shift guardrail rolls it back, no request failed, the
reason on the version, and the champion keeps every request; a candidate that learned noise (shuffled
labels: its scores sit where the champion's do, so no /metrics guardrail can tell) is rolled back in shadow
by its realized ROC AUC once the clients' labels come back through /feedback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from flows.rollout import rollout
from flywheel.contracts import layout
from flywheel.contracts.rollout import ROLLED_BACK, ROLLOUT_RESULT_TAG
from stacks.components import model_versions
from stacks.components.artifact_store import ArtifactStore
from stacks.loader import load_stack
from steps.monitor.windows import read_parquets
from tests.e2e.support import Timeline, free_port, serve_model, stop_detached, wait_for
from tests.unit.serving.conftest import record_from, train_and_register

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODEL = "flight-delay"
WATCH_S = 0.5
STEPS = [
    {"stage": "shadow", "hold_s": 3, "min_requests": 50},
    {"stage": "canary", "fraction": 0.3, "hold_s": 3, "min_requests": 30},
    {"stage": "canary", "fraction": 0.6, "hold_s": 3, "min_requests": 30},
]


@pytest.fixture(scope="module")
def versions(module_home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> dict[str, Any]:
    first = train_and_register(flights_sample, weather, rounds=30)
    good = train_and_register(flights_sample, weather, rounds=34)
    skewed = flights_sample.assign(arr_delay=30 - flights_sample["arr_delay"])  # the labels inverted
    bad = train_and_register(skewed, weather, rounds=30)
    shuffled = flights_sample.assign(
        arr_delay=np.random.default_rng(7).permutation(flights_sample["arr_delay"].to_numpy())
    )
    noise = train_and_register(shuffled, weather, rounds=30)
    model_versions.make_champion(MODEL, first["version"])
    return {
        "v1": first["version"],
        "good": good["version"],
        "bad": bad["version"],
        "noise": noise["version"],
        "test": first["test"],
    }


@pytest.fixture(scope="module")
def service(module_home: Path, versions: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    log = module_home / "service.log"
    process = serve_model(MODEL, port, log, FLYWHEEL_WATCH_INTERVAL_S=str(WATCH_S))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/ready", timeout=2).status_code == 200, 120, "the service")
        yield url
    finally:
        stop_detached(process)


@pytest.fixture(scope="module")
def staged_stack(module_home: Path) -> str:
    return _stack(module_home, "staged", STEPS)


def _stack(home: Path, name: str, steps: list[dict[str, Any]], **guardrails: Any) -> str:
    doc = load_stack("local").to_dict()
    doc["components"]["model_deployer"]["configuration"]["rollout"] = {
        "strategy": "staged",
        "steps": steps,
        "check_every_s": 1,
        "guardrails": guardrails,
    }
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class Traffic:
    """Four clients in a loop; every answer's time and version kept, every failure counted; with
    ``labels`` (one per record), each answer's outcome posted to ``/feedback``."""

    def __init__(self, url: str, records: list[dict[str, Any]], labels: list[float] | None = None) -> None:
        self.url, self.records, self.labels = url, records, labels
        self.seen: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(4)]

    def _run(self, offset: int) -> None:
        session = requests.Session()
        i = offset
        while not self._stop.is_set():
            try:
                r = session.post(f"{self.url}/predict", json=self.records[i % len(self.records)], timeout=10)
                if r.status_code == 200:
                    answer = r.json()
                    self.seen.append((time.monotonic(), answer["model_version"]))
                    if self.labels is not None:
                        label = {
                            "request_id": answer["request_id"],
                            "label": self.labels[i % len(self.labels)],
                        }
                        f = session.post(f"{self.url}/feedback", json=label, timeout=10)
                        if f.status_code != 202:
                            self.failed.append(f"feedback HTTP {f.status_code}: {f.text[:200]}")
                else:
                    self.failed.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                self.failed.append(repr(exc))
            i += 4
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def versions_between(self, start: float, end: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t, v in self.seen:
            if start <= t < end:
                counts[v] = counts.get(v, 0) + 1
        return counts


def test_a_good_candidate_goes_through_every_step(
    versions: dict[str, Any], service: str, staged_stack: str
) -> None:
    say = Timeline()
    records = [record_from(versions["test"], i) for i in range(300)]
    with Traffic(service, records) as traffic:
        time.sleep(1)
        started = time.monotonic()
        result = rollout(model=MODEL, version=versions["good"], stack=staged_stack, urls=[service])
        ended = time.monotonic()
        time.sleep(WATCH_S * 4 + 1)
    assert not traffic.failed, traffic.failed[:5]
    assert result["promoted"], result["reason"]
    assert [s["stage"] for s in result["steps"]] == ["shadow", "canary", "canary"]
    assert all(s["held"] for s in result["steps"])
    assert model_versions.alias_version(MODEL) == versions["good"]
    shadow_s = result["steps"][0]["held_s"]
    v1, v2 = versions["v1"], versions["good"]
    # shadow: the champion answers everything (the first watch tick after the step started excepted)
    during_shadow = traffic.versions_between(started + WATCH_S + 0.5, started + shadow_s - 0.5)
    say(f"shadow: {during_shadow}")
    assert set(during_shadow) == {v1}
    canary = traffic.versions_between(started + shadow_s + WATCH_S + 0.5, ended - WATCH_S - 0.5)
    say(f"canary: {canary}")
    assert canary.get(v2, 0) > 0 and canary.get(v1, 0) > 0
    after = traffic.versions_between(ended + WATCH_S + 0.5, time.monotonic())
    say(f"after: {after}")
    assert set(after) == {v2}
    shadow = result["steps"][0]["measured"]
    assert shadow["candidate_rows"] >= STEPS[0]["min_requests"]  # the shadow scored copies
    # ... and logged them beside the champion's prediction, under the ids of the champion's answers
    store = ArtifactStore.from_stack(load_stack("local"))
    wait_for(lambda: store.list(layout.shadow_logs(MODEL, v2)), 30, "the shadow log")
    logged, unreadable = read_parquets(store, layout.shadow_logs(MODEL, v2))
    answered, _ = read_parquets(store, layout.prediction_logs(MODEL, v1))
    say(f"shadow log: {len(logged)} rows; v{v1}'s prediction log: {len(answered)}")
    assert unreadable == 0 and list(logged.columns) == list(layout.SHADOW_LOG_COLUMNS)
    assert len(logged) >= STEPS[0]["min_requests"] and set(logged["champion"]) == {v1}
    assert set(logged["request_id"]) <= set(answered["request_id"])
    paired = logged.merge(answered[["request_id", "prediction"]], on="request_id", suffixes=("", "_logged"))
    assert np.allclose(paired["champion_prediction"], paired["prediction_logged"])


def test_a_skewed_candidate_is_rolled_back(versions: dict[str, Any], service: str, staged_stack: str) -> None:
    say = Timeline()
    champion = model_versions.alias_version(MODEL)
    records = [record_from(versions["test"], i) for i in range(300)]
    with Traffic(service, records) as traffic:
        time.sleep(1)
        result = rollout(model=MODEL, version=versions["bad"], stack=staged_stack, urls=[service])
        ended = time.monotonic()
        time.sleep(WATCH_S * 4 + 1)
    say(f"rollout: {result['reason']}")
    assert not traffic.failed, traffic.failed[:5]
    assert not result["promoted"] and "mean prediction" in result["reason"]
    assert result["steps"][-1]["stage"] == "shadow"  # caught before it answered anyone
    assert model_versions.alias_version(MODEL) == champion
    tags = model_versions.get_version(MODEL, versions["bad"]).tags.raw
    assert tags[ROLLOUT_RESULT_TAG] == ROLLED_BACK and "mean prediction" in tags["flywheel.rollout.reason"]
    assert model_versions.rollout_state(MODEL) is None
    assert set(traffic.versions_between(0, time.monotonic())) == {champion}
    assert set(traffic.versions_between(ended, time.monotonic())) == {champion}


@pytest.fixture(scope="module")
def approval_stack(module_home: Path) -> str:
    doc = load_stack("local").to_dict()
    doc["components"]["model_deployer"]["configuration"]["rollout"] = {
        "strategy": "immediate",
        "approval": "before_promotion",
        "approval_timeout_s": 120,
    }
    path = module_home / "approval.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _answered(verb: str, comment: str, stack: str) -> Any:
    """``flywheel model approve|reject`` once the rollout waits (the same API call as the UI's form)."""
    from typer.testing import CliRunner

    from flywheel.cli import app

    def attempt() -> Any:
        result = CliRunner().invoke(
            app, ["model", verb, "--model", MODEL, "--comment", comment, "--by", "ana", "--stack", stack]
        )
        return result if result.exit_code == 0 else None

    return wait_for(attempt, 60, f"a rollout waiting for {verb}", every=0.5)


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_promotion_waits_for_a_person(versions: dict[str, Any], approval_stack: str, verb: str) -> None:
    from flywheel.contracts.rollout import APPROVALS_TAG, parse_approvals

    champion = model_versions.alias_version(MODEL)
    candidate = versions["v1"] if champion != versions["v1"] else versions["good"]
    result: dict[str, Any] = {}
    flow = threading.Thread(
        target=lambda: result.update(rollout(model=MODEL, version=candidate, stack=approval_stack)),
        daemon=True,
    )
    flow.start()
    answered = _answered(verb, f"checked the {verb} path", approval_stack)
    flow.join(60)
    done = "approved" if verb == "approve" else "rejected"
    assert f"v{candidate}: {done} by ana" in answered.output, answered.output
    (last, *_) = reversed(
        parse_approvals(model_versions.get_version(MODEL, candidate).tags.raw[APPROVALS_TAG])
    )
    assert last.by == "ana" and last.comment == f"checked the {verb} path" and last.at
    if verb == "approve":
        assert result["promoted"] and last.decision == "approved"
        assert model_versions.alias_version(MODEL) == candidate
    else:
        assert (
            not result["promoted"] and "rejected by ana" in result["reason"] and last.decision == "rejected"
        )
        assert model_versions.alias_version(MODEL) == champion


def test_a_candidate_that_learned_noise_is_rolled_back_on_its_labels(
    versions: dict[str, Any], service: str, module_home: Path
) -> None:
    """Scores like the champion's (the shift guardrail holds), ranks like a coin: the realized ROC AUC of
    the shadow step, the same labelled rows for both, is what rolls it back."""
    say = Timeline()
    stack = _stack(
        module_home,
        "labels",
        [{"stage": "shadow", "hold_s": 60, "min_requests": 50}, *STEPS[1:]],
        min_labels=500,
        max_metric_drop=0.05,
    )
    champion = model_versions.alias_version(MODEL)
    test = versions["test"]
    n = min(len(test.y), 3000)  # few distinct rows leave the two AUCs a few hundredths apart by chance
    records = [record_from(test, i) for i in range(n)]
    labels = [float(v) for v in test.y.to_numpy()[:n]]
    with Traffic(service, records, labels) as traffic:
        time.sleep(1)
        result = rollout(model=MODEL, version=versions["noise"], stack=stack, urls=[service])
    say(f"rollout: {result['reason']}")
    measured = result["steps"][-1]["measured"]
    say(f"measured: {measured}")
    assert not traffic.failed, traffic.failed[:5]
    assert not result["promoted"] and "realized roc_auc" in result["reason"], result["reason"]
    assert result["steps"][-1]["stage"] == "shadow"
    assert result["steps"][-1]["held_s"] < 60  # rolled back on the evidence, not at the end of the hold
    assert measured["labels"] >= 500 and measured["champion_roc_auc"] > measured["candidate_roc_auc"] + 0.05
    assert measured["mean_shift"] < 0.15  # the guardrail on /metrics saw nothing wrong
    assert model_versions.alias_version(MODEL) == champion
    assert set(traffic.versions_between(0, time.monotonic())) == {champion}
