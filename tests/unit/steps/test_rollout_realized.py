"""A rollout step's realized metrics (steps.rollout.realized) on logs laid out as the service writes them:
shadow rows paired with the champion's on the same labelled requests, canary rows each on their own, only
what was scored since the step started, and the guardrail that judges them (steps.rollout.guardrails)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore
from stacks.config import Guardrails
from steps.rollout.guardrails import judge_realized
from steps.rollout.realized import Inputs, compare, realized_metric

MODEL = "m"
INPUTS = Inputs(model=MODEL, task="binary", classes=None, metric="roc_auc", window_s=60)


def _write(store: ArtifactStore, path: str, frame: pd.DataFrame) -> None:
    with store.open(path, "wb") as handle:
        frame.to_parquet(handle, index=False)


def _labels(store: ArtifactStore, ids: list[str], y: np.ndarray, when: float) -> None:
    day = pd.Timestamp(when, unit="s", tz="UTC").date()
    frame = pd.DataFrame({"request_id": ids, "label": y.astype(float), "ts": when})
    _write(store, layout.feedback_part(MODEL, day, "w1", "n1"), frame)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def _scores(y: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities that rank ``y`` with ``signal`` (0: a coin), around a 20% base rate."""
    return 1 / (1 + np.exp(-(signal * (y - 0.5) * 4 + rng.normal(0, 1, len(y)) - 1.4)))


def test_shadow_rows_are_judged_paired_and_only_since_the_step(store: ArtifactStore) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    n = 600
    y = (rng.random(n) < 0.2).astype(int)
    ids = [f"r{i}" for i in range(n)]
    champion, candidate = _scores(y, 1.0, rng), _scores(y, 0.0, rng)
    shadow = pd.DataFrame(
        {
            "request_id": ids,
            "ts": now,
            "prediction": candidate,
            "champion": "1",
            "champion_prediction": champion,
        }
    )
    _write(store, layout.shadow_log_part(MODEL, "2", now, "w1", "a"), shadow)
    # rows of an earlier rollout beside another champion, and rows before the step: never counted
    old = shadow.assign(champion="0", request_id=[f"o{i}" for i in range(n)])
    _write(store, layout.shadow_log_part(MODEL, "2", now, "w1", "b"), old)
    early = shadow.assign(ts=now - 30, request_id=[f"e{i}" for i in range(n)], prediction=champion)
    _write(store, layout.shadow_log_part(MODEL, "2", now - 30, "w1", "c"), early)
    labelled = 400  # the last 200 have no label yet
    _labels(store, ids[:labelled] + [f"e{i}" for i in range(n)], np.concatenate([y[:labelled], y]), now)

    found = compare(store, INPUTS, "shadow", "2", "1", since=now - 1)

    assert found.paired and found.shadow_rows == n
    assert found.candidate["labels"] == found.champion["labels"] == labelled == found.labels
    ours, theirs = found.values()
    assert 0.4 < ours < 0.6 and theirs > 0.75
    assert found.gain() == pytest.approx(ours - theirs)
    decided = (candidate >= 0.5) == (champion >= 0.5)
    assert found.agreement == pytest.approx(decided.mean())
    assert found.score_shift == pytest.approx(np.abs(candidate - champion).mean())

    verdict = judge_realized(found, Guardrails(min_labels=300, max_metric_drop=0.05))
    assert len(verdict.broken) == 1 and "realized roc_auc" in verdict.broken[0]
    assert "the same 400 labelled rows" in verdict.broken[0]
    assert verdict.measured["candidate_roc_auc"] == pytest.approx(ours)
    assert judge_realized(found, Guardrails(min_labels=401)).broken == []  # not enough labels: no verdict


def test_canary_rows_are_each_versions_own(store: ArtifactStore) -> None:
    rng = np.random.default_rng(1)
    now = time.time()
    y = (rng.random(800) < 0.3).astype(int)
    ids = [f"r{i}" for i in range(800)]
    served = pd.DataFrame({"request_id": ids, "prediction": _scores(y, 1.0, rng), "ts": now})
    _write(store, layout.prediction_log_part(MODEL, "1", now, "w", "a"), served[:600])
    _write(store, layout.prediction_log_part(MODEL, "2", now, "w", "a"), served[600:])
    _labels(store, ids, y, now)

    found = compare(store, INPUTS, "canary", "2", "1", since=now - 1)

    assert not found.paired and found.candidate["labels"] == 200 and found.champion["labels"] == 600
    assert found.agreement is None and found.labels == 200
    assert judge_realized(found, Guardrails(min_labels=100, max_metric_drop=0.2)).broken == []


def test_nothing_logged_or_labelled_yet_judges_nothing(store: ArtifactStore) -> None:
    found = compare(store, INPUTS, "shadow", "2", "1", since=time.time())
    assert found.labels == 0 and found.shadow_rows == 0 and found.gain() is None
    verdict = judge_realized(found, Guardrails(min_labels=1))
    assert verdict.broken == [] and verdict.measured["candidate_roc_auc"] is None


def test_a_damaged_part_is_counted_not_fatal(store: ArtifactStore) -> None:
    now = time.time()
    with store.open(layout.shadow_log_part(MODEL, "2", now, "w", "x"), "wb") as handle:
        handle.write(b"not parquet")
    found = compare(store, INPUTS, "shadow", "2", "1", since=now - 1)
    assert found.skipped == {"unreadable prediction logs": 1}


def test_the_realized_metric_is_the_gates_where_labels_can_give_it() -> None:
    assert realized_metric("binary", "roc_auc") == "roc_auc"
    assert realized_metric("binary", "log_loss") == "log_loss"
    assert realized_metric("binary", "f1") == "roc_auc"  # needs a threshold decision the log keeps no copy of
    assert realized_metric("regression", "mae") == "mae"
    assert realized_metric("multiclass", "log_loss") == "accuracy"
    lower = Inputs(model=MODEL, task="regression", classes=None, metric="rmse")
    assert lower.lower_is_better and not INPUTS.lower_is_better
