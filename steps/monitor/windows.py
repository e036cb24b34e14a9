"""Reading what the service wrote: profile windows, the prediction log and feedback labels.

The service's profiling process writes one profile per (model version, time window, writer process) under
``serving/<model>/v<version>/profiles/<window>-<writer>.bin``; several workers write the same window, so the
files of one window are merged here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.monitor.labels import clean_labels


@dataclass(frozen=True)
class Window:
    start: datetime
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.start.strftime("%Y%m%dT%H%M%SZ")


def _window_start(path: str) -> datetime:
    stamp = path.rsplit("/", 1)[-1].split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def list_windows(
    store: ArtifactStore, model_name: str, version: str, since: datetime | None = None
) -> list[Window]:
    """Windows of a version's traffic, oldest first, optionally only those starting after ``since``."""
    prefix = f"serving/{model_name}/v{version}/profiles"
    grouped: dict[datetime, list[str]] = {}
    for path in store.list(prefix):
        if path.endswith(".bin"):
            grouped.setdefault(_window_start(path), []).append(path)
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
    return WhylogsValidator.from_bytes(
        store.read_bytes(f"models/{model_name}/{version}/training_profile.bin")
    )


def _read_parquets(store: ArtifactStore, prefix: str) -> tuple[pd.DataFrame, int]:
    """Every Parquet file under ``prefix`` concatenated, and how many could not be read (a file cut short by
    a process that died, or not Parquet at all, is skipped, not fatal)."""
    frames, unreadable = [], 0
    for path in store.list(prefix):
        if not path.endswith(".parquet"):
            continue
        try:
            frames.append(pd.read_parquet(io.BytesIO(store.read_bytes(path))))
        except Exception:  # pyarrow raises several types for a damaged file
            unreadable += 1
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), unreadable


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
    predictions, bad_logs = _read_parquets(store, f"serving/{model_name}/v{version}/predictions")
    feedback, bad_files = _read_parquets(store, f"serving/{model_name}/feedback")
    labels = clean_labels(feedback, task, len(classes) if classes else None)
    skipped = dict(labels.skipped)
    if bad_files:
        skipped["unreadable label files"] = bad_files
    if bad_logs:
        skipped["unreadable prediction logs"] = bad_logs
    if predictions.empty or labels.frame.empty or not {"request_id", "prediction"} <= set(predictions):
        return Labelled(pd.DataFrame(columns=["request_id", "prediction", "label", "ts"]), skipped)
    logged = predictions[["request_id", "prediction", "ts"]]
    if task == "multiclass":
        index = {str(c): float(i) for i, c in enumerate(classes or [])}
        logged = logged.assign(prediction=logged["prediction"].astype(str).map(index))
    logged = logged[np.isfinite(pd.to_numeric(logged["prediction"], errors="coerce").to_numpy("float64"))]
    joined = logged.drop_duplicates("request_id").merge(
        labels.frame[["request_id", "label"]], on="request_id", how="inner"
    )
    return Labelled(joined, skipped)
