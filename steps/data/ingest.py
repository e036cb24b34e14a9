"""Ingest: read a source and write it once, under its content hash, to the artifact store.

The snapshot (Parquet), its whylogs profile and a small metadata file with the source URI live side by
side, so a model version's lineage leads to the exact rows it learned from.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.sources import read_source

ROW_GROUP_ROWS = 100_000
"""Rows per Parquet row group of a snapshot: a Dask reader makes one partition of each."""


@dataclass(frozen=True)
class Snapshot:
    """Where a content-addressed copy of a source lives, and what it holds."""

    digest: str
    source_uri: str
    uri: str
    profile_uri: str
    rows: int
    columns: list[str]
    created_at: str

    @property
    def path(self) -> str:
        return layout.snapshot_dir(self.digest)


def content_digest(frame: pd.DataFrame) -> str:
    """A SHA-256 over column names, dtypes and row hashes: equal data, equal digest (row order counts)."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


def ingest(
    source_uri: str,
    store: ArtifactStore,
    validator: WhylogsValidator,
    storage_options: dict[str, Any] | None = None,
    *,
    sample_rows: int | None = None,
    seed: int = 42,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> tuple[pd.DataFrame, Snapshot]:
    """Read the source, snapshot it (once per content) and return the frame with its snapshot record.

    With ``sample_rows`` a seeded sample is taken first and the sample is what gets snapshotted: the
    snapshot is always the exact rows a model learns from.
    """
    frame = read_source(source_uri, storage_options)
    if sample_rows is not None and sample_rows < len(frame):
        frame = frame.sample(n=sample_rows, random_state=seed).sort_index().reset_index(drop=True)
    return frame, write_snapshot(frame, source_uri, store, validator, row_group_rows=row_group_rows)


def write_snapshot(
    frame: pd.DataFrame,
    source_uri: str,
    store: ArtifactStore,
    validator: WhylogsValidator,
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> Snapshot:
    digest = content_digest(frame)
    meta_path = layout.snapshot_file(digest, layout.SNAPSHOT_META)
    if store.exists(meta_path):
        meta = json.loads(store.read_bytes(meta_path))
        return Snapshot(**meta)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, row_group_size=row_group_rows)
    uri = store.write_bytes(layout.snapshot_file(digest, layout.SNAPSHOT_DATA), buffer.getvalue())
    profile_uri = store.write_bytes(
        layout.snapshot_file(digest, layout.SNAPSHOT_PROFILE), validator.to_bytes(validator.profile(frame))
    )
    snapshot = Snapshot(
        digest=digest,
        source_uri=source_uri,
        uri=uri,
        profile_uri=profile_uri,
        rows=len(frame),
        columns=[str(c) for c in frame.columns],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # meta.json last: its presence means the snapshot is complete
    store.write_bytes(meta_path, json.dumps(asdict(snapshot), indent=2).encode())
    return snapshot


def read_snapshot(store: ArtifactStore, digest: str) -> pd.DataFrame:
    """The exact rows of a snapshot, for lineage and for re-running a past training."""
    return pd.read_parquet(io.BytesIO(store.read_bytes(layout.snapshot_file(digest, layout.SNAPSHOT_DATA))))
