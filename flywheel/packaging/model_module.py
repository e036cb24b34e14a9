"""One registered model version as a Python package: ``predict(records)`` and ``predict_proba(records)``.

Built by ``flywheel package``; this file is the package's ``__init__``, beside ``records.py`` (the checks),
``model.ubj`` (the XGBoost booster) and ``model.json`` (the model's name, version, task, decision
threshold, classes and feature schema). It needs xgboost and numpy only.

Records are checked as the model's service checks a request (the same rules, the same error messages) and
answered as it answers: for a binary model ``predict`` is the decision (probability >= ``THRESHOLD``) and
``predict_proba`` the positive-class probability; for a multiclass model ``predict`` is the most probable
class and ``predict_proba`` one probability per class of ``CLASSES``; for a regression model ``predict``
is the value. The booster is loaded on the first prediction (importing xgboost takes a moment).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from importlib import resources
from typing import Any

import numpy as np

from .records import InvalidRecords, RecordChecker

__all__ = [
    "CLASSES",
    "FEATURES",
    "MODEL_NAME",
    "MODEL_VERSION",
    "TASK",
    "THRESHOLD",
    "InvalidRecords",
    "matrix",
    "predict",
    "predict_proba",
]

_FILES = resources.files(__name__)
_META: dict[str, Any] = json.loads(_FILES.joinpath("model.json").read_text(encoding="utf-8"))

MODEL_NAME: str = _META["model_name"]
MODEL_VERSION: str = _META["model_version"]
TASK: str = _META["task"]
"""``binary``, ``multiclass`` or ``regression``."""
THRESHOLD: float | None = _META["threshold"]
"""The decision threshold of a binary model (None for the others)."""
CLASSES: list[str] | None = _META["schema"].get("classes")
"""The class names in the order of ``predict_proba``'s columns (multiclass), [negative, positive] (binary)."""
FEATURES: list[dict[str, Any]] = _META["schema"]["columns"]
"""Each feature: name, kind, vocabulary (categories), training range, whether it may be missing."""

_CHECKER = RecordChecker(_META["schema"])
_LOCK = threading.Lock()
_BOOSTER: Any = None


def _booster() -> Any:
    global _BOOSTER
    with _LOCK:
        if _BOOSTER is None:
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(bytearray(_FILES.joinpath("model.ubj").read_bytes()))
            _BOOSTER = booster
    return _BOOSTER


def matrix(records: Iterable[Any]) -> np.ndarray:
    """The booster's float32 input for ``records`` (a list of dicts, feature name to value), checked:
    :class:`InvalidRecords` names the offending records and fields."""
    return _CHECKER.matrix(records)


def _output(records: Iterable[Any]) -> np.ndarray:
    """The booster's output, as the service reads it: float32 values widened to float64."""
    rows = matrix(records)
    if not len(rows):
        width = len(CLASSES or []) if TASK == "multiclass" else 0
        return np.empty((0, width) if width else (0,), dtype=np.float64)
    return np.asarray(_booster().inplace_predict(rows, validate_features=False), dtype=np.float64)


def predict_proba(records: Iterable[Any]) -> np.ndarray:
    """Binary: the positive-class probability of each record; multiclass: a row of class probabilities
    per record (columns in ``CLASSES`` order). A regression model has none (TypeError)."""
    if TASK == "regression":
        raise TypeError(f"{MODEL_NAME} v{MODEL_VERSION} is a regression model: it has no probabilities")
    return _output(records)


def predict(records: Iterable[Any]) -> np.ndarray:
    """Binary: each record's decision (bool: probability >= ``THRESHOLD``); multiclass: its most probable
    class (a name of ``CLASSES``); regression: its predicted value."""
    output = _output(records)
    if TASK == "binary":
        return np.asarray(output >= float(THRESHOLD if THRESHOLD is not None else 0.5))
    if TASK == "multiclass":
        names = np.asarray(CLASSES or [], dtype=object)
        return names[output.argmax(axis=1)] if len(output) else names[:0]
    return output
