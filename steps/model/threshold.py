"""The decision threshold: a number from the spec, or the F1-best one on the validation period.

With 24% of flights late, a 0.5 threshold almost never says "late"; the F1-best threshold is chosen on
data the final model's rounds were picked on, never on the test period the model is judged on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from steps.data.features import Dataset
from steps.model.train import train
from steps.model.xgb import predict
from steps.problem import ProblemSpec


def f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5


def choose_threshold(
    spec: ProblemSpec, fit: Dataset, valid: Dataset, params: dict[str, Any], rounds: int
) -> float:
    """The spec's number, or F1-best on ``valid`` for a booster that learned only from ``fit``."""
    if spec.task != "binary" or spec.threshold != "f1":
        return spec.fixed_threshold
    booster = train(fit, params, rounds)
    return f1_threshold(valid.y.to_numpy(dtype="float64"), predict(booster, valid.X))
