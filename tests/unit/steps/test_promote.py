"""The promotion gate as a pure function: same test rows, tolerance, slice bound."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flywheel.contracts.problem import load_spec
from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from steps.data.features import Dataset
from steps.model.promote import decide

SPEC = load_spec("flights")
RNG = np.random.default_rng(0)


def make_test(n: int = 4000) -> tuple[Dataset, np.ndarray]:
    y = RNG.integers(0, 2, n)
    carrier = np.where(np.arange(n) < n // 2, "AA", "UA")
    frame = pd.DataFrame({"delayed": y, "carrier": carrier, "origin": "JFK", "month": 11})
    schema = FeatureSchema([FeatureColumn("carrier", "categorical", ["AA", "UA"])], "delayed", "binary")
    return Dataset(frame, schema), y


def noisy(y: np.ndarray, noise: float) -> np.ndarray:
    return np.clip(y * 0.6 + 0.2 + RNG.normal(0, noise, len(y)), 0.001, 0.999)


def test_no_champion_promotes() -> None:
    test, y = make_test()
    d = decide(SPEC, noisy(y, 0.3), None, test, "1", None)
    assert d.promoted and d.reason == "no champion yet"


def test_better_candidate_promotes() -> None:
    test, y = make_test()
    d = decide(SPEC, noisy(y, 0.2), noisy(y, 0.4), test, "2", "1")
    assert d.promoted and d.candidate_metric > d.champion_metric  # type: ignore[operator]
    assert d.reason.startswith("improves on the champion")
    assert "Promoted to champion: improves" in d.description(SPEC.metric)


def test_worse_beyond_tolerance_is_rejected() -> None:
    test, y = make_test()
    d = decide(SPEC, noisy(y, 0.5), noisy(y, 0.2), test, "2", "1")
    assert not d.promoted and "worse than champion v1" in d.reason


def test_identical_predictions_are_never_promoted() -> None:
    """A retrain that learned nothing new (same predictions) is no promotion, whatever the policy."""
    test, y = make_test()
    p = noisy(y, 0.3)
    refresh = SPEC.model_copy(
        update={"promotion": SPEC.promotion.model_copy(update={"refresh_within_tolerance": True})}
    )
    for spec in (SPEC, refresh):
        d = decide(spec, p, p.copy(), test, "2", "1", newer_data=True)
        assert not d.promoted and "nothing new learned" in d.reason


def test_not_better_within_tolerance_is_kept_out_and_says_why() -> None:
    test, y = make_test()
    champion = noisy(y, 0.3)
    candidate = np.clip(champion + RNG.normal(0, 0.002, len(y)), 0.001, 0.999)
    d = decide(SPEC, candidate, champion, test, "2", "1", newer_data=True)
    gain = d.candidate_metric - d.champion_metric  # type: ignore[operator]
    if gain > 0:  # noise made it better: swap the roles so the candidate is the worse one
        d = decide(SPEC, champion, candidate, test, "2", "1", newer_data=True)
    assert not d.promoted and d.reason.startswith("no improvement")
    assert "+0.0000" not in d.reason


def test_refresh_within_tolerance_promotes_with_its_reason_on_newer_data_only() -> None:
    test, y = make_test()
    champion = noisy(y, 0.3)
    candidate = champion.copy()
    candidate[:3] = 1 - candidate[:3]  # slightly worse, within the tolerance
    refresh = SPEC.model_copy(
        update={"promotion": SPEC.promotion.model_copy(update={"refresh_within_tolerance": True})}
    )
    d = decide(refresh, candidate, champion, test, "2", "1", newer_data=True)
    assert d.promoted and d.reason.startswith("refresh on newer data")
    assert not decide(refresh, candidate, champion, test, "2", "1", newer_data=False).promoted


def test_a_tiny_improvement_keeps_its_digits() -> None:
    from steps.model.promote import signed

    assert signed(0.0) == "+0.0000" and signed(0.0123) == "+0.0123" and signed(3.1e-6) == "+3.1e-06"


def test_slice_regression_blocks_promotion() -> None:
    test, y = make_test()
    champion = noisy(y, 0.35)
    candidate = champion.copy()
    ua = test.frame["carrier"].to_numpy() == "UA"
    aa = ~ua
    candidate[aa] = noisy(y[aa], 0.01)  # much better on AA ...
    candidate[ua] = noisy(y[ua], 0.45)  # ... but worse on UA
    assert decide(SPEC, candidate, champion, test, "2", "1").candidate_metric > 0.9
    d = decide(SPEC, candidate, champion, test, "2", "1")
    assert d.candidate_metric > d.champion_metric  # type: ignore[operator]  # better on average ...
    assert not d.promoted  # ... yet not promoted
    assert "carrier=UA" in d.reason
    assert any(r["value"] == "UA" for r in d.slice_regressions)


def test_incompatible_champion_is_replaced() -> None:
    test, y = make_test()
    d = decide(SPEC, noisy(y, 0.3), None, test, "3", "2")
    assert d.promoted and "cannot score" in d.reason


def _multiclass_test(n: int = 3000) -> tuple[Dataset, np.ndarray]:
    y = RNG.integers(0, 3, n)
    carrier = np.where(np.arange(n) < n // 2, "AA", "UA")
    frame = pd.DataFrame({"kind": y, "carrier": carrier})
    schema = FeatureSchema(
        [FeatureColumn("carrier", "categorical", ["AA", "UA"])], "kind", "multiclass", ["a", "b", "c"]
    )
    return Dataset(frame, schema), y


def _probabilities(y: np.ndarray, skill: float) -> np.ndarray:
    p = RNG.dirichlet(np.ones(3), len(y)) * (1 - skill)
    p[np.arange(len(y)), y] += skill
    return p


def test_multiclass_gate_on_log_loss_and_slices() -> None:
    spec = load_spec("flights").model_copy(
        update={"task": "multiclass", "metric": "log_loss", "slices": ["carrier"]}
    )
    test, y = _multiclass_test()
    better = decide(spec, _probabilities(y, 0.6), _probabilities(y, 0.3), test, "2", "1")
    assert better.promoted and better.candidate_metric < better.champion_metric  # type: ignore[operator]
    worse = decide(spec, _probabilities(y, 0.2), _probabilities(y, 0.6), test, "2", "1")
    assert not worse.promoted and "log_loss" in worse.reason


def test_champion_probabilities_follow_the_candidates_classes() -> None:
    from steps.model.promote import aligned

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    out = aligned(p, ["a", "b", "c"], ["c", "a", "b", "d"])  # reordered, and a class the champion lacks
    assert out.tolist() == [[0.1, 0.7, 0.2, 0.0], [0.8, 0.1, 0.1, 0.0]]
    assert aligned(p, ["a", "b", "c"], ["a", "b", "c"]) is p


def test_multiclass_scores() -> None:
    from steps.model.evaluate import score

    y = np.array([0, 1, 2, 2, 1, 0], dtype=float)
    perfect = np.eye(3)[y.astype(int)] * 0.97 + 0.01
    m = score(y, perfect, "multiclass")
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["roc_auc_ovr"] == 1.0 and m["log_loss"] < 0.05
    one_class = score(np.array([1.0, 1.0]), perfect[:2], "multiclass")  # a slice with one class: no AUC
    assert np.isnan(one_class["roc_auc_ovr"]) and one_class["accuracy"] == 0.5
