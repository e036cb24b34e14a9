"""Ingest: snapshots are content-addressed, written once, and readable back exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.ingest import content_digest, ingest, read_snapshot


def test_digest_depends_on_content_only() -> None:
    a = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert content_digest(a) == content_digest(a.copy())
    assert content_digest(a) != content_digest(a.assign(x=[1, 3]))
    assert content_digest(a) != content_digest(a.rename(columns={"x": "z"}))


def test_snapshot_written_once_with_profile_and_source(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    pd.DataFrame({"x": range(100), "y": ["a", "b"] * 50}).to_csv(source, index=False)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    frame, snap = ingest(str(source), store, WhylogsValidator())
    assert snap.rows == 100 and snap.source_uri == str(source)
    assert store.exists(f"{snap.path}/data.parquet") and store.exists(f"{snap.path}/profile.bin")
    written = (tmp_path / "artifacts" / snap.path / "data.parquet").stat().st_mtime_ns
    _, again = ingest(str(source), store, WhylogsValidator())
    assert again == snap
    assert (tmp_path / "artifacts" / snap.path / "data.parquet").stat().st_mtime_ns == written
    pd.testing.assert_frame_equal(read_snapshot(store, snap.digest), frame)
    profile = WhylogsValidator.from_bytes(store.read_bytes(f"{snap.path}/profile.bin"))
    assert set(profile.get_columns()) == {"x", "y"}


def test_sample_is_what_gets_snapshotted(tmp_path: Path) -> None:
    source = tmp_path / "d.csv"
    pd.DataFrame({"x": range(1000)}).to_csv(source, index=False)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    frame, snap = ingest(str(source), store, WhylogsValidator(), sample_rows=100, seed=3)
    assert len(frame) == snap.rows == 100
    pd.testing.assert_frame_equal(read_snapshot(store, snap.digest), frame)
