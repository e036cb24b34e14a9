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


def contributions(booster: xgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row SHAP values in margin (log-odds) units, one column per feature plus the bias."""
    dmatrix = xgb.DMatrix(frame, enable_categorical=True)
    values = booster.predict(dmatrix, pred_contribs=True, validate_features=False)
    return pd.DataFrame(values, columns=[*frame.columns, BIAS], index=frame.index)


def explain(booster: xgb.Booster, frame: pd.DataFrame, sample: int = 2000, seed: int = 0) -> Explanation:
    rows = frame.sample(n=min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    contrib = contributions(booster, rows)
    importance = contrib.drop(columns=[BIAS]).abs().mean().sort_values(ascending=False)
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
