"""Reading the store's Parquet parts: only the columns asked for are decoded, a part without one of them
is still read, and damaged parts are counted, never fatal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore
from steps.monitor.windows import labelled_predictions, read_parquets

PREFIX = "serving/m/v1/predictions"


def _part(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _log(n: int, start: int = 0) -> pd.DataFrame:
    ids = [f"r{i}" for i in range(start, start + n)]
    features = {"carrier": ["AA", "B6"] * (n // 2), "distance": np.arange(n, dtype="float64")}
    return pd.DataFrame({**features, "prediction": np.linspace(0, 1, n), "request_id": ids, "ts": 1.0})


def test_only_the_columns_asked_for_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(str(tmp_path))
    store.write_bytes(f"{PREFIX}/20260101/a.parquet", _part(_log(10)))
    store.write_bytes(f"{PREFIX}/20260101/b.parquet", _part(_log(10, 10).drop(columns=["ts"])))
    store.write_bytes(f"{PREFIX}/20260101/c.parquet", b"not parquet")
    asked: list[list[str]] = []
    real = pd.read_parquet

    def spy(source: object, columns: list[str] | None = None, **kwargs: object) -> pd.DataFrame:
        asked.append(["(all)"] if columns is None else list(columns))
        return real(source, columns=columns, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pd, "read_parquet", spy)
    frame, unreadable = read_parquets(store, PREFIX, columns=layout.PREDICTION_LOG_KEYS)
    assert unreadable == 1
    assert sorted(asked, key=len) == [["request_id", "prediction"], ["request_id", "prediction", "ts"]]
    assert set(frame.columns) == set(layout.PREDICTION_LOG_KEYS) and len(frame) == 20
    whole, _ = read_parquets(store, PREFIX)
    assert {"carrier", "distance"} <= set(whole.columns)
    projected = whole[list(layout.PREDICTION_LOG_KEYS)].sort_values("request_id", ignore_index=True)
    pd.testing.assert_frame_equal(frame.sort_values("request_id", ignore_index=True), projected)


def test_the_join_reads_no_feature(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    log = _log(6)
    store.write_bytes(f"{PREFIX}/20260101/a.parquet", _part(log))
    labels = pd.DataFrame({"request_id": ["r1", "r2", "r5"], "label": [1.0, 0.0, 1.0], "ts": 2.0})
    store.write_bytes("serving/m/feedback/20260101/l.parquet", _part(labels))
    names = pq.read_schema(io.BytesIO(store.read_bytes(f"{PREFIX}/20260101/a.parquet"))).names
    assert {"carrier", "distance"} <= set(names)  # the part holds the features; the join leaves them
    labelled = labelled_predictions(store, "m", "1", "binary")
    assert sorted(labelled.frame["request_id"]) == ["r1", "r2", "r5"]
    assert not {"carrier", "distance"} & set(labelled.frame.columns)
