"""What MLflow's UI shows of our runs: experiments of the model-training kind, runs named for what they are,
numbers as people read them. Real MLflow on the local stack's SQLite (a fresh database per test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from flywheel.contracts.model_version import REASON_TAG
from flywheel.contracts.problem import load_spec
from stacks.components.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    configure_mlflow,
    ensure_experiment,
    experiment_ui_path,
    readable,
    reason_label,
    run_name,
)
from stacks.loader import load_stack
from steps.model import track

SPEC = load_spec("flights")


@pytest.fixture
def client(home: Path) -> MlflowClient:
    configure_mlflow(load_stack("local"))  # creates the stack's experiment in a new SQLite database
    assert (home / "mlflow.db").exists()  # a fresh SQLite store, under this test's home
    return MlflowClient()


def _kind(client: MlflowClient, name: str) -> str | None:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return experiment.tags.get(EXPERIMENT_KIND_TAG)


def test_new_experiments_open_on_model_training(client: MlflowClient) -> None:
    assert _kind(client, "flywheel") == MODEL_TRAINING_KIND  # the training experiment, made by the stack
    ensure_experiment("monitoring")  # what the monitoring runs create
    assert _kind(client, "monitoring") == MODEL_TRAINING_KIND


def test_an_existing_experiment_gets_the_kind_when_a_run_starts(client: MlflowClient) -> None:
    client.create_experiment("older")  # as an earlier Flywheel (or MLflow itself) created it: no kind
    assert _kind(client, "older") is None
    run_id = track.start_run("older", SPEC, {REASON_TAG: "manual"})
    assert _kind(client, "older") == MODEL_TRAINING_KIND
    run = client.get_run(run_id)
    assert run.info.experiment_id == client.get_experiment_by_name("older").experiment_id  # type: ignore[union-attr]
    assert run.info.run_name.startswith("flight-delay train ") and run.info.run_name.endswith(" UTC (manual)")


def test_a_kind_set_on_purpose_is_kept(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("agents", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment("agents") == experiment_id
    assert _kind(client, "agents") == "genai_development"


def test_a_deleted_experiment_is_refused_with_the_way_back(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("gone")
    client.delete_experiment(experiment_id)
    with pytest.raises(ValueError, match=f"restore --experiment-id {experiment_id}"):
        ensure_experiment("gone")


def test_training_run_names_say_model_time_and_why() -> None:
    when = datetime(2026, 12, 1, 17, 5, tzinfo=timezone(timedelta(hours=1)))
    drift = "drift-detected: 3 of the last 4 windows drifting (carrier, dep_time)"
    assert (
        track.training_run_name(SPEC, drift, when)
        == "flight-delay train 2026-12-01 16:05 UTC (drift-detected)"
    )
    schedule = track.training_run_name(SPEC, "schedule (0 3 * * 1 UTC)", when.astimezone(UTC))
    assert schedule == "flight-delay train 2026-12-01 16:05 UTC (schedule)"
    assert track.training_run_name(SPEC, None, when) == "flight-delay train 2026-12-01 16:05 UTC"
    assert run_name("flight-delay", "monitor", "v3") == "flight-delay monitor v3"
    long = reason_label("x" * 100)
    assert len(long) == 40 and long.endswith("…")


def test_numbers_read_as_people_write_them() -> None:
    assert readable(4904) == "4,904" and readable(np.int64(336776)) == "336,776"
    assert readable(10.0) == "10" and readable(np.float64(12.0)) == "12"  # a month, not 10.0
    assert readable(0.25) == "0.25" and readable(float("nan")) == "nan"
    assert readable(True) == "True" and readable("all") == "all" and readable("2013") == "2013"


def test_experiment_links_open_the_machine_learning_view() -> None:
    assert experiment_ui_path("3") == "#/experiments/3/runs?workflowType=machine_learning"
