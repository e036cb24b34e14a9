"""Feedback becomes data: the labelled traffic of a model, collected into a content-addressed snapshot.

The service logs every prediction with its inputs (the prediction log, per version and window) and, apart
from it, the labels clients send back for those request ids. Joined by request id, they are training rows
the champion has never seen: the period that drifted, with its outcome. This step reads both, keeps one row
per request id (the first label, the first logged prediction), checks every row like an ingest does (label
valid for the task, the model's feature columns present, the spec's ranges), counts what it leaves out by
reason instead of failing, and writes what is left as a snapshot under its content hash, with a lineage file
naming the versions, windows and label files it came from.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts import layout
from flywheel.contracts.problem import ProblemSpec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.ingest import Snapshot, content_digest, write_snapshot
from steps.monitor.labels import clean_labels

REQUEST_ID = "request_id"
SERVED_AT = "served_at"
"""Epoch seconds the prediction was served: the feedback row's place on the training timeline."""
VERSION = "served_by"
LABEL = "label"
META_COLUMNS = (REQUEST_ID, SERVED_AT, VERSION, LABEL)
"""The columns a feedback snapshot holds besides the model's features."""


@dataclass(frozen=True)
class FeedbackLineage:
    """Where a feedback snapshot's rows came from: written beside it as ``lineage.json``."""

    model_name: str
    versions: list[str]
    windows: list[str]
    """The prediction-log windows (UTC stamps) that hold its rows."""
    label_files: int
    rows: int
    served_from: str | None
    served_to: str | None
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Feedback:
    """Labelled traffic: the model's feature columns as served, ``label`` (a class index for classifiers,
    the value for regression), the request id, the serving time and the version that answered."""

    frame: pd.DataFrame
    lineage: FeedbackLineage
    snapshot: Snapshot | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)


def _versions(store: ArtifactStore, model_name: str) -> list[str]:
    found = set()
    for path in store.list(layout.serving_model(model_name)):
        try:
            found.add(layout.parse_prediction_log_part(path).version)
        except layout.LayoutError:
            continue
    return sorted(found, key=lambda v: (len(v), v))


def _read(store: ArtifactStore, paths: list[str], skipped: dict[str, int], what: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_parquet(io.BytesIO(store.read_bytes(path))))
        except Exception:  # a part cut short by a process that died, or not Parquet at all
            skipped[f"unreadable {what}"] = skipped.get(f"unreadable {what}", 0) + 1
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _drop(frame: pd.DataFrame, mask: Any, reason: str, skipped: dict[str, int]) -> pd.DataFrame:
    count = int(np.asarray(mask).sum())
    if count:
        skipped[reason] = skipped.get(reason, 0) + count
    return frame[~np.asarray(mask)]


def collect(
    store: ArtifactStore,
    spec: ProblemSpec,
    feature_names: list[str],
    classes: list[str] | None,
    *,
    max_rows: int = 5_000_000,
) -> Feedback:
    """Every labelled prediction of the spec's model (all its versions), checked, one row per request id.

    ``feature_names`` are the columns a training row needs (the current schema's); a version whose log
    lacks one of them contributes no rows (counted). At most ``max_rows`` rows are kept (the newest).
    """
    model = spec.model_name
    skipped: dict[str, int] = {}
    labels_paths = [p for p in store.list(layout.feedback_labels(model)) if p.endswith(".parquet")]
    raw_labels = _read(store, labels_paths, skipped, "label files")
    labels = clean_labels(raw_labels, spec.task, len(classes) if classes else None)
    for reason, count in labels.skipped.items():
        skipped[f"label: {reason}"] = count
    parts: list[pd.DataFrame] = []
    windows: set[str] = set()
    for version in _versions(store, model):
        paths = [p for p in store.list(layout.prediction_logs(model, version)) if p.endswith(".parquet")]
        logged = _read(store, paths, skipped, "prediction logs")
        if logged.empty:
            continue
        lacking = [c for c in [*feature_names, "request_id", "ts"] if c not in logged.columns]
        if lacking:
            skipped[f"v{version} logged without {', '.join(lacking[:5])}"] = len(logged)
            continue
        windows.update(layout.parse_prediction_log_part(p).start.strftime(layout.WINDOW_STAMP) for p in paths)
        parts.append(logged[[*feature_names, "request_id", "ts"]].assign(**{VERSION: version}))
    empty = pd.DataFrame(columns=[*feature_names, *META_COLUMNS])
    if not parts or labels.frame.empty:
        lineage = FeedbackLineage(model, [], [], len(labels_paths), 0, None, None, skipped)
        return Feedback(empty, lineage)
    predictions = pd.concat(parts, ignore_index=True)
    predictions = predictions.sort_values("ts", kind="stable")
    repeated = predictions.duplicated("request_id", keep="first").to_numpy()
    predictions = _drop(predictions, repeated, "prediction logged twice (same request id)", skipped)
    joined = predictions.merge(labels.frame[["request_id", "label"]], on="request_id", how="inner")
    joined = joined.rename(columns={"ts": SERVED_AT})
    joined = _check_ranges(joined, spec, skipped)
    if len(joined) > max_rows:
        skipped["over the row bound (oldest left out)"] = len(joined) - max_rows
        joined = joined.iloc[-max_rows:]
    joined = joined[[*feature_names, *META_COLUMNS]].reset_index(drop=True)
    if spec.task != "regression":
        joined[LABEL] = joined[LABEL].astype("int64")
    served = pd.to_datetime(joined[SERVED_AT], unit="s", utc=True)
    lineage = FeedbackLineage(
        model_name=model,
        versions=sorted(set(joined[VERSION]), key=lambda v: (len(v), v)),
        windows=sorted(windows),
        label_files=len(labels_paths),
        rows=len(joined),
        served_from=served.min().isoformat() if len(joined) else None,
        served_to=served.max().isoformat() if len(joined) else None,
        skipped=skipped,
    )
    return Feedback(joined, lineage)


def _check_ranges(frame: pd.DataFrame, spec: ProblemSpec, skipped: dict[str, int]) -> pd.DataFrame:
    """The spec's validation ranges, row by row: a served row outside them is not training data."""
    for column, (low, high) in spec.validation.ranges.items():
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        below = (values < low) if low is not None else pd.Series(False, index=frame.index)
        above = (values > high) if high is not None else pd.Series(False, index=frame.index)
        outside = (below | above).to_numpy(dtype=bool)
        frame = _drop(frame, outside, f"{column} outside [{low}, {high}]", skipped)
    return frame


def snapshot(feedback: Feedback, store: ArtifactStore, validator: WhylogsValidator) -> Feedback:
    """Write the rows once under their content hash, with ``lineage.json`` beside them (written before the
    snapshot's ``meta.json``, which marks it complete); an empty collection writes nothing."""
    if feedback.frame.empty:
        return feedback
    frame = feedback.frame
    digest = content_digest(frame)
    lineage_path = layout.snapshot_file(digest, layout.SNAPSHOT_LINEAGE)
    if not store.exists(lineage_path):
        store.write_bytes(lineage_path, json.dumps(asdict(feedback.lineage), indent=2).encode())
    written = write_snapshot(frame, layout.feedback_source(feedback.lineage.model_name), store, validator)
    return Feedback(frame, feedback.lineage, written)


def read_lineage(store: ArtifactStore, digest: str) -> FeedbackLineage | None:
    """The lineage of a feedback snapshot, or None for a snapshot of a source."""
    path = layout.snapshot_file(digest, layout.SNAPSHOT_LINEAGE)
    if not store.exists(path):
        return None
    return FeedbackLineage(**json.loads(store.read_bytes(path)))
