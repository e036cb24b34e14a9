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


def partitioned(data: Dataset, partition_rows: int, n_workers: int = 1) -> tuple[Any, Any]:
    """Features and label of an in-memory data set as Dask collections of ``partition_rows`` rows.

    At least one partition per worker: a worker without rows would sit out the training.
    """
    import dask.dataframe as dd

    npartitions = max(n_workers, math.ceil(len(data.frame) / partition_rows), 1)
    frame = data.frame[[*data.schema.names, data.schema.label]].reset_index(drop=True)
    ddf = dd.from_pandas(frame, npartitions=min(npartitions, max(len(frame), 1)), sort=False)
    return ddf[data.schema.names], ddf[data.schema.label]


def n_workers(client: Any) -> int:
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def train(
    client: Any,
    features: Any,
    label: Any,
    params: dict[str, Any],
    rounds: int,
) -> xgb.Booster:
    """Train on Dask DataFrame ``features`` (known categories) and ``label`` for ``rounds`` rounds."""
    from xgboost import dask as dxgb

    unknown = [
        str(c)
        for c, dtype in features.dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype) and not features[c].cat.known
    ]
    if unknown:
        raise ValueError(
            f"categorical column(s) {unknown} have unknown categories; encode partitions with the "
            "feature schema (features.encode) so every worker codes them the same way"
        )
    # xgboost.dask looks up the default client even when given one; a task runner's client is not it
    with client.as_current():
        dtrain = dxgb.DaskQuantileDMatrix(client, features, label, enable_categorical=True)
        output = dxgb.train(client, params, dtrain, num_boost_round=max(1, rounds), verbose_eval=False)
    booster: xgb.Booster = output["booster"]
    booster.set_attr(feature_schema_version="1")
    return booster


def train_dataset(
    client: Any, data: Dataset, params: dict[str, Any], rounds: int, *, partition_rows: int = 100_000
) -> xgb.Booster:
    """The flow's form: an in-memory training period, partitioned and trained on the cluster."""
    features, label = partitioned(data, partition_rows, n_workers(client))
    return train(client, features, label, params, rounds)
