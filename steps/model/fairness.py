"""Fairness by group: how a model's decisions and errors differ across the groups of a sensitive feature.

The spec names the sensitive features (``fairness.sensitive``); evaluation computes fairlearn's
``MetricFrame`` by group on the test rows and the usual disparity measures: for a binary model the
demographic parity difference (gap in the rate of positive decisions) and the equalized odds difference
(the larger gap of true and false positive rates), at the version's decision threshold; for a regression
model the gap of mean absolute error between groups; for a multiclass model the gap of accuracy. Groups
with fewer than ``min_group_rows`` test rows are reported but left out of the disparities (a gap between
two flights says nothing). The promotion gate bounds them when the spec sets a bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flywheel.contracts.problem import FairnessSpec, ProblemSpec
from steps.model.evaluate import slice_values

DEMOGRAPHIC_PARITY = "demographic_parity_difference"
EQUALIZED_ODDS = "equalized_odds_difference"
ERROR_GAP = "error_gap"
"""Regression: the largest difference of mean absolute error between groups; multiclass: of error rate."""
BOUNDS = {
    DEMOGRAPHIC_PARITY: "max_demographic_parity_difference",
    EQUALIZED_ODDS: "max_equalized_odds_difference",
    ERROR_GAP: "max_error_gap",
}
"""Each disparity and the FairnessSpec field that bounds it."""


@dataclass(frozen=True)
class GroupReport:
    """One sensitive feature: metrics per group (all groups, with their rows) and the disparities."""

    feature: str
    by_group: pd.DataFrame
    disparities: dict[str, float] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    """Groups under ``min_group_rows`` test rows: shown, not counted in the disparities."""


def _decisions(p: np.ndarray, task: str, threshold: float) -> np.ndarray:
    if task == "binary":
        return (p >= threshold).astype("int64")
    if task == "multiclass":
        return p.argmax(axis=1).astype("int64")
    return p


def assess(
    y: np.ndarray, p: np.ndarray, groups: pd.Series, task: str, threshold: float, min_group_rows: int
) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    """Per-group metrics and disparities for one sensitive feature (fairlearn's MetricFrame)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error

    values = slice_values(groups)
    decided = _decisions(p, task, threshold)
    metrics: dict[str, object] = {"rows": count}
    if task == "binary":
        metrics |= {
            "selection_rate": selection_rate,
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
            "accuracy": accuracy_score,
        }
    elif task == "multiclass":
        metrics["accuracy"] = accuracy_score
    else:
        metrics["mae"] = mean_absolute_error
    frame = MetricFrame(metrics=metrics, y_true=y, y_pred=decided, sensitive_features=values)
    table = frame.by_group.reset_index().rename(columns={"sensitive_feature_0": "group"})
    table["rows"] = table["rows"].astype("int64")
    small = sorted(str(g) for g in table.loc[table["rows"] < min_group_rows, "group"])
    keep = ~pd.Series(values).isin(small).to_numpy()
    disparities: dict[str, float] = {}
    if keep.any() and len(set(values[keep])) >= 2:
        yk, dk, gk = y[keep], decided[keep], values[keep]
        if task == "binary":
            disparities[DEMOGRAPHIC_PARITY] = float(
                demographic_parity_difference(yk, dk, sensitive_features=gk)
            )
            disparities[EQUALIZED_ODDS] = float(equalized_odds_difference(yk, dk, sensitive_features=gk))
        elif task == "multiclass":
            kept = MetricFrame(metrics=accuracy_score, y_true=yk, y_pred=dk, sensitive_features=gk)
            disparities[ERROR_GAP] = float(kept.difference())
        else:
            kept = MetricFrame(metrics=mean_absolute_error, y_true=yk, y_pred=dk, sensitive_features=gk)
            disparities[ERROR_GAP] = float(kept.difference())
    return table, disparities, small


def assess_all(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, spec: ProblemSpec, threshold: float
) -> list[GroupReport]:
    """A report per sensitive feature the test rows hold."""
    reports = []
    for feature in spec.fairness.sensitive:
        if feature not in frame.columns:
            continue
        table, disparities, small = assess(
            y, p, frame[feature], spec.task, threshold, spec.fairness.min_group_rows
        )
        reports.append(GroupReport(feature, table, disparities, small))
    return reports


def violations(reports: list[GroupReport], bounds: FairnessSpec) -> list[str]:
    """Each disparity over its bound, in words: ``demographic parity difference by origin 0.14 > 0.10``."""
    found = []
    for report in reports:
        for name, value in report.disparities.items():
            bound = getattr(bounds, BOUNDS[name])
            if bound is not None and np.isfinite(value) and value > bound:
                found.append(f"{name.replace('_', ' ')} by {report.feature} {value:.3f} > {bound}")
    return found


def to_markdown(reports: list[GroupReport]) -> str:
    """The disparities and the groups, for the Prefect artifact and the model card."""
    if not reports:
        return "No sensitive feature named (`fairness.sensitive` in the spec)."
    lines = []
    for report in reports:
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in report.disparities.items()) or "-"
        lines += [f"### By {report.feature}", "", f"Disparities: {shown}", ""]
        columns = list(report.by_group.columns)
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in report.by_group.itertuples(index=False):
            cells = [
                f"{v:,}"
                if isinstance(v, int | np.integer)
                else f"{v:.3f}"
                if isinstance(v, float)
                else str(v)
                for v in row
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if report.left_out:
            lines += ["", f"Under the minimum rows, not in the disparities: {', '.join(report.left_out)}"]
        lines.append("")
    return "\n".join(lines)
