"""The training and batch inference flows on stacks that name Dask: training under the orchestrator's
DaskTaskRunner (a LocalCluster of two worker processes, as ``flywheel run`` starts it), batch inference
on a running scheduler named by the compute component's ``dask_address`` (as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from distributed import LocalCluster

from flows.inference import inference
from flows.runtime import task_runner
from flows.training import training
from flywheel.contracts.problem import load_spec
from stacks.loader import STACKS_DIR, load_stack
from steps.data.sources import read_source

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def dask_stack(module_home: Path) -> Path:
    """The local stack with the orchestrator's task runner and the compute engine on Dask."""
    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text())
    doc["stack_name"] = "local-dask"
    doc["components"]["orchestrator"]["configuration"].update(
        task_runner="dask", dask_n_workers=2, dask_threads_per_worker=1
    )
    doc["components"]["compute"] = {
        "name": "local-dask",
        "flavor": "dask",
        "configuration": {"device": "cpu", "engine": "dask"},
    }
    path = module_home / "local-dask.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A running Dask scheduler with two workers (threads, so they start at once), reached by address."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def address_stack(module_home: Path, scheduler: str) -> Path:
    """The local stack whose compute engine is Dask on the scheduler at an address."""
    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text())
    doc["stack_name"] = "local-scheduler"
    doc["components"]["compute"] = {
        "name": "scheduler",
        "flavor": "dask",
        "configuration": {"engine": "dask", "dask_address": scheduler, "partition_rows": 3_000},
    }
    path = module_home / "local-scheduler.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(dask_stack: Path) -> dict[str, Any]:
    runner = task_runner(load_stack(str(dask_stack)))
    assert type(runner).__name__ == "DaskTaskRunner"
    return training.with_options(task_runner=runner)(
        stack=str(dask_stack), problem="flights", n_trials=4, sample_rows=8_000, seed=1
    )


def test_training_tunes_and_trains_on_dask(trained: dict[str, Any], module_home: Path) -> None:
    assert trained["promoted"] and trained["version"] == "1"
    assert trained["compute"] == {
        "engine": "dask",
        "device": "cpu",
        "dask": "Dask LocalCluster (2 workers x 1 threads)",
    }
    assert trained["tuning"]["trials"] == 4 and 0.6 < trained["metrics"]["roc_auc"] < 1.0
    storage = f"sqlite:///{module_home / 'optuna.db'}"
    study = optuna.load_study(study_name=f"flights-{trained['run_id']}", storage=storage)
    assert len(study.trials) == 4  # in the stack's study storage, written through the scheduler
    assert all(t.user_attrs["dask_worker"].startswith("tcp://") for t in study.trials)  # worker processes


def test_partitioned_batch_scoring_equals_the_pandas_flow(
    trained: dict[str, Any], address_stack: Path, scheduler: str, tmp_path: Path
) -> None:
    flights = read_source(load_spec("flights").source)
    december = flights[flights["month"] == 12].head(7_000).assign(arr_delay=np.nan)
    source = tmp_path / "december.parquet"
    december.to_parquet(source, index=False)
    keep = ["carrier", "tailnum"]
    on_dask = inference(stack=str(address_stack), problem="flights", source=str(source), keep_columns=keep)
    local = inference(
        stack="local", problem="flights", source=str(source), chunk_rows=3_000, keep_columns=keep
    )
    assert on_dask["compute"]["dask"] == f"Dask scheduler {scheduler}"
    assert on_dask["version"] == local["version"] == trained["version"]
    assert on_dask["rows"] == local["rows"] == 7_000 and len(on_dask["parts"]) == len(local["parts"]) == 3
    ours = pd.concat([pd.read_parquet(p) for p in on_dask["parts"]], ignore_index=True)
    theirs = pd.concat([pd.read_parquet(p) for p in local["parts"]], ignore_index=True)
    assert ours["row"].tolist() == list(range(7_000))
    pd.testing.assert_frame_equal(ours, theirs)
    assert on_dask["positive_rate"] == local["positive_rate"]
    # each worker upserted its partition into the stack's prediction store: every December flight once
    assert on_dask["prediction_store"]["stored"] == local["prediction_store"]["stored"] == 7_000
    assert Path(on_dask["profile"]).is_file()
