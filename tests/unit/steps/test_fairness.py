"""Fairness by group (fairlearn's MetricFrame and disparity measures) and the gate's bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.problem import ProblemSpec, SpecError
from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from steps.data.features import Dataset
from steps.model.fairness import (
    DEMOGRAPHIC_PARITY,
    EQUALIZED_ODDS,
    ERROR_GAP,
    assess,
    assess_all,
    to_markdown,
    violations,
)
from steps.model.promote import decide

RNG = np.random.default_rng(3)


def spec(task: str = "binary", **fairness: object) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {
            "name": "loans",
            "model_name": "loans",
            "source": "loans.csv",
            "task": task,
            "target": {"column": "label"},
            "fairness": {"sensitive": ["group"], "min_group_rows": 50, **fairness},
        }
    )


def biased(n: int = 2000) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Group b gets positive decisions far more often than group a at the same true rate."""
    groups = pd.Series(np.where(np.arange(n) < n // 2, "a", "b"))
    y = RNG.integers(0, 2, n)
    p = np.clip(0.3 * y + np.where(groups == "b", 0.45, 0.15) + RNG.normal(0, 0.05, n), 0, 1)
    return y, p, groups


def test_disparities_are_fairlearns_and_the_table_has_every_group() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    y, p, groups = biased()
    table, disparities, small = assess(y, p, groups, "binary", 0.5, 50)
    decided = (p >= 0.5).astype(int)
    assert disparities[DEMOGRAPHIC_PARITY] == pytest.approx(
        demographic_parity_difference(y, decided, sensitive_features=groups.to_numpy())
    )
    assert disparities[EQUALIZED_ODDS] == pytest.approx(
        equalized_odds_difference(y, decided, sensitive_features=groups.to_numpy())
    )
    assert disparities[DEMOGRAPHIC_PARITY] > 0.3  # b: 0.45 + 0.3y mostly over 0.5; a: rarely
    assert list(table["group"]) == ["a", "b"] and list(table["rows"]) == [1000, 1000]
    assert {"selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"} <= set(table)
    assert small == []


def test_small_groups_are_shown_but_not_judged() -> None:
    y, p, groups = biased()
    groups.iloc[:10] = "tiny"
    table, disparities, small = assess(y, p, groups, "binary", 0.5, 50)
    assert small == ["tiny"] and "tiny" in set(table["group"])
    assert disparities[DEMOGRAPHIC_PARITY] > 0.3


def test_regression_error_gap() -> None:
    groups = pd.Series(np.where(np.arange(1000) < 500, "a", "b"))
    y = RNG.normal(size=1000)
    p = y + np.where(groups == "b", 1.0, 0.1) * RNG.choice([-1, 1], 1000)
    _, disparities, _ = assess(y, p, groups, "regression", 0.5, 50)
    assert disparities[ERROR_GAP] == pytest.approx(0.9, abs=1e-9)


def test_the_gate_keeps_an_unfair_candidate_out_even_without_a_champion() -> None:
    y, p, groups = biased()
    bounded = spec(max_demographic_parity_difference=0.1)
    frame = pd.DataFrame({"label": y, "group": groups})
    schema = FeatureSchema([FeatureColumn("x", "numeric")], "label", "binary", ["0", "1"])
    test = Dataset(frame, schema)
    reports = assess_all(frame, y.astype(float), p, bounded, 0.5)
    found = violations(reports, bounded.fairness)
    assert found and found[0].startswith("demographic parity difference by group")
    d = decide(bounded, p, None, test, "1", None, unfair=found)
    assert not d.promoted and d.reason.startswith("fairness bound broken")
    assert violations(reports, spec().fairness) == []  # reported, not bounded
    assert "| group | rows |" in to_markdown(reports)


def test_bounds_must_fit_the_task() -> None:
    with pytest.raises((SpecError, ValueError), match="binary task"):
        spec("regression", max_demographic_parity_difference=0.1)
    with pytest.raises((SpecError, ValueError), match="regression and multiclass"):
        spec("binary", max_error_gap=0.1)
