"""The retraining policy as a pure function: N of M windows, cooldown, AUC floor, sparse windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from steps.monitor.policy import RetrainPolicy, decide, realized_metrics, watched_columns

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
POLICY = RetrainPolicy(
    drift_threshold=0.15,
    min_drifted_features=2,
    n_windows=3,
    of_last=4,
    min_window_rows=100,
    auc_floor=0.6,
    min_labels=200,
    cooldown_hours=24,
)
WATCHED = ["temp", "carrier", "month", "prediction"]


def table(pattern: list[bool], rows: int = 1000, missing: str | None = None) -> pd.DataFrame:
    """One window per flag: True = temp and month move beyond the threshold."""
    out = []
    for i, drifting in enumerate(pattern):
        for column in WATCHED:
            moved = drifting and column in ("temp", "month")
            if column == missing:
                out.append(
                    {
                        "window": f"w{i:02d}",
                        "column": column,
                        "statistic": np.nan,
                        "drifted": False,
                        "rows": 0,
                        "note": "missing from the window",
                    }
                )
                continue
            out.append(
                {
                    "window": f"w{i:02d}",
                    "column": column,
                    "statistic": 0.4 if moved else 0.02,
                    "drifted": moved,
                    "rows": rows,
                    "note": "",
                }
            )
    return pd.DataFrame(out)


def test_three_of_the_last_four_windows_fire() -> None:
    d = decide(POLICY, table([False, True, True, False, True]), {"labels": 0}, None, NOW, WATCHED)
    assert d.fire and "drift in 3 of the last 4 windows" in d.reasons[0]
    assert "temp 0.40" in d.reasons[0]


def test_two_of_four_do_not_fire() -> None:
    d = decide(POLICY, table([True, True, False, False, False, True]), {"labels": 0}, None, NOW, WATCHED)
    assert not d.fire and d.evidence["drift"].startswith("1 of the last 4")


def test_too_few_windows_yet() -> None:
    assert not decide(POLICY, table([True, True]), {"labels": 0}, None, NOW, WATCHED).fire


def test_one_drifting_feature_is_not_enough() -> None:
    t = table([True, True, True, True])
    t.loc[t["column"] == "month", "statistic"] = 0.01
    assert not decide(POLICY, t, {"labels": 0}, None, NOW, WATCHED).fire


def test_empty_and_sparse_windows_are_ignored() -> None:
    sparse = table([True, True, True], rows=20)
    assert not decide(POLICY, sparse, {"labels": 0}, None, NOW, WATCHED).fire
    assert not decide(
        POLICY,
        pd.DataFrame(columns=["window", "column", "statistic", "drifted", "rows", "note"]),
        {"labels": 0},
        None,
        NOW,
        WATCHED,
    ).fire


def test_cooldown_suppresses_and_expires() -> None:
    t = table([True, True, True])
    d = decide(POLICY, t, {"labels": 0}, NOW - timedelta(hours=2), NOW, WATCHED)
    assert not d.fire and d.suppressed_by and "cooldown" in d.suppressed_by
    assert "would retrain" in d.summary()
    assert decide(POLICY, t, {"labels": 0}, NOW - timedelta(hours=25), NOW, WATCHED).fire


def test_auc_floor_needs_enough_labels() -> None:
    quiet = table([False, False, False])
    few = decide(POLICY, quiet, {"labels": 50, "roc_auc": 0.5}, None, NOW, WATCHED)
    assert not few.fire and "50 labels so far" in few.evidence["decay"]
    enough = decide(POLICY, quiet, {"labels": 500, "roc_auc": 0.55}, None, NOW, WATCHED)
    assert enough.fire and "realized ROC AUC 0.550 under the floor 0.6" in enough.reasons[0]
    fine = decide(POLICY, quiet, {"labels": 500, "roc_auc": 0.7}, None, NOW, WATCHED)
    assert not fine.fire


def test_no_labels_yet() -> None:
    d = decide(
        POLICY,
        table([False]),
        realized_metrics(pd.DataFrame(columns=["prediction", "label"])),
        None,
        NOW,
        WATCHED,
    )
    assert not d.fire and d.evidence["realized"] == {"labels": 0.0}


def test_a_profile_missing_a_feature_is_reported_not_counted() -> None:
    d = decide(POLICY, table([True, True, True], missing="carrier"), {"labels": 0}, None, NOW, WATCHED)
    assert d.fire  # temp and month still drift
    assert d.evidence["missing_columns"] == ["carrier"]


def test_realized_metrics() -> None:
    joined = pd.DataFrame({"prediction": [0.9, 0.8, 0.2, 0.1], "label": [1, 1, 0, 0]})
    m = realized_metrics(joined)
    assert m["roc_auc"] == 1.0 and m["labels"] == 4 and m["positive_rate"] == 0.5


def test_watched_columns_default_to_model_features_plus_prediction() -> None:
    assert watched_columns(RetrainPolicy(), ["a", "b"]) == ["a", "b", "prediction"]
    assert watched_columns(RetrainPolicy(features=["a"], include_prediction=False), ["a", "b"]) == ["a"]
