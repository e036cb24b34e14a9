"""Reading what the service wrote: profile windows, the prediction log and feedback labels.

The service's profiling process writes one profile per (model version, time window, writer process), at
``flywheel.contracts.layout.window_profile``; several workers write the same window, so the files of one
window are merged here.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.monitor.labels import clean_labels


@dataclass(frozen=True)
class Window:
    start: datetime
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return layout.window_name(self.start)


def list_windows(
    store: ArtifactStore, model_name: str, version: str, since: datetime | None = None
) -> list[Window]:
    """Windows of a version's traffic, oldest first, optionally only those starting after ``since``."""
    grouped: dict[datetime, list[str]] = {}
    for path in store.list(layout.serving_profiles(model_name, version)):
        if path.endswith(".bin"):
            grouped.setdefault(layout.parse_window_profile(path).start, []).append(path)
    return [
        Window(start, tuple(sorted(paths)))
        for start, paths in sorted(grouped.items())
        if since is None or start > since
    ]


def load_window(store: ArtifactStore, window: Window) -> Any:
    views = [WhylogsValidator.from_bytes(store.read_bytes(p)) for p in window.paths]
    return WhylogsValidator.merge(views)


def load_reference(store: ArtifactStore, model_name: str, version: str) -> Any:
    """The version's training profile (features, label and predictions), written at registration."""
    return WhylogsValidator.from_bytes(store.read_bytes(layout.training_reference(model_name, version)))


def read_parquets(
    store: ArtifactStore,
    prefix: str,
    keep: Callable[[str], bool] | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Every Parquet file under ``prefix`` (those ``keep`` accepts) concatenated, and how many could not be
    read (a file cut short by a process that died, or not Parquet at all, is skipped, not fatal).

    ``columns``: only those of them a file has are read (Parquet is columnar: a prediction log's features,
    most of its bytes, are never decoded when the join needs its ids, predictions and times)."""
    frames, unreadable = [], 0
    for path in store.list(prefix):
        if not path.endswith(".parquet") or (keep is not None and not keep(path)):
            continue
        try:
            frames.append(_read_part(store.read_bytes(path), columns))
        except Exception:  # pyarrow raises several types for a damaged file
            unreadable += 1
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), unreadable


def _read_part(data: bytes, columns: Sequence[str] | None) -> pd.DataFrame:
    if columns is None:
        return pd.read_parquet(io.BytesIO(data))
    import pyarrow.parquet as pq

    present = set(pq.read_schema(io.BytesIO(data)).names)
    return pd.read_parquet(io.BytesIO(data), columns=[c for c in columns if c in present])


@dataclass(frozen=True)
class Labelled:
    """Predictions with the ground truth that came back for them, and the label rows left out, by reason."""

    frame: pd.DataFrame
    skipped: dict[str, int]


def labelled_predictions(
    store: ArtifactStore, model_name: str, version: str, task: str, classes: list[str] | None = None
) -> Labelled:
    """Predictions joined with the ground truth that came back for them (request id), with timestamps.

    Label rows that are not ground truth for ``task`` are skipped and counted (steps.monitor.labels).
    A multiclass model logs its predicted class (a name of ``classes``); it is joined as its index, like
    the labels."""
    return labelled_by_version(store, model_name, [version], task, classes)[version]


def labelled_by_version(
    store: ArtifactStore,
    model_name: str,
    versions: list[str],
    task: str,
    classes: list[str] | None = None,
) -> dict[str, Labelled]:
    """:func:`labelled_predictions` of several versions, reading the model's label files once (labels are
    kept per model, by request id, not per version). ``classes`` is the monitored version's class order;
    it is used for every version (a multiclass label file holds indices into it)."""
    feedback, bad_files = read_parquets(store, layout.feedback_labels(model_name))
    labels = clean_labels(feedback, task, len(classes) if classes else None)
    out: dict[str, Labelled] = {}
    for version in versions:
        predictions, bad_logs = read_parquets(
            store, layout.prediction_logs(model_name, version), columns=layout.PREDICTION_LOG_KEYS
        )
        skipped = dict(labels.skipped)
        if bad_files:
            skipped["unreadable label files"] = bad_files
        if bad_logs:
            skipped["unreadable prediction logs"] = bad_logs
        out[version] = Labelled(join_labels(predictions, labels.frame, task, classes), skipped)
    return out


def join_labels(
    predictions: pd.DataFrame, labels: pd.DataFrame, task: str, classes: list[str] | None
) -> pd.DataFrame:
    """Logged predictions (``request_id``, ``prediction``, ``ts``) with the label of each id; the first
    logged prediction of an id; a multiclass prediction (a class name) as its index in ``classes``."""
    if predictions.empty or labels.empty or not {"request_id", "prediction"} <= set(predictions):
        return pd.DataFrame(columns=["request_id", "prediction", "label", "ts"])
    logged = predictions[["request_id", "prediction", "ts"]]
    if task == "multiclass":
        index = {str(c): float(i) for i, c in enumerate(classes or [])}
        logged = logged.assign(prediction=logged["prediction"].astype(str).map(index))
    logged = logged[np.isfinite(pd.to_numeric(logged["prediction"], errors="coerce").to_numpy("float64"))]
    return logged.drop_duplicates("request_id").merge(
        labels[["request_id", "label"]], on="request_id", how="inner"
    )
