"""Tuning, training and scoring on a real two-worker Dask cluster (threads: it starts in milliseconds)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb
from distributed import Client, LocalCluster

from flywheel.contracts.problem import load_spec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.components.model_registry import LoadedModel
from steps.data import features
from steps.data.split import Splits, split
from steps.inference.score import score_chunks
from steps.inference.score_dask import read_snapshot, score_partitions
from steps.model import train_dask
from steps.model.evaluate import score
from steps.model.train import train
from steps.model.tune import tune
from steps.model.xgb import predict

pytestmark = pytest.mark.slow
SPEC = load_spec("flights")
PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_depth": 5,
    "max_cat_to_onehot": 1,
    "seed": 0,
}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as dask_client,  # as a task runner's client is
    ):
        yield dask_client


@pytest.fixture(scope="module")
def parts(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> Splits:
    return split(features.build_dataset(flights_sample, SPEC, {"weather": weather}), SPEC)


def test_trials_run_on_both_workers_in_the_shared_study(
    client: Client, parts: Splits, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = tune(
        parts.fit, parts.valid, SPEC, study_name="d", storage=storage, n_trials=10, seed=3, client=client
    )
    assert result.n_trials == 10 and len(result.trials) == 10  # the same count as in one process
    study = optuna.load_study(study_name="d", storage=storage)  # the study is in the stack's storage
    trials = study.trials
    assert len(trials) == 10
    assert {t.user_attrs["dask_worker"] for t in trials} == set(client.nthreads())
    # every trial reported to the shared study (what the pruner reads) and the pruner did prune
    assert all(len(t.intermediate_values) >= 2 for t in trials)
    assert result.n_pruned >= 1
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) == result.n_pruned
    assert 0.5 < result.best_value <= 1.0 and 1 <= result.best_rounds <= SPEC.tuning.num_boost_round
    assert "nthread" not in result.best_params  # the refit uses its own threads, not a trial's one


def test_dask_booster_has_the_pandas_contract(client: Client, parts: Splits) -> None:
    on_dask = train_dask.train_dataset(client, parts.train, PARAMS, 60, partition_rows=2_000)
    in_process = train(parts.train, PARAMS, 60)
    assert isinstance(on_dask, xgb.Booster) and on_dask.attr("feature_schema_version") == "1"
    assert on_dask.feature_names == in_process.feature_names == parts.train.schema.names
    assert on_dask.feature_types == in_process.feature_types
    cats = dict(on_dask.get_categories(export_to_arrow=True).to_arrow())
    expected = dict(in_process.get_categories(export_to_arrow=True).to_arrow())
    for column in ("carrier", "origin", "dest"):
        assert cats[column].to_pylist() == expected[column].to_pylist()
    auc_dask = score(parts.test.y.to_numpy(), predict(on_dask, parts.test.X), "binary")["roc_auc"]
    auc_pandas = score(parts.test.y.to_numpy(), predict(in_process, parts.test.X), "binary")["roc_auc"]
    assert abs(auc_dask - auc_pandas) < 0.02, (auc_dask, auc_pandas)


def test_unknown_categories_are_refused(client: Client, parts: Splits) -> None:
    import dask.dataframe as dd

    frame = parts.train.frame.head(500).astype({"carrier": "string"})
    unknown = dd.from_pandas(frame, npartitions=2).astype({"carrier": "category"})  # unknown to Dask
    with pytest.raises(ValueError, match=r"\['carrier'\] have unknown categories"):
        train_dask.train(client, unknown, parts.train.schema.names, SPEC.label, PARAMS, 2)


def test_device_cuda_reaches_xgboost_on_both_paths(
    client: Client, parts: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There is no GPU here (XGBoost falls back to the CPU), so record the devices XGBoost was asked for."""
    import xgboost.dask as dxgb

    asked: list[tuple[str, str]] = []

    def spy(module: Any, name: str) -> None:
        real = getattr(module, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            params = args[1] if name == "train" and module is dxgb else args[0]
            asked.append((f"{module.__name__}.{name}", params["device"]))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, call)

    spy(xgb, "train")
    spy(dxgb, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no visible GPU"
        result = tune(parts.fit, parts.valid, SPEC, study_name="g", n_trials=1, device="cuda", client=client)
        train_dask.train_dataset(client, parts.train, result.best_params, 2)
        tune(parts.fit, parts.valid, SPEC, study_name="h", n_trials=1, device="cuda")
        train(parts.train, result.best_params, 2)
    assert result.best_params["device"] == "cuda"
    assert asked == [
        ("xgboost.train", "cuda"),  # the trial on a Dask worker
        ("xgboost.dask.train", "cuda"),
        ("xgboost.train", "cuda"),  # the trial in process
        ("xgboost.train", "cuda"),  # the refit in process
    ]


def test_partitions_score_like_chunks_row_for_row(
    client: Client, flights: pd.DataFrame, weather: pd.DataFrame, parts: Splits, tmp_path: Path
) -> None:
    model = LoadedModel("m", "1", "r", train(parts.train, PARAMS, 20), parts.train.schema, 0.3, "binary", "d")
    source = flights.iloc[5_000:12_000].reset_index(drop=True)  # unlabelled rows are scored too
    source.to_parquet(tmp_path / "snapshot.parquet", index=False, row_group_size=3_000)
    store, validator = ArtifactStore(str(tmp_path / "artifacts")), WhylogsValidator()
    encoded = features.encode(features.derive(source, SPEC, {"weather": weather}), model.schema)
    keep = ["carrier", "tailnum"]
    chunks = score_chunks(model, encoded, store, validator, "pandas", keys=source[keep], chunk_rows=3_000)
    partitions = score_partitions(
        client,
        model,
        read_snapshot(str(tmp_path / "snapshot.parquet")),
        SPEC,
        {"weather": weather},
        store,
        validator,
        "dask",
        keep_columns=keep,
    )
    assert partitions.rows == chunks.rows == 7_000 and len(partitions.parts) == len(chunks.parts) == 3
    assert [Path(p).name for p in partitions.parts] == [Path(p).name for p in chunks.parts]
    for ours, theirs in zip(partitions.parts, chunks.parts, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(theirs))
    assert partitions.positive_rate == chunks.positive_rate
    profiles = [
        WhylogsValidator.from_bytes(Path(r.profile_uri).read_bytes()).to_pandas()
        for r in (chunks, partitions)
    ]
    for column in ("prediction", "carrier", "distance"):
        assert profiles[0].loc[column, "counts/n"] == profiles[1].loc[column, "counts/n"] == 7_000
    np.testing.assert_allclose(
        profiles[0].loc["prediction", "distribution/mean"], profiles[1].loc["prediction", "distribution/mean"]
    )


@pytest.fixture(scope="module")
def s3_store() -> Iterator[tuple[ArtifactStore, dict[str, Any]]]:
    """An artifact store on an S3 endpoint (moto's server, as the staging stack uses), with its options."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"aws_access_key_id": "flywheel", "aws_secret_access_key": "flywheel-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket="scale")
    options = {"key": "flywheel", "secret": "flywheel-secret", "client_kwargs": {"endpoint_url": endpoint}}
    try:
        yield ArtifactStore("s3://scale/artifacts", options), options
    finally:
        server.stop()


def test_partitions_read_and_write_the_s3_artifact_store(
    client: Client,
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    parts: Splits,
    s3_store: tuple[ArtifactStore, dict[str, Any]],
) -> None:
    """Workers read the snapshot from S3 and write their parts there with the stack's storage options."""
    import io

    store, options = s3_store
    model = LoadedModel("m", "1", "r", train(parts.train, PARAMS, 10), parts.train.schema, 0.3, "binary", "d")
    source = flights.iloc[:5_000].reset_index(drop=True)
    buffer = io.BytesIO()
    source.to_parquet(buffer, index=False, row_group_size=2_000)
    snapshot = store.write_bytes("snapshots/s/data.parquet", buffer.getvalue())
    assert snapshot == "s3://scale/artifacts/snapshots/s/data.parquet"
    result = score_partitions(
        client,
        model,
        read_snapshot(snapshot, options),
        SPEC,
        {"weather": weather},
        store,
        WhylogsValidator(),
        "out",
    )
    assert result.rows == 5_000 and result.parts[0] == "s3://scale/artifacts/out/part-00000.parquet"
    assert store.list("out") == [*(f"out/part-0000{i}.parquet" for i in range(3)), "out/profile.bin"]
    scored = pd.concat(
        [pd.read_parquet(io.BytesIO(store.read_bytes(f"out/part-0000{i}.parquet"))) for i in range(3)]
    )
    encoded = features.encode(features.derive(source, SPEC, {"weather": weather}), model.schema)
    np.testing.assert_allclose(scored["prediction"].to_numpy(), predict(model.booster, encoded), rtol=1e-6)
