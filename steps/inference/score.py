"""Score rows in chunks with native in-place prediction and write Parquet parts to the artifact store.

Chunks bound memory (a chunk's features, predictions and output frame) whatever the source's size, and
each part is written as soon as it is scored, so a failure loses at most one chunk of work.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.components.model_registry import LoadedModel


@dataclass
class ScoringResult:
    rows: int
    parts: list[str]
    predict_seconds: float
    total_seconds: float
    profile_uri: str
    positive_rate: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.total_seconds if self.total_seconds else float("nan")


def score_chunks(
    model: LoadedModel,
    features: pd.DataFrame,
    store: ArtifactStore,
    validator: WhylogsValidator,
    output: str,
    *,
    keys: pd.DataFrame | None = None,
    chunk_rows: int = 100_000,
) -> ScoringResult:
    """Predict every row; write ``output/part-NNNNN.parquet`` (keys, prediction, decision) and a profile."""
    started = time.perf_counter()
    predict_seconds = 0.0
    parts: list[str] = []
    profile = None
    binary = model.task == "binary"
    positives = 0
    for number, start in enumerate(range(0, len(features), chunk_rows)):
        chunk = features.iloc[start : start + chunk_rows]
        t = time.perf_counter()
        predictions = np.asarray(
            model.booster.inplace_predict(chunk, validate_features=False), dtype="float64"
        )
        predict_seconds += time.perf_counter() - t
        out = (
            keys.iloc[start : start + chunk_rows].reset_index(drop=True).copy()
            if keys is not None
            else (pd.DataFrame(index=range(len(chunk))))
        )
        out["prediction"] = predictions
        if binary:
            out["decision"] = predictions >= model.threshold
            positives += int(out["decision"].sum())
        out["model_version"] = model.version
        buffer = io.BytesIO()
        out.to_parquet(buffer, index=False)
        parts.append(store.write_bytes(f"{output}/part-{number:05d}.parquet", buffer.getvalue()))
        profiled = chunk.copy()
        profiled["prediction"] = predictions
        view = validator.profile(profiled)
        profile = view if profile is None else profile.merge(view)
    profile_uri = store.write_bytes(f"{output}/profile.bin", validator.to_bytes(profile)) if profile else ""
    rows = len(features)
    return ScoringResult(
        rows=rows,
        parts=parts,
        predict_seconds=predict_seconds,
        total_seconds=time.perf_counter() - started,
        profile_uri=profile_uri,
        positive_rate=positives / rows if binary and rows else None,
    )
