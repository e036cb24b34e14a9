"""A rollout step's realized metrics: the candidate's and the champion's predictions judged on the labels
that came back through ``/feedback`` for them.

In a shadow step both scored the same rows (the shadow log keeps the champion's prediction beside the
candidate's, ``flywheel.contracts.layout.SHADOW_LOG_COLUMNS``), so the comparison is paired: the same
requests, the same labels; it also says how often the two decided alike and how far their scores are
apart. In a canary step each version answered its own share of the traffic over the same period, and each
is judged on its own labelled rows. Only files written since the step started are read (the window stamp
and the day folder in their paths), so a check costs the step's traffic, never the log's history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from flywheel.contracts import layout
from flywheel.contracts.problem import LOWER_IS_BETTER
from stacks.components.artifact_store import ArtifactStore
from steps.monitor.labels import clean_labels
from steps.monitor.policy import realized_metrics
from steps.monitor.windows import join_labels, read_parquets

REALIZED: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "log_loss"),
    "multiclass": ("accuracy", "f1_macro"),
    "regression": ("rmse", "mae", "r2"),
}
"""The metrics :func:`steps.monitor.policy.realized_metrics` gives per task; the first is the default."""


def realized_metric(task: str, gate_metric: str) -> str:
    """The metric a step is judged on: the gate's, when it can be computed from logged predictions (ROC
    AUC can, F1 at a threshold cannot), else the task's first."""
    available = REALIZED.get(task, REALIZED["binary"])
    return gate_metric if gate_metric in available else available[0]


@dataclass(frozen=True)
class Inputs:
    """What judging a step's realized metrics needs to know of the two versions."""

    model: str
    task: str
    classes: list[str] | None
    metric: str
    candidate_threshold: float = 0.5
    champion_threshold: float = 0.5
    window_s: int = 300

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER


@dataclass(frozen=True)
class Realized:
    """Both versions' realized metrics over a step (``realized_metrics``' keys, ``labels`` the rows)."""

    metric: str
    lower_is_better: bool
    candidate: dict[str, float]
    champion: dict[str, float]
    paired: bool
    """The same rows judged for both (shadow)."""
    shadow_rows: int = 0
    agreement: float | None = None
    """Shadow: the share of rows the two decided alike (class; side of each one's threshold)."""
    score_shift: float | None = None
    """Shadow: the mean absolute difference of their scores (binary, regression)."""
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> int:
        """Labelled rows of the version with fewer of them."""
        return int(min(self.candidate.get("labels", 0.0), self.champion.get("labels", 0.0)))

    def values(self) -> tuple[float, float]:
        return self.candidate.get(self.metric, math.nan), self.champion.get(self.metric, math.nan)

    def gain(self) -> float | None:
        """How much better the candidate did (negative: worse), in the metric's units; None when either
        value is undefined (ROC AUC of labels of one class)."""
        ours, theirs = self.values()
        if not (math.isfinite(ours) and math.isfinite(theirs)):
            return None
        return theirs - ours if self.lower_is_better else ours - theirs


def _written_since(since: float, window_s: int) -> Callable[[str], bool]:
    """Prediction and shadow log parts whose window can hold rows from ``since`` on."""
    earliest = layout.window_name(since - window_s)

    def keep(path: str) -> bool:
        return path.rsplit("/", 1)[-1][: len(earliest)] >= earliest

    return keep


def _labelled_since(since: float) -> Callable[[str], bool]:
    """Label parts received on the day of ``since`` or later (labels come after their predictions)."""
    day = datetime.fromtimestamp(since, UTC).strftime(layout.DAY_STAMP)
    return lambda path: path.rsplit("/", 2)[-2] >= day


def _logged(frame: pd.DataFrame, since: float) -> pd.DataFrame:
    if frame.empty or not {"request_id", "prediction", "ts"} <= set(frame):
        return pd.DataFrame(columns=["request_id", "prediction", "ts"])
    return frame[pd.to_numeric(frame["ts"], errors="coerce") >= since]


def compare(
    store: ArtifactStore, inputs: Inputs, stage: str, candidate: str, champion: str, since: float
) -> Realized:
    """The candidate's and the champion's realized metrics on what they scored since ``since`` (epoch
    seconds) and has been labelled."""
    raw, bad_label_files = read_parquets(store, layout.feedback_labels(inputs.model), _labelled_since(since))
    labels = clean_labels(raw, inputs.task, len(inputs.classes) if inputs.classes else None)
    skipped = dict(labels.skipped) | ({"unreadable label files": bad_label_files} if bad_label_files else {})
    written = _written_since(since, inputs.window_s)
    agreement = shift = None
    if stage == "shadow":
        shadow_logs = layout.shadow_logs(inputs.model, candidate)
        frame, bad = read_parquets(store, shadow_logs, written, layout.SHADOW_LOG_COLUMNS)
        if set(layout.SHADOW_LOG_COLUMNS) <= set(frame):
            shadow = _logged(frame, since)
            shadow = shadow[shadow["champion"].astype(str) == champion]
        else:  # nothing logged yet (or a part of another shape): no row
            shadow = pd.DataFrame(columns=list(layout.SHADOW_LOG_COLUMNS))
        ours = shadow[["request_id", "prediction", "ts"]]
        theirs = shadow[["request_id", "ts"]].assign(prediction=shadow["champion_prediction"])
        agreement, shift = _agreement(shadow, inputs)
        rows = len(shadow)
    else:
        keys = layout.PREDICTION_LOG_KEYS
        frame, bad = read_parquets(store, layout.prediction_logs(inputs.model, candidate), written, keys)
        ours = _logged(frame, since)
        frame, bad_theirs = read_parquets(
            store, layout.prediction_logs(inputs.model, champion), written, keys
        )
        theirs, bad, rows = _logged(frame, since), bad + bad_theirs, 0
    if bad:
        skipped["unreadable prediction logs"] = bad
    joined_ours = join_labels(ours, labels.frame, inputs.task, inputs.classes)
    joined_theirs = join_labels(theirs, labels.frame, inputs.task, inputs.classes)
    if stage == "shadow":  # the same rows for both: a row's label is judged against both or neither
        both = set(joined_ours["request_id"]) & set(joined_theirs["request_id"])
        joined_ours = joined_ours[joined_ours["request_id"].isin(both)]
        joined_theirs = joined_theirs[joined_theirs["request_id"].isin(both)]
    return Realized(
        inputs.metric,
        inputs.lower_is_better,
        realized_metrics(joined_ours, inputs.task),
        realized_metrics(joined_theirs, inputs.task),
        paired=stage == "shadow",
        shadow_rows=rows,
        agreement=agreement,
        score_shift=shift,
        skipped=skipped,
    )


def _agreement(shadow: pd.DataFrame, inputs: Inputs) -> tuple[float | None, float | None]:
    if shadow.empty:
        return None, None
    if inputs.task == "multiclass":  # both logged as the predicted class's name
        same = shadow["prediction"].astype(str) == shadow["champion_prediction"].astype(str)
        return float(same.mean()), None
    ours = pd.to_numeric(shadow["prediction"], errors="coerce").to_numpy("float64")
    theirs = pd.to_numeric(shadow["champion_prediction"], errors="coerce").to_numpy("float64")
    ok = np.isfinite(ours) & np.isfinite(theirs)
    if not ok.any():
        return None, None
    ours, theirs = ours[ok], theirs[ok]
    shift = float(np.abs(ours - theirs).mean())
    if inputs.task == "regression":
        return None, shift
    alike = (ours >= inputs.candidate_threshold) == (theirs >= inputs.champion_threshold)
    return float(alike.mean()), shift
