"""Tune, train, evaluate and explain on a small slice of the real flights data."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from flywheel.contracts.problem import load_spec
from steps.data.features import build_dataset
from steps.data.split import Splits, split
from steps.model.evaluate import evaluate, expected_calibration_error, score
from steps.model.explain import BIAS, contributions, explain, top_features
from steps.model.train import train
from steps.model.tune import tune
from steps.model.xgb import predict

SPEC = load_spec("flights")


@pytest.fixture(scope="module")
def parts(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> Splits:
    return split(build_dataset(flights_sample, SPEC, {"weather": weather}), SPEC)


def test_tune_with_pruning_in_sqlite_storage(parts: Splits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = tune(
        parts.fit, parts.valid, SPEC, study_name="t", storage=storage, n_trials=8, timeout_s=120, seed=1
    )
    assert result.n_trials == 8
    assert 0.5 < result.best_value <= 1.0
    assert 1 <= result.best_rounds <= SPEC.tuning.num_boost_round
    assert result.best_params["objective"] == "binary:logistic"
    study = optuna.load_study(study_name="t", storage=storage)  # the study lives in the tuner storage
    assert len(study.trials) == 8
    assert len(result.trials) == 8


def test_train_evaluate_explain(parts: Splits) -> None:
    params = {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "max_depth": 4,
        "max_cat_to_onehot": 1,
        "seed": 0,
    }
    booster = train(parts.train, params, rounds=40)
    evaluation = evaluate(booster, parts.test, SPEC)
    m = evaluation.metrics
    assert 0.55 < m["roc_auc"] < 1.0 and 0 < m["pr_auc"] < 1 and m["log_loss"] > 0 and 0 < m["brier"] < 0.25
    assert set(evaluation.slices["slice"]) == {"carrier", "origin", "month"}
    assert {"roc_curve", "pr_curve", "calibration", "slices"} <= set(evaluation.figures)
    explanation = explain(booster, parts.test.X, sample=300)
    assert explanation.importance.index[0] in parts.test.X.columns
    # SHAP contributions add up to the margin of each prediction
    rows = parts.test.X.head(50)
    contrib = contributions(booster, rows)
    margin = contrib.sum(axis=1).to_numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), predict(booster, rows), rtol=1e-4, atol=1e-5)
    assert BIAS in contrib.columns
    assert len(top_features(contrib.iloc[0], k=3)) == 3


def test_scores_and_calibration() -> None:
    y = np.array([0, 0, 1, 1])
    assert score(y, np.array([0.1, 0.2, 0.8, 0.9]), "binary")["roc_auc"] == 1.0
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    reg = score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), "regression")
    assert reg["mae"] == pytest.approx(1 / 3) and reg["rmse"] == pytest.approx(np.sqrt(1 / 3))


def test_f1_threshold_beats_one_half_on_imbalanced_data(parts: Splits) -> None:
    from steps.model.threshold import choose_threshold, f1_threshold

    y = np.array([0] * 80 + [1] * 20)
    p = np.concatenate([np.linspace(0.0, 0.35, 80), np.linspace(0.3, 0.45, 20)])
    assert 0.3 <= f1_threshold(y, p) <= 0.35  # 0.5 would call nothing positive
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 3, "max_cat_to_onehot": 1}
    chosen = choose_threshold(SPEC, parts.fit, parts.valid, params, 20)
    assert SPEC.threshold == "f1" and 0.05 < chosen.value < 0.5 and chosen.warning is None
    assert chosen.predicted_positive_rate is not None and 0 < chosen.predicted_positive_rate < 1


def test_a_threshold_that_never_says_positive_is_reported_with_the_remedy(parts: Splits) -> None:
    from steps.model.threshold import choose_threshold, never_warning

    fixed = SPEC.model_copy(update={"threshold": 0.97})
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 3, "max_cat_to_onehot": 1}
    chosen = choose_threshold(fixed, parts.fit, parts.valid, params, 20)
    assert chosen.value == 0.97 and chosen.predicted_positive_rate == 0.0
    assert chosen.warning is not None and "no positive decision" in chosen.warning
    assert "threshold: f1" in chosen.warning
    y = np.array([0.0] * 95 + [1.0] * 5)
    assert never_warning(fixed, y, np.full(100, 0.99), 0.5) is not None  # always positive: reported too
    assert never_warning(fixed, y, np.linspace(0, 1, 100), 0.5) is None
