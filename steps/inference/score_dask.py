"""Score a Dask DataFrame partition by partition on the workers: the same files as ``score_chunks``.

Each worker reads its partitions itself (from the artifact store, local or S3, with the stack's storage
options), derives and encodes the features, predicts in place and writes its Parquet part; only a
one-row summary and the part's serialized profile come back. One partition is one part, numbered like
the pandas path's chunks with ``row`` counted from the start of the snapshot, so with partitions of
``chunk_rows`` rows the output is identical file for file.

Nothing here imports Prefect: a Dask worker only ever runs plain functions.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import ProfileAccumulator, WhylogsValidator
from stacks.components.model_registry import LoadedModel
from stacks.components.prediction_store import PredictionWriter
from steps.data import features
from steps.inference.score import (
    PartWritten,
    ScoringResult,
    finish,
    predict,
    profile_sample,
    write_part,
)

_SUMMARY = pd.DataFrame(
    {
        "number": pd.Series(dtype="int64"),
        "uri": pd.Series(dtype=object),
        "rows": pd.Series(dtype="int64"),
        "positives": pd.Series(dtype="int64"),
        "predict_s": pd.Series(dtype="float64"),
        "profile": pd.Series(dtype=object),
    }
)


def read_snapshot(uri: str, storage_options: dict[str, Any] | None = None) -> Any:
    """A snapshot's Parquet file as a Dask DataFrame with one partition per row group.

    Strings keep pandas' own dtype (Dask would make them ``string[pyarrow]``), so partitions are the
    frames ``pd.read_parquet`` gives and the parts' key columns match the pandas path's.
    """
    import dask
    import dask.dataframe as dd

    with dask.config.set({"dataframe.convert-string": False}):
        return dd.read_parquet(uri, storage_options=storage_options or None, split_row_groups=True)


def _score_partition(
    part: pd.DataFrame,
    model: LoadedModel,
    spec: ProblemSpec,
    joined: dict[str, pd.DataFrame],
    store: ArtifactStore,
    validator: WhylogsValidator,
    output: str,
    keep_columns: list[str] | None,
    profile_rows: int,
    offsets: list[int],
    sink: PredictionWriter | None = None,
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    assert partition_info is not None, "map_partitions passes partition_info"
    number = int(partition_info["number"])
    raw = part.reset_index(drop=True)
    derived = features.derive(raw, spec, joined, model.schema.classes, strict_label=False)
    encoded = features.encode(derived, model.schema)
    started = time.perf_counter()
    predictions = predict(model, encoded)
    predict_s = time.perf_counter() - started
    keys = raw[keep_columns] if keep_columns else None
    written = write_part(model, store, output, number, offsets[number], predictions, keys, sink)
    profile = ProfileAccumulator()
    profile.track(profile_sample(encoded, predictions, number, profile_rows, model.schema))
    summary = {
        "number": [number],
        "uri": [written.uri],
        "rows": [written.rows],
        "positives": [written.positives],
        "predict_s": [predict_s],
        "profile": [validator.to_bytes(profile.view())],  # bytes travel; a profile view may not pickle
    }
    return pd.DataFrame(summary).astype(_SUMMARY.dtypes.to_dict())


def score_partitions(
    client: Any,
    model: LoadedModel,
    raw: Any,
    spec: ProblemSpec,
    joined: dict[str, pd.DataFrame],
    store: ArtifactStore,
    validator: WhylogsValidator,
    output: str,
    *,
    keep_columns: list[str] | None = None,
    profile_rows: int = 5_000,
    sink: PredictionWriter | None = None,
) -> ScoringResult:
    """Score every row of the raw Dask DataFrame ``raw``; write ``output/part-NNNNN.parquet`` and a profile.

    The model and the joined tables (small: weather) are sent to every worker once; row numbers need the
    partitions' lengths first, which a Parquet reader gets from the files' metadata pass. A ``sink`` (the
    stack's prediction store) travels to the workers, each of which upserts its own partition's rows.
    """
    started = time.perf_counter()
    lengths = [int(n) for n in client.compute(raw.map_partitions(len)).result()]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if lengths else []
    shared_model, shared_joined = client.scatter([model, joined], broadcast=True)
    summary = raw.map_partitions(
        _score_partition,
        shared_model,
        spec,
        shared_joined,
        store,
        validator,
        output,
        keep_columns,
        profile_rows,
        offsets,
        sink,
        meta=_SUMMARY,
        enforce_metadata=False,
    )
    summary = client.compute(summary).result()  # on this client's cluster, whichever is the default
    summary = summary.sort_values("number")
    rows = list(summary.itertuples(index=False))
    written = [PartWritten(row.uri, int(row.rows), int(row.positives)) for row in rows]
    views = [validator.from_bytes(row.profile) for row in rows]
    profile = validator.merge(views) if views else None
    predict_s = float(summary["predict_s"].sum())
    return finish(model, store, validator, output, written, profile, predict_s, started)
