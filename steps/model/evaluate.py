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

from flywheel.contracts.problem import ProblemSpec
from steps.data.features import Dataset
from steps.model.xgb import predict


@dataclass
class Evaluation:
    metrics: dict[str, float]
    slices: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict, repr=False)
    predictions: np.ndarray | None = field(default=None, repr=False)
    fairness: list[Any] = field(default_factory=list, repr=False)
    """steps.model.fairness.GroupReport per sensitive feature of the spec."""


def score(y: np.ndarray, p: np.ndarray, task: str, threshold: float = 0.5) -> dict[str, float]:
    """Every metric the task defines, for a vector of labels and predictions."""
    y = np.asarray(y, dtype="float64")
    if task == "multiclass":
        return multiclass_scores(y, np.asarray(p, dtype="float64"))
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


def multiclass_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Log loss, accuracy, macro F1 and one-vs-rest macro ROC AUC for class indices and class probabilities.

    The ROC AUC averages the classes that have both positives and negatives in ``y`` (a slice of one
    airport may lack a class); NaN when none does. F1 averages the classes present in labels or
    predictions, so a class absent from a slice does not count as a zero.
    """
    nan = float("nan")
    if len(y) == 0:
        return {m: nan for m in ("log_loss", "accuracy", "f1_macro", "roc_auc_ovr")}
    k = p.shape[1]
    codes = y.astype("int64")
    predicted = p.argmax(axis=1)
    aucs = [
        skm.roc_auc_score(codes == c, p[:, c]) for c in range(k) if 0 < int((codes == c).sum()) < len(codes)
    ]
    return {
        "log_loss": float(skm.log_loss(codes, _normalised(p), labels=list(range(k)))),
        "accuracy": float((predicted == codes).mean()),
        "f1_macro": float(skm.f1_score(codes, predicted, average="macro", zero_division=0)),
        "roc_auc_ovr": float(np.mean(aucs)) if aucs else nan,
    }


def _normalised(p: np.ndarray) -> np.ndarray:
    """Rows clipped away from 0 and scaled to sum to one (float32 softmax rows miss by ~1e-7)."""
    clipped = np.clip(p, 1e-7, 1)
    return clipped / clipped.sum(axis=1, keepdims=True)


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
        values = slice_values(frame[column])
        for value in pd.unique(values):
            mask = values == value
            m = score(y[mask], p[mask], spec.task, threshold or spec.fixed_threshold).get(
                spec.metric, float("nan")
            )
            rows.append({"slice": column, "value": str(value), "rows": int(mask.sum()), spec.metric: m})
    return pd.DataFrame(rows, columns=["slice", "value", "rows", spec.metric])


def slice_values(column: pd.Series) -> np.ndarray:
    """Each row's slice value as text: a whole-number column stored as floats (month, after a join or a
    gap) reads ``10``, not ``10.0``; a missing value is ``<missing>``."""
    if pd.api.types.is_float_dtype(column):
        present = column.dropna().to_numpy(dtype="float64")
        if np.isfinite(present).all() and (present == np.round(present)).all():
            column = column.astype("Int64")
    return column.astype("string").fillna("<missing>").to_numpy()


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
    if spec.fairness.sensitive:
        from steps.model.fairness import assess_all

        result.fairness = assess_all(test.frame, y, p, spec, threshold or spec.fixed_threshold)
        for report in result.fairness:
            for name, value in report.disparities.items():
                result.metrics[f"fairness.{report.feature}.{name}"] = value
    if spec.task == "binary":
        result.figures = _binary_figures(y, p)
    elif spec.task == "multiclass":
        result.figures = _multiclass_figures(y, p, test.schema.classes or [])
    else:
        result.figures = _regression_figures(y, p)
    if not result.slices.empty:
        result.figures["slices"] = slice_figure(result.slices, spec)
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


def _multiclass_figures(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict[str, Figure]:
    """The confusion matrix, each row normalised to the true class's rows (what a reader compares)."""
    k = p.shape[1]
    names = classes if len(classes) == k else [str(i) for i in range(k)]
    matrix = skm.confusion_matrix(
        y.astype("int64"), p.argmax(axis=1), labels=list(range(k)), normalize="true"
    )
    size = min(12.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set(
        xlabel="predicted class", ylabel="true class", title="Confusion matrix (test period, by true class)"
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return {"confusion_matrix": fig}


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


def plotted_slices(slices: pd.DataFrame, min_rows: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """The slices a plot shows (at least ``min_rows`` rows: the promotion gate ignores smaller ones, and
    a bar over 12 flights is noise a reader would take for a finding) and, per slice column, how many
    values were left out. The metrics table keeps every slice."""
    enough = slices["rows"] >= min_rows
    left_out = {str(name): int((~part).sum()) for name, part in enough.groupby(slices["slice"], sort=False)}
    return slices[enough], left_out


def _ordered(part: pd.DataFrame) -> pd.DataFrame:
    """Numbers in numeric order (month 2 before 10), text alphabetically."""
    numeric = pd.to_numeric(part["value"], errors="coerce")
    if numeric.notna().all():
        return part.assign(_order=numeric).sort_values("_order").drop(columns="_order")
    return part.sort_values("value")


def slice_figure(slices: pd.DataFrame, spec: ProblemSpec) -> Figure:
    """The metric per slice value, each bar labelled with its rows; slices below the spec's
    ``promotion.min_slice_rows`` are left out, and each panel's title says how many."""
    min_rows = spec.promotion.min_slice_rows
    shown, left_out = plotted_slices(slices, min_rows)
    names = list(left_out)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.4 * len(names) + 0.5), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = _ordered(shown[shown["slice"] == name])
        dropped = left_out[name]
        values = "value" if dropped == 1 else "values"
        note = f"; {dropped} {values} under {min_rows:,} rows not shown" if dropped else ""
        ax.set_title(f"{spec.metric} by {name} (on each bar: its test rows{note})", fontsize=9)
        ax.set_ylabel(spec.metric)
        if part.empty:
            ax.text(0.5, 0.5, f"no {name} value has {min_rows:,} test rows", ha="center", va="center")
            ax.set_xticks([])
            continue
        heights = part[spec.metric].astype("float64")
        bars = ax.bar(part["value"], heights, color="tab:blue")
        ax.bar_label(bars, labels=[f"{r:,}" for r in part["rows"]], fontsize=7, padding=1)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        finite = heights[np.isfinite(heights)]
        if spec.metric in ("roc_auc", "pr_auc", "roc_auc_ovr", "accuracy", "f1_macro") and not finite.empty:
            lo, hi = max(0.0, float(finite.min()) - 0.05), float(finite.max()) + 0.02
            ax.set_ylim(lo, hi + 0.15 * (hi - lo))  # room above the bars for their row counts
        else:
            ax.margins(y=0.15)
    fig.tight_layout()
    return fig
