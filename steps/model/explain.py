"""Explain: TreeSHAP contributions from XGBoost's own ``pred_contribs`` (no extra library).

Global importance is the mean absolute contribution per feature; per-row contributions answer "why this
prediction". The same call serves the API's explain endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure

BIAS = "bias"


@dataclass
class Explanation:
    importance: pd.Series
    contributions: pd.DataFrame = field(repr=False)
    figure: Figure | None = field(default=None, repr=False)


def raw_contributions(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """XGBoost's SHAP values: (rows, features + bias), or (rows, classes, features + bias) for multiclass."""
    dmatrix = xgb.DMatrix(frame, enable_categorical=True)
    return np.asarray(booster.predict(dmatrix, pred_contribs=True, validate_features=False))


def contributions(booster: xgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row SHAP values in margin (log-odds) units, one column per feature plus the bias.

    For a multiclass model, each row's contributions towards the class it predicts (the margins of
    ``multi:softprob`` are per class; the serving endpoint returns every class's).
    """
    return _frame(raw_contributions(booster, frame), frame)


def _frame(values: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    if values.ndim == 3:
        predicted = values.sum(axis=2).argmax(axis=1)  # the largest margin is the predicted class
        values = values[np.arange(len(values)), predicted]
    return pd.DataFrame(values, columns=[*frame.columns, BIAS], index=frame.index)


def explain(booster: xgb.Booster, frame: pd.DataFrame, sample: int = 2000, seed: int = 0) -> Explanation:
    """Global importance: mean |contribution| per feature (summed over classes for multiclass)."""
    rows = frame.sample(n=min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    values = raw_contributions(booster, rows)
    if values.ndim == 3:
        per_feature = np.abs(values[:, :, :-1]).sum(axis=1).mean(axis=0)
        importance = pd.Series(per_feature, index=rows.columns).sort_values(ascending=False)
    else:
        importance = pd.Series(np.abs(values[:, :-1]).mean(axis=0), index=rows.columns)
        importance = importance.sort_values(ascending=False)
    contrib = _frame(values, rows)
    return Explanation(importance=importance, contributions=contrib, figure=_importance_figure(importance))


def top_features(contrib_row: pd.Series, k: int = 5) -> list[tuple[str, float]]:
    body = contrib_row.drop(labels=[BIAS], errors="ignore")
    order = np.argsort(-np.abs(body.to_numpy()))[:k]
    return [(str(body.index[i]), float(body.iloc[i])) for i in order]


def _importance_figure(importance: pd.Series, top: int = 20) -> Figure:
    shown = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh(shown.index.astype(str), shown.to_numpy(), color="tab:purple")
    ax.set(xlabel="mean |SHAP contribution| (log-odds)", title="Global feature importance (TreeSHAP)")
    fig.tight_layout()
    return fig
