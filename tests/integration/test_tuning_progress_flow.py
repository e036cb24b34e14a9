"""Tuning inside a Prefect flow shows its progress in Prefect: a log line per trial and a progress artifact.

Real Prefect (the session's test server), the real tune step on a small slice of the flights data; the
flow here is the training flow's tune call and nothing else, so the check costs seconds, not a training.
"""

from __future__ import annotations

from typing import cast
from uuid import UUID

import pandas as pd
from prefect import flow
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.context import get_run_context
from prefect.logging.handlers import APILogHandler

from flows.progress import TuningProgress
from flows.tasks import StepTimer
from flywheel.contracts.problem import load_spec
from steps.data.features import build_dataset
from steps.data.split import split
from steps.model.tune import tune

SPEC = load_spec("flights")


@flow(name="tuning-progress-check")
def _tune_with_progress(frame: pd.DataFrame, weather: pd.DataFrame) -> tuple[UUID, float]:
    parts = split(build_dataset(frame, SPEC, {"weather": weather}), SPEC)
    result = StepTimer().run(
        tune,
        "tune",
        parts.fit,
        parts.valid,
        SPEC,
        study_name="progress",
        n_trials=3,
        timeout_s=120,
        on_trial=TuningProgress("flights-tuning-check", 3, SPEC.model_name),
    )
    run = get_run_context().flow_run  # type: ignore[union-attr]
    assert run is not None
    return run.id, result.best_value


def test_tuning_progress_reaches_the_prefect_ui(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> None:
    run_id, best = _tune_with_progress(flights_sample.head(4000), weather)
    artifact = cast(Artifact | None, Artifact.get(key="flights-tuning-check"))  # sync call: no coroutine
    assert artifact is not None and artifact.type == "progress"
    assert float(cast(float, artifact.data)) == 100.0
    assert f"trial 3 of 3, best validation auc **{best:.4f}**" in (artifact.description or "")

    APILogHandler().flush()  # logs go to the API in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    lines = [log.message for log in logs if "tuning flight-delay: trial" in log.message]
    assert len(lines) == 3, [log.message for log in logs]
    assert lines[-1].startswith("tuning flight-delay: trial 3/3") and f"best auc {best:.4f}" in lines[-1]
