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
    assert not few.fire and few.evidence["decay"] == "50 labels (needs 200 to judge the AUC floor)"
    enough = decide(POLICY, quiet, {"labels": 500, "roc_auc": 0.55}, None, NOW, WATCHED)
    assert enough.fire and "realized ROC AUC 0.550 under the floor 0.60 on 500 labels" in enough.reasons[0]
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


# -- the summary: what fired, or what the policy waits for, in the words every view shows


def test_the_summary_says_what_the_policy_waits_for() -> None:
    policy = POLICY.model_copy(update={"min_labels": 1000})
    d = decide(
        policy,
        table([False, False, True, False]),
        {"labels": 812.0, "roc_auc": 0.7},
        None,
        NOW,
        WATCHED,
        champion_registered=NOW - timedelta(hours=3),
    )
    assert not d.fire and d.suppressed_by is None
    assert d.summary() == (
        "no retrain: 1 of the last 4 windows drifting (needs 3); "
        "812 labels (needs 1,000 to judge the AUC floor); "
        "cooldown until 2026-11-23 09:00 UTC (from the champion's registration)"
    )


def test_a_drifting_window_never_reads_as_nothing_moved() -> None:
    d = decide(POLICY, table([True]), {"labels": 0.0}, None, NOW, WATCHED)
    text = d.summary()
    assert "nothing moved" not in text
    assert text.startswith("no retrain: 1 of 1 windows so far drifting (needs 3 of the last 4)")


def test_the_summary_counts_sparse_windows_and_formats_numbers() -> None:
    d = decide(POLICY, table([True, True], rows=20), {"labels": 4904.0, "roc_auc": 0.71}, None, NOW, WATCHED)
    assert d.summary() == (
        "no retrain: no window of 100+ rows yet (needs 3 of the last 4 drifting; 2 under 100 rows left out); "
        "realized ROC AUC 0.710 on 4,904 labels (floor 0.60)"
    )
    assert ".0 " not in d.summary()


def test_no_windows_and_no_labels_yet() -> None:
    d = decide(POLICY, table([]), {"labels": 0.0}, None, NOW, WATCHED)
    assert d.summary() == (
        "no retrain: no serving window yet (needs 3 of the last 4 drifting); "
        "0 labels (needs 200 to judge the AUC floor)"
    )


def test_cooldown_from_the_last_retrain_and_from_registration() -> None:
    t = table([True, True, True])
    policy = POLICY.model_copy(update={"champion_cooldown_hours": 0.0})
    # a fresh champion (registered a minute ago) with no registration cooldown: drift fires at once
    fresh = decide(
        policy, t, {"labels": 0}, None, NOW, WATCHED, champion_registered=NOW - timedelta(minutes=1)
    )
    assert fresh.fire and fresh.summary().startswith("retrain (full: the inputs drifted): drift in 3 of")
    # the retrain monitoring asked for 2 h ago still holds the next one back
    held = decide(policy, t, {"labels": 0}, NOW - timedelta(hours=2), NOW, WATCHED)
    assert not held.fire
    assert held.summary() == (
        "no retrain: would retrain (full) on drift in 3 of the 3 windows so far (policy: 3 of the last 4) "
        "(temp 0.40, month 0.40), "
        "but cooldown until 2026-11-23 10:00 UTC (from the last retrain asked for)"
    )
    # by default the champion's registration holds for cooldown_hours too
    new = decide(POLICY, t, {"labels": 0}, None, NOW, WATCHED, champion_registered=NOW - timedelta(hours=1))
    assert not new.fire and "from the champion's registration" in str(new.suppressed_by)


def test_one_class_and_non_binary_labels_are_said_so() -> None:
    quiet = table([False, False, False, False])
    one = decide(POLICY, quiet, {"labels": 300.0, "roc_auc": float("nan")}, None, NOW, WATCHED)
    assert "300 labels of one class only" in one.summary()
    multi = decide(POLICY, quiet, {"labels": 300.0, "accuracy": 0.8}, None, NOW, WATCHED)
    assert "the AUC floor judges binary models only" in multi.summary()


# -- the training mode: full on input drift, the decay mode on decay with steady inputs


def test_input_drift_means_full_retraining() -> None:
    d = decide(POLICY, table([True, True, True, True]), {"labels": 500.0, "roc_auc": 0.5}, None, NOW, WATCHED)
    assert d.fire and d.mode == "full" and d.mode_reason == "the inputs drifted"
    assert d.evidence["mode"] == "full"


def test_mild_decay_with_steady_inputs_is_incremental() -> None:
    d = decide(POLICY, table([False] * 4), {"labels": 500.0, "roc_auc": 0.55}, None, NOW, WATCHED)
    assert d.fire and d.mode == "incremental"
    assert d.summary() == (
        "retrain (incremental: performance decayed, the inputs are steady): "
        "realized ROC AUC 0.550 under the floor 0.60 on 500 labels"
    )


def test_decay_with_some_drifting_windows_is_full() -> None:
    d = decide(
        POLICY, table([True, False, False, False]), {"labels": 500.0, "roc_auc": 0.55}, None, NOW, WATCHED
    )
    assert d.fire and d.mode == "full" and "1 recent window(s) drift" in d.mode_reason


def test_decay_mode_and_deep_decay_are_configurable() -> None:
    quiet = table([False] * 4)
    full = POLICY.model_copy(update={"decay_mode": "full"})
    assert decide(full, quiet, {"labels": 500.0, "roc_auc": 0.55}, None, NOW, WATCHED).mode == "full"
    deep = RetrainPolicy.model_validate({**POLICY.model_dump(), "full_below_auc": 0.52})
    d = decide(deep, quiet, {"labels": 500.0, "roc_auc": 0.51}, None, NOW, WATCHED)
    assert d.mode == "full" and "too deep for mild decay" in d.mode_reason
    assert decide(deep, quiet, {"labels": 500.0, "roc_auc": 0.56}, None, NOW, WATCHED).mode == "incremental"


def test_full_below_auc_must_be_under_the_floor() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be under auc_floor"):
        RetrainPolicy(auc_floor=0.6, full_below_auc=0.7)
