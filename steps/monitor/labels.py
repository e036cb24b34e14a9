"""Ground truth as monitoring may use it: whatever the label files hold, only well-formed labels get through.

The service checks feedback before writing it, but a label file is data on a shared store: written by an
older service, by hand, by another tool, half-written by a process that died. One bad row (a label ``2`` for
a binary model) used to make the monitoring run fail. Here every row is checked for the model's task, and
what is left out is counted by reason, so the run goes on and its report says what it skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COLUMNS = ("request_id", "label", "ts")


@dataclass(frozen=True)
class CleanLabels:
    """Usable labels (``request_id``, ``label``, ``ts``; one per id, the first that came) and what was not."""

    frame: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"request_id": pd.Series(dtype=object), "label": [], "ts": []})


def clean_labels(raw: pd.DataFrame, task: str, n_classes: int | None = None) -> CleanLabels:
    """Keep rows with a string request id, a finite numeric label valid for ``task`` (binary: 0 or 1;
    multiclass: a class index below ``n_classes``) and a numeric time; of repeated ids keep the first
    label (the service refuses a second one as well)."""
    skipped: dict[str, int] = {}
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        if len(raw):
            skipped[f"missing column {', '.join(missing)}"] = len(raw)
        return CleanLabels(_empty(), skipped)
    frame = raw[list(COLUMNS)].copy()

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        count = int(mask.sum())
        if count:
            skipped[reason] = skipped.get(reason, 0) + count
            frame = frame[~mask]

    drop(~_good_ids(frame["request_id"]), "bad request id")
    frame["label"] = pd.to_numeric(_no_bools(frame["label"]), errors="coerce")
    drop(~np.isfinite(frame["label"].to_numpy(dtype="float64")), "label not a finite number")
    if task == "binary":
        drop(~frame["label"].isin([0, 1]), "label not 0 or 1")
    elif task == "multiclass":
        indices = list(range(n_classes or 0))
        drop(~frame["label"].isin(indices), f"label not a class index 0..{max(len(indices) - 1, 0)}")
    frame["ts"] = pd.to_numeric(frame["ts"], errors="coerce")
    drop(~np.isfinite(frame["ts"].to_numpy(dtype="float64")), "time not a number")
    frame = frame.sort_values("ts", kind="stable")
    drop(frame["request_id"].duplicated(keep="first"), "repeated request id")
    return CleanLabels(frame.reset_index(drop=True).astype({"label": "float64", "ts": "float64"}), skipped)


def _good_ids(ids: pd.Series) -> pd.Series:
    """A request id is a string of 1 to 300 characters. Vectorised when every value is a string (what the
    service writes: the per-value check took a third of joining a million labels), else value by value."""
    if pd.api.types.infer_dtype(ids, skipna=False) == "string":
        return ids.str.len().between(1, 300)
    return ids.map(lambda v: isinstance(v, str) and 0 < len(v) <= 300).astype(bool)


def _no_bools(labels: pd.Series) -> pd.Series:
    """A bool is a number to pandas: a label file written with True/False is not ground truth of a number
    (numeric columns, what the service writes, pass as they are)."""
    if pd.api.types.is_bool_dtype(labels):
        return pd.Series(np.nan, index=labels.index)
    if pd.api.types.is_numeric_dtype(labels):
        return labels
    return labels.map(lambda v: np.nan if isinstance(v, bool | np.bool_) else v)
