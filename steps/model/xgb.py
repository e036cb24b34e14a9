"""XGBoost details shared by the model steps: objectives, eval metrics, matrices and prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from steps.problem import ProblemSpec

EVAL_METRIC = {
    "roc_auc": "auc",
    "pr_auc": "aucpr",
    "log_loss": "logloss",
    "brier": "logloss",
    "rmse": "rmse",
    "mae": "mae",
    "r2": "rmse",
}


def base_params(
    spec: ProblemSpec, *, n_jobs: int | None = None, device: str = "cpu", seed: int = 42
) -> dict[str, Any]:
    """Parameters every booster of this problem shares; tuning adds the searched ones on top."""
    params: dict[str, Any] = {
        "objective": "binary:logistic" if spec.task == "binary" else "reg:squarederror",
        "eval_metric": EVAL_METRIC[spec.metric],
        "tree_method": "hist",
        "device": device,
        "seed": seed,
        "max_cat_to_onehot": 1,
    }
    if n_jobs:
        params["nthread"] = n_jobs
    return params


def matrix(
    frame: pd.DataFrame, label: pd.Series | None = None, ref: xgb.DMatrix | None = None
) -> xgb.DMatrix:
    """A QuantileDMatrix (the hist method's own input, built once and reused across trials)."""
    return xgb.QuantileDMatrix(frame, label=label, enable_categorical=True, ref=ref)


def predict(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Native in-place prediction: no DMatrix copy, categoricals re-coded by the booster itself."""
    return np.asarray(booster.inplace_predict(frame, validate_features=False), dtype="float64")


def best_rounds(booster: xgb.Booster, fallback: int) -> int:
    try:
        return int(booster.best_iteration) + 1
    except AttributeError:
        return fallback
