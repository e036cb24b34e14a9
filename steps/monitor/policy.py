"""The retraining policy: when drift or decay is real enough, and long enough, to retrain.

Pure: a drift table, realized metrics and the last retrain time in; a decision with its evidence out. A
window counts as drifting when at least ``min_drifted_features`` of the watched columns move beyond the
threshold; the policy fires when ``n_windows`` of the last ``of_last`` windows (with enough rows) drift, or
when the realized AUC falls under the floor on enough labels; and never within the cooldown of the last
retrain or of the champion's registration. A decision also says how to retrain: ``full`` on input drift,
``decay_mode`` (incremental by default) on decay with steady inputs; and, when it does not fire, what each
rule still waits for, in the words the summary shows.

The rules and their defaults are the stack's ``data_validator.retraining`` model (``RetrainingPolicyConfig``):
``RetrainPolicy`` is that model plus the data validator's drift threshold, not a copy of its fields, so a
default changes in one place. The stack model is the owner because steps may import stacks and stacks
import no step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from stacks.config import DriftThreshold, RetrainingPolicyConfig, TrainingMode, WhylogsConfig


class RetrainPolicy(RetrainingPolicyConfig):
    """The stack's retraining rules with the drift threshold a watched column must reach to count."""

    drift_threshold: DriftThreshold = WhylogsConfig.model_fields["drift_threshold"].default

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)

    @property
    def champion_cooldown(self) -> timedelta:
        hours = self.cooldown_hours if self.champion_cooldown_hours is None else self.champion_cooldown_hours
        return timedelta(hours=hours)

    @classmethod
    def from_config(cls, config: WhylogsConfig) -> RetrainPolicy:
        """The policy a data validator configuration sets (`Stack.data_validator_config()` for a stack)."""
        return cls.model_validate(
            {**config.retraining.model_dump(), "drift_threshold": config.drift_threshold}
        )


def count(value: float) -> str:
    """A count as people read it: ``1,000``, not ``1000.0``."""
    return f"{int(value):,}"


def moment(at: datetime) -> str:
    """A time as the summary shows it: ``2026-12-02 09:00 UTC``."""
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@dataclass
class PolicyDecision:
    """What the policy decided and why: ``reasons`` are the rules that fired (or would have, when
    ``suppressed_by`` says what held them back), ``waiting`` what each rule that did not fire still needs;
    ``mode`` is the training mode a retrain should use and ``mode_reason`` why."""

    fire: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)
    suppressed_by: str | None = None
    waiting: list[str] = field(default_factory=list)
    mode: TrainingMode | None = None
    mode_reason: str = ""

    def summary(self) -> str:
        """The one line every view of a monitoring run shows (Prefect artifact, HTML report, MLflow tag,
        the drift event's reason): the verdict first, then what fired or what the policy waits for."""
        if self.fire:
            return f"retrain ({self.mode}: {self.mode_reason}): " + "; ".join(self.reasons)
        if self.suppressed_by:
            return (
                f"no retrain: would retrain ({self.mode}) on {'; '.join(self.reasons)}, "
                f"but {self.suppressed_by}"
            )
        return "no retrain: " + "; ".join(self.waiting or ["no rule has anything to judge yet"])


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


def _window_status(policy: RetrainPolicy, recent: list[dict[str, Any]], sparse: int) -> str:
    """How far the drift rule is from firing: ``1 of the last 4 windows drifting (needs 3)``."""
    n, m = policy.n_windows, policy.of_last
    below = f"; {count(sparse)} under {count(policy.min_window_rows)} rows left out" if sparse else ""
    if not recent:
        what = "no serving window" if not sparse else f"no window of {count(policy.min_window_rows)}+ rows"
        return f"{what} yet (needs {n} of the last {m} drifting{below})"
    drifting = sum(1 for w in recent if w["drifting"])
    if len(recent) < m:
        return f"{drifting} of {len(recent)} windows so far drifting (needs {n} of the last {m}{below})"
    return f"{drifting} of the last {len(recent)} windows drifting (needs {n}{below})"


def _choose_mode(
    policy: RetrainPolicy, drift_fires: bool, drifting: int, auc: float
) -> tuple[TrainingMode, str]:
    """Drift in the inputs: the champion learned another world, train anew (``full``). Decay with steady
    inputs: the champion still fits its inputs and only needs the newest labels (``decay_mode``), unless the
    decay is too deep to call mild (``full_below_auc``)."""
    if drift_fires:
        return "full", "the inputs drifted"
    if drifting:
        return "full", f"performance decayed and {drifting} recent window(s) drift"
    if policy.full_below_auc is not None and auc < policy.full_below_auc:
        return (
            "full",
            f"realized ROC AUC {auc:.3f} is under {policy.full_below_auc:.2f}, too deep for mild decay",
        )
    return policy.decay_mode, "performance decayed, the inputs are steady"


def decide(
    policy: RetrainPolicy,
    drift: pd.DataFrame,
    realized: dict[str, float],
    last_retrain: datetime | None,
    now: datetime,
    watched: list[str],
    *,
    champion_registered: datetime | None = None,
) -> PolicyDecision:
    """The decision on the windows and labels at hand. Cooldowns count from ``last_retrain`` (the last
    retrain monitoring asked for; ``cooldown_hours``) and from ``champion_registered``
    (``champion_cooldown_hours``, by default the same); the later end holds."""
    reasons: list[str] = []
    waiting: list[str] = []
    evidence: dict[str, Any] = {"windows": [], "realized": realized}
    considered = []
    sparse = 0
    if not drift.empty:
        table = drift[drift["column"].isin(watched)]
        for window, part in table.groupby("window", sort=True):
            rows = int(part["rows"].max()) if len(part) else 0
            if rows < policy.min_window_rows:
                sparse += 1
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
    evidence["sparse_windows"] = sparse
    drifting = [w for w in recent if w["drifting"]]
    drift_fires = len(recent) >= policy.n_windows and len(drifting) >= policy.n_windows
    if drift_fires:
        top: dict[str, float] = {}
        for w in drifting:
            for column, statistic in w["drifted"].items():
                top[column] = max(top.get(column, 0.0), statistic)
        shown = ", ".join(f"{c} {s:.2f}" for c, s in sorted(top.items(), key=lambda kv: -kv[1])[:6])
        rule = f"policy: {policy.n_windows} of the last {policy.of_last}"
        judged = (
            f"of the last {len(recent)} windows"
            if len(recent) >= policy.of_last
            else f"of the {len(recent)} windows so far ({rule})"
        )
        reasons.append(f"drift in {len(drifting)} {judged} ({shown})")
    else:
        evidence["drift"] = _window_status(policy, recent, sparse)
        waiting.append(evidence["drift"])
    missing_any = sorted({c for w in recent for c in w["missing"]})
    if missing_any:
        evidence["missing_columns"] = missing_any
    decay_fires = False
    labels = int(realized.get("labels", 0))
    auc = realized.get("roc_auc", math.nan)
    if policy.auc_floor is not None:
        floor = f"{policy.auc_floor:.2f}"
        if labels < policy.min_labels:
            evidence["decay"] = (
                f"{count(labels)} labels (needs {count(policy.min_labels)} to judge the AUC floor)"
            )
        elif "roc_auc" not in realized:
            evidence["decay"] = f"{count(labels)} labels (the AUC floor judges binary models only)"
        elif math.isnan(auc):
            evidence["decay"] = f"{count(labels)} labels of one class only (no ROC AUC to judge)"
        elif auc < policy.auc_floor:
            decay_fires = True
            reasons.append(f"realized ROC AUC {auc:.3f} under the floor {floor} on {count(labels)} labels")
        else:
            evidence["decay"] = f"realized ROC AUC {auc:.3f} on {count(labels)} labels (floor {floor})"
        if "decay" in evidence:
            waiting.append(evidence["decay"])
    fire = drift_fires or decay_fires
    mode: TrainingMode | None = None
    mode_reason = ""
    if fire:
        mode, mode_reason = _choose_mode(policy, drift_fires, len(drifting), auc)
        evidence["mode"] = mode
        evidence["mode_reason"] = mode_reason
    ends: list[tuple[datetime, str]] = []
    if last_retrain is not None:
        ends.append((last_retrain + policy.cooldown, "the last retrain asked for"))
    if champion_registered is not None:
        ends.append((champion_registered + policy.champion_cooldown, "the champion's registration"))
    until, since = max(ends, key=lambda e: e[0]) if ends else (None, "")
    if until is not None and now < until:
        hold = f"cooldown until {moment(until)} (from {since})"
        evidence["cooldown_until"] = until.isoformat()
        if fire:
            return PolicyDecision(False, reasons, evidence, hold, waiting, mode, mode_reason)
        waiting.append(hold)
    return PolicyDecision(fire, reasons, evidence, None, waiting, mode, mode_reason)
