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

import pandas as pd

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator


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


def _read_parquets(store: ArtifactStore, prefix: str) -> pd.DataFrame:
    frames = [
        pd.read_parquet(io.BytesIO(store.read_bytes(p))) for p in store.list(prefix) if p.endswith(".parquet")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def labelled_predictions(store: ArtifactStore, model_name: str, version: str) -> pd.DataFrame:
    """Predictions joined with the ground truth that came back for them (request id), with timestamps."""
    predictions = _read_parquets(store, f"serving/{model_name}/v{version}/predictions")
    feedback = _read_parquets(store, f"serving/{model_name}/feedback")
    if predictions.empty or feedback.empty:
        return pd.DataFrame(columns=["request_id", "prediction", "label", "ts"])
    latest = feedback.sort_values("ts").drop_duplicates("request_id", keep="last")
    joined = predictions[["request_id", "prediction", "ts"]].merge(
        latest[["request_id", "label"]], on="request_id", how="inner"
    )
    return joined
