"""The training flow: data in, a validated, tuned, evaluated, explained and registered model out.

Orchestration only: every piece of work is a step from ``steps/``; the stack decides where data, runs,
models and studies live. A failed validation stops the flow before any model exists, so the current
champion is untouched.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.cluster import dask_client
from flows.progress import TuningProgress
from flows.runtime import StackContext, compute_summary, ingest_joins, resolve_stack
from flows.tasks import StepTimer
from flywheel.contracts import events
from flywheel.contracts.model_version import REASON_TAG, STACK_TAG
from flywheel.contracts.problem import ProblemSpec, load_spec
from stacks.components.model_versions import alias_version
from steps.data import features, ingest, split, validate
from steps.model import evaluate, explain, promote, reference, register, track, train, train_dask, tune
from steps.model.threshold import choose_threshold


@flow(name="training", log_prints=True)
def training(
    problem: str,
    stack: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    sample_rows: int | None = None,
    pruning: bool = True,
    seed: int = 42,
    reason: str = "manual",
    mode: str = "full",
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
    joined, join_snapshots = ingest_joins(timer, ctx, spec)
    missing_reference = timer.run(
        reference.champion_missing_fractions, "reference", ctx.store, ctx.validator, spec.model_name
    )
    report = timer.run(
        validate.validate,
        "validate",
        raw,
        spec,
        ctx.validator,
        f"{spec.name} ({snapshot.digest})",
        missing_reference,
    )
    create_markdown_artifact(
        report.to_markdown(), key=_key(spec, "validation"), description="Data validation report"
    )
    if not report.passed:
        raise validate.DataValidationError(report)

    dataset = timer.run(features.build_dataset, "features", raw, spec, joined)
    parts = timer.run(split.split, "split", dataset, spec)

    experiment = (
        ctx.stack.experiment_tracker.configuration.experiment_name
        if ctx.stack.experiment_tracker
        else "flywheel"
    )
    run_id = timer.run(
        track.start_run,
        "track-start",
        experiment,
        spec,
        {STACK_TAG: ctx.stack.name, REASON_TAG: reason},
    )
    status = "FAILED"
    try:
        params = {
            "n_trials": n_trials or spec.tuning.n_trials,
            "sample_rows": sample_rows or "all",
            "seed": seed,
            "pruning": pruning,
            **parts.info,
        }
        timer.run(track.log_inputs, "track-inputs", run_id, spec, snapshot, join_snapshots, params, retries=2)
        with dask_client(ctx.stack) as client:  # None unless the stack names Dask
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
                client=client,
                on_trial=TuningProgress(
                    _key(spec, "tuning"), n_trials or spec.tuning.n_trials, spec.model_name
                ),
            )
            booster = _train(timer, ctx, client, parts.train, tuning)
        choice = timer.run(
            choose_threshold,
            "threshold",
            spec,
            parts.fit,
            parts.valid,
            tuning.best_params,
            tuning.best_rounds,
        )
        threshold = choice.value
        if choice.warning:
            logger.warning("%s", choice.warning)
            create_markdown_artifact(
                f"# Decision threshold\n\n**Warning:** {choice.warning}",
                key=_key(spec, "threshold"),
                description="The decision threshold never (or always) says positive",
            )
        evaluation = timer.run(evaluate.evaluate, "evaluate", booster, parts.test, spec, threshold)
        explanation = timer.run(explain.explain, "explain", booster, parts.test.X, seed=seed)
        profile = timer.run(
            reference.training_profile, "profile", booster, parts.train, ctx.validator, parts.test
        )
        timer.run(track.log_results, "track-results", run_id, tuning, evaluation, explanation, retries=2)
        registered = timer.run(
            register.register,
            "register",
            booster,
            run_id=run_id,
            model_name=spec.model_name,
            schema=dataset.schema,
            example=register.input_example(parts.test.frame, dataset.schema),
            training_profile=profile,
            lineage=track.lineage_tags(snapshot, join_snapshots, reason),
            threshold=threshold,
            warnings=[choice.warning] if choice.warning else [],
            retries=2,
        )
        timer.run(
            reference.store_reference,
            "store-reference",
            ctx.store,
            spec.model_name,
            registered.version,
            profile,
            retries=2,
        )
        decision = timer.run(
            promote.promote, "promote", spec, registered.version, evaluation.predictions, parts.test
        )
        status = "FINISHED"
    finally:
        track.finish_run(run_id, dict(timer.seconds), time.perf_counter() - flow_started, status)

    metrics_rows = [{"metric": k, "value": round(v, 5)} for k, v in evaluation.metrics.items()]
    create_table_artifact(
        metrics_rows,
        key=_key(spec, "metrics"),
        description=f"Test metrics of {spec.model_name} v{registered.version}",
    )
    create_markdown_artifact(
        decision.to_markdown(spec.metric), key=_key(spec, "promotion"), description="Promotion decision"
    )
    if decision.promoted:
        from prefect.events import emit_event

        # prefect.yaml's service deployment is triggered by this event
        emit_event(
            event=events.MODEL_PROMOTED,
            resource=events.model_resource(spec.model_name, registered.version),
            payload={
                "version": registered.version,
                "reason": decision.reason,
                "run_id": run_id,
                "stack": ctx.stack.name,
                "trigger": reason,
            },
        )
    champion = alias_version(spec.model_name)
    summary = {
        "model_name": spec.model_name,
        "version": registered.version,
        "run_id": run_id,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": champion,
        "metrics": evaluation.metrics,
        "snapshot": snapshot.digest,
        "timings": dict(timer.seconds),
        "steps_total_s": timer.total,
        "flow_s": time.perf_counter() - flow_started,
        "tuning": {"trials": tuning.n_trials, "pruned": tuning.n_pruned, "best": tuning.best_value},
        "compute": compute_summary(ctx),
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


def _train(
    timer: StepTimer, ctx: StackContext, client: Any, data: features.Dataset, tuning: tune.TuningResult
) -> Any:
    """The refit: xgboost.dask on the cluster when the stack's compute engine is dask, else in process."""
    if ctx.engine == "dask" and client is not None:
        return timer.run(
            train_dask.train_dataset,
            "train",
            client,
            data,
            tuning.best_params,
            tuning.best_rounds,
            partition_rows=ctx.partition_rows,
        )
    return timer.run(train.train, "train", data, tuning.best_params, tuning.best_rounds)


def _key(spec: ProblemSpec, what: str) -> str:
    return f"{spec.name}-{what}".lower().replace("_", "-")
