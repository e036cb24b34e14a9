"""XGBoost details shared by the model steps: objectives, eval metrics, matrices and prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from flywheel.contracts.problem import ProblemSpec

OBJECTIVE = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
"""XGBoost's objective per task; ``multi:softprob`` gives one probability per class (serving returns them)."""
_EVAL_METRIC = {
    "binary": {"roc_auc": "auc", "pr_auc": "aucpr", "log_loss": "logloss", "brier": "logloss"},
    "multiclass": {
        "log_loss": "mlogloss",
        "accuracy": "merror",
        "f1_macro": "mlogloss",
        "roc_auc_ovr": "auc",
    },
    "regression": {"rmse": "rmse", "mae": "mae", "r2": "rmse"},
}
_HIGHER_IS_BETTER = {"auc", "aucpr"}


def eval_metric(spec: ProblemSpec) -> str:
    """XGBoost's own metric closest to the spec's gate metric: what early stopping and pruning watch."""
    return _EVAL_METRIC[spec.task][spec.metric]


def eval_lower_is_better(name: str) -> bool:
    """The direction of XGBoost's metric, which may differ from the gate metric's (r2 is tuned on rmse)."""
    return name not in _HIGHER_IS_BETTER


def base_params(
    spec: ProblemSpec,
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    seed: int = 42,
    num_class: int | None = None,
) -> dict[str, Any]:
    """Parameters every booster of this problem shares; tuning adds the searched ones on top.

    ``num_class`` is the number of classes of a multiclass label (the training data's schema says).
    """
    params: dict[str, Any] = {
        "objective": OBJECTIVE[spec.task],
        "eval_metric": eval_metric(spec),
        "tree_method": "hist",
        "device": device,
        "seed": seed,
        "max_cat_to_onehot": 1,
    }
    if spec.task == "multiclass":
        if not num_class or num_class < 2:
            raise ValueError(f"a multiclass model needs the number of classes (got {num_class})")
        params["num_class"] = num_class
    if n_jobs:
        params["nthread"] = n_jobs
    return params


def matrix(
    frame: pd.DataFrame, label: pd.Series | None = None, ref: xgb.DMatrix | None = None
) -> xgb.DMatrix:
    """A QuantileDMatrix (the hist method's own input, built once and reused across trials)."""
    return xgb.QuantileDMatrix(frame, label=label, enable_categorical=True, ref=ref)


def predict(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Native in-place prediction: no DMatrix copy, categoricals re-coded by the booster itself.

    One value per row (binary: probability of the positive class; regression: the value), or one row of
    class probabilities per row for multiclass.
    """
    return np.asarray(booster.inplace_predict(frame, validate_features=False), dtype="float64")


def best_rounds(booster: xgb.Booster, fallback: int) -> int:
    try:
        return int(booster.best_iteration) + 1
    except AttributeError:
        return fallback
