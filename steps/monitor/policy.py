"""The retraining policy: when drift or decay is real enough, and long enough, to retrain.

Pure: a drift table, realized metrics and the last retrain time in; a decision with its evidence out. A
window counts as drifting when at least ``min_drifted_features`` of the watched columns move beyond the
threshold; the policy fires when ``n_windows`` of the last ``of_last`` windows (with enough rows) drift, or
when the realized AUC falls under the floor on enough labels; and never within the cooldown of the last
retrain.

The rules and their defaults are the stack's ``data_validator.retraining`` model (``RetrainingPolicyConfig``):
``RetrainPolicy`` is that model plus the data validator's drift threshold, not a copy of its fields, so a
default changes in one place. The stack model is the owner because steps may import stacks and stacks
import no step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from stacks.config import DriftThreshold, RetrainingPolicyConfig, WhylogsConfig


class RetrainPolicy(RetrainingPolicyConfig):
    """The stack's retraining rules with the drift threshold a watched column must reach to count."""

    drift_threshold: DriftThreshold = WhylogsConfig.model_fields["drift_threshold"].default

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)

    @classmethod
    def from_config(cls, config: WhylogsConfig) -> RetrainPolicy:
        """The policy a data validator configuration sets (`Stack.data_validator_config()` for a stack)."""
        return cls.model_validate(
            {**config.retraining.model_dump(), "drift_threshold": config.drift_threshold}
        )


@dataclass
class PolicyDecision:
    fire: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)
    suppressed_by: str | None = None

    def summary(self) -> str:
        if self.fire:
            return "retrain: " + "; ".join(self.reasons)
        if self.suppressed_by:
            return f"would retrain ({'; '.join(self.reasons)}) but {self.suppressed_by}"
        return "no retrain: " + ("; ".join(self.reasons) if self.reasons else "nothing moved")


def watched_columns(policy: RetrainPolicy, model_features: list[str]) -> list[str]:
    columns = list(policy.features) if policy.features is not None else list(model_features)
    if policy.include_prediction and "prediction" not in columns:
        columns.append("prediction")
    return columns


def realized_metrics(joined: pd.DataFrame, task: str = "binary") -> dict[str, float]:
    """Metrics on predictions whose ground truth came back: ROC AUC, log loss and rates for binary tasks;
    accuracy and macro F1 of the predicted class for multiclass; RMSE, MAE and R² for regression."""
    from sklearn import metrics as skm

    n = len(joined)
    if n == 0:
        return {"labels": 0.0}
    y = joined["label"].to_numpy(dtype="float64")
    raw = joined["prediction"].to_numpy(dtype="float64")
    if task == "multiclass":  # the logged prediction is the predicted class's index
        return {
            "labels": float(n),
            "accuracy": float((raw == y).mean()),
            "f1_macro": float(skm.f1_score(y, raw, average="macro", zero_division=0)),
        }
    if task == "regression":
        return {
            "labels": float(n),
            "rmse": float(np.sqrt(np.mean((y - raw) ** 2))),
            "mae": float(np.mean(np.abs(y - raw))),
            "r2": float(skm.r2_score(y, raw)) if n > 1 else math.nan,
        }
    p = raw.clip(1e-7, 1 - 1e-7)
    out = {
        "labels": float(n),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
    }
    out["roc_auc"] = float(skm.roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else math.nan
    return out


def decide(
    policy: RetrainPolicy,
    drift: pd.DataFrame,
    realized: dict[str, float],
    last_retrain: datetime | None,
    now: datetime,
    watched: list[str],
) -> PolicyDecision:
    reasons: list[str] = []
    evidence: dict[str, Any] = {"windows": [], "realized": realized}
    considered = []
    if not drift.empty:
        table = drift[drift["column"].isin(watched)]
        for window, part in table.groupby("window", sort=True):
            rows = int(part["rows"].max()) if len(part) else 0
            if rows < policy.min_window_rows:
                continue
            moved = part[part["statistic"] >= policy.drift_threshold].sort_values(
                "statistic", ascending=False
            )
            missing = part[part["note"] == "missing from the window"]["column"].tolist()
            considered.append(
                {
                    "window": str(window),
                    "rows": rows,
                    "drifting": len(moved) >= policy.min_drifted_features,
                    "drifted": {r.column: round(float(r.statistic), 4) for r in moved.itertuples()},
                    "missing": missing,
                }
            )
    recent = considered[-policy.of_last :]
    evidence["windows"] = recent
    drifting = [w for w in recent if w["drifting"]]
    drift_fires = len(recent) >= policy.n_windows and len(drifting) >= policy.n_windows
    if drift_fires:
        top: dict[str, float] = {}
        for w in drifting:
            for column, statistic in w["drifted"].items():
                top[column] = max(top.get(column, 0.0), statistic)
        shown = ", ".join(f"{c} {s:.2f}" for c, s in sorted(top.items(), key=lambda kv: -kv[1])[:6])
        reasons.append(f"drift in {len(drifting)} of the last {len(recent)} windows ({shown})")
    elif recent:
        evidence["drift"] = (
            f"{len(drifting)} of the last {len(recent)} windows drift (needs {policy.n_windows})"
        )
    missing_any = sorted({c for w in recent for c in w["missing"]})
    if missing_any:
        evidence["missing_columns"] = missing_any
    decay_fires = False
    labels = int(realized.get("labels", 0))
    auc = realized.get("roc_auc", math.nan)
    if policy.auc_floor is not None and labels >= policy.min_labels and not math.isnan(auc):
        if auc < policy.auc_floor:
            decay_fires = True
            reasons.append(
                f"realized ROC AUC {auc:.3f} under the floor {policy.auc_floor} on {labels} labels"
            )
    elif policy.auc_floor is not None:
        evidence["decay"] = f"{labels} labels so far (needs {policy.min_labels} to judge the AUC floor)"
    fire = drift_fires or decay_fires
    if fire and last_retrain is not None and now - last_retrain < policy.cooldown:
        until = last_retrain + policy.cooldown
        return PolicyDecision(
            False, reasons, evidence, f"cooldown since the last retrain until {until.isoformat()}"
        )
    return PolicyDecision(fire, reasons, evidence)
