"""Train on a Dask cluster with xgboost.dask: the same parameters and rounds, a plain Booster out.

Each worker builds the quantile matrix of its own partitions and the workers train one model together,
so rows never have to fit in one process. The categoricals keep their known categories (the vocabulary
``features.encode`` fixed), so the booster's categories, feature names and types are those of the
pandas path, and evaluate, explain, register and serving take it unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import xgboost as xgb

from steps.data.features import Dataset


def partitioned(data: Dataset, partition_rows: int, n_workers: int = 1) -> Any:
    """An in-memory data set's features and label as a Dask DataFrame of ``partition_rows`` rows a partition.

    At least one partition per worker: a worker without rows would sit out the training.
    """
    import dask.dataframe as dd

    frame = data.frame[[*data.schema.names, data.schema.label]].reset_index(drop=True)
    npartitions = max(n_workers, math.ceil(len(frame) / partition_rows), 1)
    return dd.from_pandas(frame, npartitions=min(npartitions, max(len(frame), 1)), sort=False)


def n_workers(client: Any) -> int:
    """The cluster's workers, asked of the scheduler directly.

    Not ``scheduler_info()``: the client's periodic refresh replaces that cache with one that lists no
    workers, and it can land between the fetch and the read (seen in CI: an empty worker set).
    """
    return max(1, len(client.nthreads()))


def train(
    client: Any,
    frame: Any,
    names: list[str],
    label: str,
    params: dict[str, Any],
    rounds: int,
) -> xgb.Booster:
    """Train on the Dask DataFrame ``frame`` (features ``names``, with known categories, and ``label``).

    The frame is persisted on the workers first: the features and the label must come in the same
    partitions, and Dask would otherwise read a one-column projection (the label) in fewer, fused ones.
    """
    from xgboost import dask as dxgb

    unknown = [
        n for n in names if isinstance(frame.dtypes[n], pd.CategoricalDtype) and not frame[n].cat.known
    ]
    if unknown:
        raise ValueError(
            f"categorical column(s) {unknown} have unknown categories; encode partitions with the "
            "feature schema (features.encode) so every worker codes them the same way"
        )
    frame = client.persist(frame[[*names, label]])
    # xgboost.dask looks up the default client even when given one; a task runner's client is not it
    with client.as_current():
        dtrain = dxgb.DaskQuantileDMatrix(client, frame[names], frame[label], enable_categorical=True)
        output = dxgb.train(client, params, dtrain, num_boost_round=max(1, rounds), verbose_eval=False)
    booster: xgb.Booster = output["booster"]
    booster.set_attr(feature_schema_version="1")
    return booster


def train_dataset(
    client: Any, data: Dataset, params: dict[str, Any], rounds: int, *, partition_rows: int = 100_000
) -> xgb.Booster:
    """The flow's form: an in-memory training period, partitioned and trained on the cluster."""
    frame = partitioned(data, partition_rows, n_workers(client))
    return train(client, frame, data.schema.names, data.schema.label, params, rounds)
