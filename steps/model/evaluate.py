"""Evaluate on the held-out later period: overall metrics, calibration, per-slice metrics and plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure
from sklearn import metrics as skm

from steps.data.features import Dataset
from steps.model.xgb import predict
from steps.problem import ProblemSpec


@dataclass
class Evaluation:
    metrics: dict[str, float]
    slices: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict, repr=False)
    predictions: np.ndarray | None = field(default=None, repr=False)


def score(y: np.ndarray, p: np.ndarray, task: str, threshold: float = 0.5) -> dict[str, float]:
    """Every metric the task defines, for a vector of labels and predictions."""
    y = np.asarray(y, dtype="float64")
    if task == "regression":
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
            "mae": float(skm.mean_absolute_error(y, p)),
            "r2": float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
        }
    two_classes = np.unique(y).size == 2
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, clipped, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p)),
        "accuracy": float(skm.accuracy_score(y, p >= threshold)),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float((p >= threshold).mean()),
        "calibration_error": expected_calibration_error(y, p),
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width bins, weighted by rows."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(error)


def slice_metrics(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, spec: ProblemSpec, threshold: float | None = None
) -> pd.DataFrame:
    """The spec's metric per value of each slice column (rows, value), to catch a model that is worse
    for one carrier or one airport while better on average."""
    rows: list[dict[str, Any]] = []
    for column in spec.slices:
        if column not in frame.columns:
            continue
        values = frame[column].astype("string").fillna("<missing>").to_numpy()
        for value in pd.unique(values):
            mask = values == value
            m = score(y[mask], p[mask], spec.task, threshold or spec.fixed_threshold).get(
                spec.metric, float("nan")
            )
            rows.append({"slice": column, "value": str(value), "rows": int(mask.sum()), spec.metric: m})
    return pd.DataFrame(rows, columns=["slice", "value", "rows", spec.metric])


def evaluate(
    booster: xgb.Booster, test: Dataset, spec: ProblemSpec, threshold: float | None = None
) -> Evaluation:
    p = predict(booster, test.X)
    y = test.y.to_numpy(dtype="float64")
    result = Evaluation(
        metrics=score(y, p, spec.task, threshold or spec.fixed_threshold),
        slices=slice_metrics(test.frame, y, p, spec, threshold),
        predictions=p,
    )
    result.metrics["test_rows"] = float(len(y))
    result.figures = _binary_figures(y, p) if spec.task == "binary" else _regression_figures(y, p)
    if not result.slices.empty:
        result.figures["slices"] = _slice_figure(result.slices, spec)
    return result


def _binary_figures(y: np.ndarray, p: np.ndarray) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    if np.unique(y).size == 2:
        fpr, tpr, _ = skm.roc_curve(y, p)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(y, p):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (test period)")
        ax.legend(loc="lower right")
        figures["roc_curve"] = fig
        precision, recall, _ = skm.precision_recall_curve(y, p)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(recall, precision, label=f"AP {skm.average_precision_score(y, p):.3f}")
        ax.axhline(y.mean(), ls="--", color="grey", label=f"base rate {y.mean():.3f}")
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve (test period)")
        ax.legend()
        figures["pr_curve"] = fig
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (test period)")
    ax.legend()
    figures["calibration"] = fig
    return figures


def _regression_figures(y: np.ndarray, p: np.ndarray) -> dict[str, Figure]:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=3, alpha=0.3)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "--", color="grey")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test)")
    fig2, ax2 = plt.subplots(figsize=(5, 4))
    ax2.hist(p - y, bins=50)
    ax2.set(xlabel="residual (predicted - actual)", ylabel="rows", title="Residuals (test)")
    return {"predicted_vs_actual": fig, "residuals": fig2}


def _slice_figure(slices: pd.DataFrame, spec: ProblemSpec) -> Figure:
    groups = list(slices.groupby("slice", sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 * len(groups) + 0.5), squeeze=False)
    for ax, (name, part) in zip(axes[:, 0], groups, strict=True):
        part = part.sort_values(
            "value", key=lambda s: pd.to_numeric(s, errors="coerce").fillna(0) if name == "month" else s
        )
        ax.bar(part["value"], part[spec.metric], color="tab:blue")
        ax.set_ylabel(spec.metric)
        ax.set_title(f"{spec.metric} by {name}")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        finite = part[spec.metric].dropna()
        if spec.metric in ("roc_auc", "pr_auc") and not finite.empty:
            ax.set_ylim(max(0.0, float(finite.min()) - 0.05), min(1.0, float(finite.max()) + 0.05))
    fig.tight_layout()
    return fig
