"""The decision threshold: a number from the spec, or the F1-best one on the validation period.

With 24% of flights late, a 0.5 threshold almost never says "late"; the F1-best threshold is chosen on
data the final model's rounds were picked on, never on the test period the model is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from flywheel.contracts.problem import ProblemSpec
from steps.data.features import Dataset
from steps.model.train import train
from steps.model.xgb import predict


def f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5


@dataclass(frozen=True)
class Threshold:
    """The decision threshold and how it behaves on the validation period (rows a fit-only model never saw).

    ``warning`` says when the threshold decides "never" (or "always"): a 5%-positive label at 0.5 gives no
    positive decision at all, which the run, its artifact and the model version report with the remedy.
    """

    value: float
    positive_rate: float | None = None
    predicted_positive_rate: float | None = None
    warning: str | None = None


def choose_threshold(
    spec: ProblemSpec, fit: Dataset, valid: Dataset, params: dict[str, Any], rounds: int
) -> Threshold:
    """The spec's number, or F1-best on ``valid``, for a booster that learned only from ``fit``.

    Binary only (other tasks have no threshold). The fit-only booster also shows how often the chosen
    threshold says "positive" on the validation period, so a threshold that never fires is reported.
    """
    if spec.task != "binary":
        return Threshold(spec.fixed_threshold)
    booster = train(fit, params, rounds)
    y = valid.y.to_numpy(dtype="float64")
    p = predict(booster, valid.X)
    value = f1_threshold(y, p) if spec.threshold == "f1" else spec.fixed_threshold
    return Threshold(value, *_rates(y, p, value), warning=never_warning(spec, y, p, value))


def _rates(y: np.ndarray, p: np.ndarray, value: float) -> tuple[float | None, float | None]:
    if not len(y):
        return None, None
    return float(y.mean()), float((p >= value).mean())


def never_warning(spec: ProblemSpec, y: np.ndarray, p: np.ndarray, value: float) -> str | None:
    """A sentence when the threshold gives no positive (or no negative) decision on rows that have both."""
    if not len(y) or not (0 < y.mean() < 1):
        return None
    decided = int((p >= value).sum())
    if decided and decided < len(p):
        return None
    remedy = (
        "set `threshold: f1` in the spec (the F1-best threshold on the validation period) or a number "
        f"near the positive rate ({y.mean():.1%})"
        if spec.threshold != "f1"
        else "the model does not separate the classes on the validation period; check the features"
    )
    verdict = "no positive decision on any" if not decided else "a positive decision on every one"
    return (
        f"decision threshold {value:.3g} gives {verdict} of {len(p):,} validation rows "
        f"({y.mean():.1%} of them are positive): {remedy}"
    )
