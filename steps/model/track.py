"""Experiment tracking: the MLflow run of a training flow, its parameters, inputs, results and timings.

IO at the edge, kept out of the flow so that the flow only wires steps and every second of work is a
timed step.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import matplotlib.pyplot as plt
import mlflow
from mlflow import MlflowClient

from flywheel.contracts.model_version import (
    DATA_DIFF_HTML,
    DATA_DIFF_RUN_TAG,
    DATA_DIFF_TEXT,
    PROBLEM_TAG,
    REASON_TAG,
    SPEC_ARTIFACT,
    TEST_METRIC_PREFIX,
    DatasetLineage,
    JoinedDataset,
)
from flywheel.contracts.problem import ProblemSpec
from stacks.components.tracking import ensure_experiment, readable, run_name
from steps.data.champion_diff import ChampionDiff
from steps.data.ingest import Snapshot
from steps.model.evaluate import Evaluation
from steps.model.explain import Explanation
from steps.model.register import log_figures, log_table
from steps.model.tune import TuningResult


def start_run(experiment_name: str, spec: ProblemSpec, tags: dict[str, str]) -> str:
    """A training run in the experiment (created as a model-training experiment when new), named for
    what it is: ``flight-delay train 2026-12-01 16:05 UTC (drift-detected)``."""
    experiment_id = ensure_experiment(experiment_name)
    run = MlflowClient().create_run(
        experiment_id,
        run_name=training_run_name(spec, tags.get(REASON_TAG)),
        tags={PROBLEM_TAG: spec.name, **tags},
    )
    return str(run.info.run_id)


def training_run_name(spec: ProblemSpec, reason: str | None, when: datetime | None = None) -> str:
    """The model, ``train``, when (UTC, to the minute) and why in a word or two; the full reason is a tag."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return run_name(spec.model_name, "train", moment.strftime("%Y-%m-%d %H:%M UTC"), reason=reason)


def lineage_tags(snapshot: Snapshot, joins: dict[str, Snapshot], reason: str) -> dict[str, str]:
    """Tags for the model version that lead back to the exact rows and their sources, and why it ran."""
    dataset = DatasetLineage(
        digest=snapshot.digest,
        snapshot=snapshot.uri,
        source=snapshot.source_uri,
        rows=snapshot.rows,
        joins={n: JoinedDataset(s.digest, s.uri, s.source_uri) for n, s in joins.items()},
    )
    return {**dataset.to_tags(), REASON_TAG: reason[:4000]}


def log_inputs(
    run_id: str,
    spec: ProblemSpec,
    snapshot: Snapshot | None,
    joins: dict[str, Snapshot],
    params: dict[str, Any],
    feedback: Snapshot | None = None,
) -> None:
    """Parameters and dataset inputs (digest + source), so the run says what it learned from: the source
    snapshot (none for an incremental training), each join, and the feedback snapshot of served traffic."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    client = MlflowClient()
    base: dict[str, Any] = {"problem": spec.name, "task": spec.task, "metric": spec.metric}
    if snapshot is not None:
        base |= {"dataset.digest": snapshot.digest, "dataset.source": snapshot.source_uri}
    if feedback is not None:
        base |= {"feedback.digest": feedback.digest, "feedback.rows": feedback.rows}
    for key, value in {**base, **params}.items():
        client.log_param(run_id, key, readable(value)[:6000])
    client.log_dict(run_id, spec.model_dump(mode="json"), SPEC_ARTIFACT)  # the spec as it was, to reproduce
    inputs = [(spec.name, snapshot, "training")] if snapshot is not None else []
    inputs += [(n, s, f"join:{n}") for n, s in joins.items()]
    if feedback is not None:
        inputs.append((f"{spec.name}-feedback", feedback, "feedback"))
    with mlflow.start_run(run_id=run_id):
        for name, snap, context in inputs:
            try:
                with (
                    warnings.catch_warnings()
                ):  # MLflow registers the local artifact source twice and says so
                    warnings.simplefilter("ignore", UserWarning)
                    source = resolve_dataset_source(snap.uri)
            except Exception:  # an unknown scheme still gets a record, as a plain URI
                from mlflow.data.http_dataset_source import HTTPDatasetSource

                source = HTTPDatasetSource(url=snap.uri)
            # MetaDataset records a dataset by digest and source alone (its rows live in the snapshot)
            dataset = MetaDataset(source=source, name=name, digest=snap.digest)  # type: ignore[abstract]
            mlflow.log_input(
                dataset, context=context, tags={"source_uri": snap.source_uri, "rows": readable(snap.rows)}
            )


def log_data_diff(run_id: str, changed: ChampionDiff) -> None:
    """What changed since the champion's data: a tag with the summary, the text tables and the HTML page."""
    from steps.data import diff_report

    client = MlflowClient()
    line = changed.note if changed.diff is None else f"{changed.note}: {diff_report.summary(changed.diff)}"
    client.set_tag(run_id, DATA_DIFF_RUN_TAG, line[:5000])
    if changed.diff is not None:
        client.log_text(run_id, diff_report.to_text(changed.diff), DATA_DIFF_TEXT)
        client.log_text(run_id, diff_report.to_html(changed.diff), DATA_DIFF_HTML)


def log_results(run_id: str, tuning: TuningResult, evaluation: Evaluation, explanation: Explanation) -> None:
    """Metrics, tuned parameters, plots (PNG) and tables, where MLflow's UI shows them."""
    client = MlflowClient()
    for key, value in evaluation.metrics.items():
        client.log_metric(run_id, f"{TEST_METRIC_PREFIX}{key}", float(value))
    for key, number in {
        "tuning.best_valid": tuning.best_value,
        "tuning.trials": tuning.n_trials,
        "tuning.pruned": tuning.n_pruned,
        "tuning.seconds": tuning.duration_s,
        "model.rounds": tuning.best_rounds,
    }.items():
        client.log_metric(run_id, key, float(number))
    for key, param in tuning.best_params.items():
        client.log_param(run_id, f"xgb.{key}", str(param))  # configuration, as XGBoost takes it
    log_figures(run_id, evaluation.figures)
    if explanation.figure is not None:
        log_figures(run_id, {"shap_importance": explanation.figure})
    log_table(run_id, evaluation.slices.set_index(["slice", "value"]), "evaluation/slice_metrics.csv")
    log_table(
        run_id, explanation.importance.rename("mean_abs_shap").to_frame(), "explain/shap_importance.csv"
    )
    log_table(run_id, tuning.trials, "tuning/trials.csv")
    for report in evaluation.fairness:  # steps.model.fairness.GroupReport
        log_table(run_id, report.by_group.set_index("group"), f"fairness/{report.feature}.csv")
    plt.close("all")


def finish_run(run_id: str, timings: dict[str, float], flow_seconds: float, status: str) -> None:
    client = MlflowClient()
    for step, seconds in timings.items():
        client.log_metric(run_id, f"timing.{step}_s", seconds)
    client.log_metric(run_id, "timing.steps_total_s", sum(timings.values()))
    client.log_metric(run_id, "timing.flow_s", flow_seconds)
    client.set_terminated(run_id, status)
