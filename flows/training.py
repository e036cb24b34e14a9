"""The training flow: data in, a validated, tuned, evaluated, explained and registered model out.

Orchestration only: every piece of work is a step from ``steps/``; the stack decides where data, runs,
models and studies live. A failed validation stops the flow before any model exists, so the current
champion is untouched.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.runtime import resolve_stack
from flows.tasks import StepTimer
from steps.data import features, ingest, split, validate
from steps.model import evaluate, explain, promote, register, train, tune
from steps.model.xgb import predict
from steps.problem import ProblemSpec, load_spec


@flow(name="training", log_prints=True)
def training(
    stack: str | None = None,
    problem: str = "flights",
    n_trials: int | None = None,
    timeout_s: float | None = None,
    sample_rows: int | None = None,
    pruning: bool = True,
    seed: int = 42,
    reason: str = "manual",
) -> dict[str, Any]:
    """Train, evaluate and register a model for a problem spec on a stack; promote it if it passes the gate.

    ``reason`` records why this run happened (manual, schedule, or the drift evidence of a trigger).
    """
    logger = get_run_logger()
    flow_started = time.perf_counter()
    ctx = resolve_stack(stack)
    spec = load_spec(problem)
    timer = StepTimer()
    logger.info("stack %r (%s), problem %r, reason: %s", ctx.stack.name, ctx.stack.source, spec.name, reason)

    raw, snapshot = timer.run(
        ingest.ingest,
        "ingest",
        spec.source,
        ctx.store,
        ctx.validator,
        ctx.storage_options,
        sample_rows=sample_rows,
        seed=seed,
        retries=2,
    )
    joined: dict[str, pd.DataFrame] = {}
    join_snapshots: dict[str, ingest.Snapshot] = {}
    for join in spec.joins:
        joined[join.name], join_snapshots[join.name] = timer.run(
            ingest.ingest,
            f"ingest-{join.name}",
            join.source,
            ctx.store,
            ctx.validator,
            ctx.storage_options,
            retries=2,
        )
    report = timer.run(
        validate.validate, "validate", raw, spec, ctx.validator, f"{spec.name} ({snapshot.digest})"
    )
    create_markdown_artifact(
        report.to_markdown(), key=_key(spec, "validation"), description="Data validation report"
    )
    if not report.passed:
        raise validate.DataValidationError(report)

    dataset = timer.run(features.build_dataset, "features", raw, spec, joined)
    parts = timer.run(split.split, "split", dataset, spec)

    client = MlflowClient()
    experiment = mlflow.set_experiment(
        ctx.stack.experiment_tracker.configuration.experiment_name
        if ctx.stack.experiment_tracker
        else "flywheel"
    )
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"flywheel.problem": spec.name, "flywheel.stack": ctx.stack.name, "flywheel.reason": reason},
    )
    run_id = run.info.run_id
    status = "FAILED"
    try:
        _log_inputs(client, run_id, spec, snapshot, join_snapshots, parts.info, n_trials, sample_rows, seed)
        tuning = timer.run(
            tune.tune,
            "tune",
            parts.fit,
            parts.valid,
            spec,
            study_name=f"{spec.name}-{run_id}",
            storage=ctx.tuner_storage,
            n_trials=n_trials,
            timeout_s=timeout_s,
            pruning=pruning,
            pruner=ctx.pruner,
            sampler=ctx.sampler,
            seed=seed,
            n_jobs=ctx.n_jobs,
            device=ctx.device,
        )
        booster = timer.run(train.train, "train", parts.train, tuning.best_params, tuning.best_rounds)
        evaluation = timer.run(evaluate.evaluate, "evaluate", booster, parts.test, spec)
        explanation = timer.run(explain.explain, "explain", booster, parts.test.X, seed=seed)
        training_frame = parts.train.frame[[*dataset.schema.names, spec.label]].copy()
        training_frame["prediction"] = predict(booster, parts.train.X)
        profile = ctx.validator.to_bytes(ctx.validator.profile(training_frame))
        _log_results(client, run_id, tuning, evaluation, explanation)
        registered = timer.run(
            register.register,
            "register",
            booster,
            run_id=run_id,
            model_name=spec.model_name,
            schema=dataset.schema,
            example=register.input_example(parts.test.frame, dataset.schema),
            training_profile=profile,
            lineage=_lineage(snapshot, join_snapshots, reason),
            threshold=spec.threshold,
            retries=2,
        )
        ctx.store.write_bytes(f"models/{spec.model_name}/{registered.version}/training_profile.bin", profile)
        decision = timer.run(
            promote.promote, "promote", spec, registered.version, evaluation.predictions, parts.test
        )
        status = "FINISHED"
    finally:
        flow_seconds = time.perf_counter() - flow_started
        for step, seconds in timer.seconds.items():
            client.log_metric(run_id, f"timing.{step}_s", seconds)
        client.log_metric(run_id, "timing.steps_total_s", timer.total)
        client.log_metric(run_id, "timing.flow_s", flow_seconds)
        client.set_terminated(run_id, status)

    metrics_rows = [{"metric": k, "value": round(v, 5)} for k, v in evaluation.metrics.items()]
    create_table_artifact(
        metrics_rows,
        key=_key(spec, "metrics"),
        description=f"Test metrics of {spec.model_name} v{registered.version}",
    )
    create_markdown_artifact(
        decision.to_markdown(spec.metric), key=_key(spec, "promotion"), description="Promotion decision"
    )
    champion = promote.current_champion(spec.model_name)
    summary = {
        "model_name": spec.model_name,
        "version": registered.version,
        "run_id": run_id,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": None if champion is None else str(champion.version),
        "metrics": evaluation.metrics,
        "snapshot": snapshot.digest,
        "timings": dict(timer.seconds),
        "steps_total_s": timer.total,
        "flow_s": time.perf_counter() - flow_started,
        "tuning": {"trials": tuning.n_trials, "pruned": tuning.n_pruned, "best": tuning.best_value},
    }
    logger.info(
        "%s v%s: %s=%.4f; %s (%s). Champion: v%s",
        spec.model_name,
        registered.version,
        spec.metric,
        evaluation.metrics[spec.metric],
        "promoted" if decision.promoted else "not promoted",
        decision.reason,
        summary["champion_version"],
    )
    return summary


def _key(spec: ProblemSpec, what: str) -> str:
    return f"{spec.name}-{what}".lower().replace("_", "-")


def _lineage(snapshot: ingest.Snapshot, joins: dict[str, ingest.Snapshot], reason: str) -> dict[str, str]:
    tags = {
        "dataset.digest": snapshot.digest,
        "dataset.snapshot": snapshot.uri,
        "dataset.source": snapshot.source_uri,
        "dataset.rows": str(snapshot.rows),
        "reason": reason[:4000],
    }
    for name, snap in joins.items():
        tags[f"dataset.join.{name}.digest"] = snap.digest
        tags[f"dataset.join.{name}.snapshot"] = snap.uri
        tags[f"dataset.join.{name}.source"] = snap.source_uri
    return tags


def _log_inputs(
    client: MlflowClient,
    run_id: str,
    spec: ProblemSpec,
    snapshot: ingest.Snapshot,
    joins: dict[str, ingest.Snapshot],
    split_info: dict[str, Any],
    n_trials: int | None,
    sample_rows: int | None,
    seed: int,
) -> None:
    """Parameters and dataset inputs, so the run says what it learned from."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    params = {
        "problem": spec.name,
        "task": spec.task,
        "metric": spec.metric,
        "n_trials": n_trials or spec.tuning.n_trials,
        "sample_rows": sample_rows or "all",
        "seed": seed,
        "dataset.digest": snapshot.digest,
        "dataset.source": snapshot.source_uri,
        **split_info,
    }
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:6000])
    with mlflow.start_run(run_id=run_id):
        for name, snap, context in [
            (spec.name, snapshot, "training"),
            *[(n, s, f"join:{n}") for n, s in joins.items()],
        ]:
            try:
                source = resolve_dataset_source(snap.uri)
            except Exception:  # an unknown scheme still gets a record, as a plain URI
                from mlflow.data.http_dataset_source import HTTPDatasetSource

                source = HTTPDatasetSource(url=snap.uri)
            # MetaDataset records a dataset by digest and source alone (its rows live in the snapshot)
            dataset = MetaDataset(source=source, name=name, digest=snap.digest)  # type: ignore[abstract]
            mlflow.log_input(
                dataset,
                context=context,
                tags={"source_uri": snap.source_uri, "rows": str(snap.rows)},
            )


def _log_results(client: MlflowClient, run_id: str, tuning: Any, evaluation: Any, explanation: Any) -> None:
    for key, value in evaluation.metrics.items():
        client.log_metric(run_id, f"test.{key}", float(value))
    client.log_metric(run_id, "tuning.best_valid", tuning.best_value)
    client.log_metric(run_id, "tuning.trials", tuning.n_trials)
    client.log_metric(run_id, "tuning.pruned", tuning.n_pruned)
    client.log_metric(run_id, "tuning.seconds", tuning.duration_s)
    client.log_metric(run_id, "model.rounds", tuning.best_rounds)
    for key, value in tuning.best_params.items():
        client.log_param(run_id, f"xgb.{key}", str(value))
    register.log_figures(run_id, evaluation.figures)
    if explanation.figure is not None:
        register.log_figures(run_id, {"shap_importance": explanation.figure})
    register.log_table(
        run_id, evaluation.slices.set_index(["slice", "value"]), "evaluation/slice_metrics.csv"
    )
    register.log_table(
        run_id, explanation.importance.rename("mean_abs_shap").to_frame(), "explain/shap_importance.csv"
    )
    register.log_table(run_id, tuning.trials, "tuning/trials.csv")
    import matplotlib.pyplot as plt

    plt.close("all")
