"""The training flow: data in, a validated, tuned, evaluated, explained and registered model out.

Orchestration only: every piece of work is a step from ``steps/``; the stack decides where data, runs,
models and studies live. A failed validation stops the flow before any model exists, so the current
champion is untouched.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import lineage_events
from flows import rollout as rollout_flow
from flows.cluster import dask_client
from flows.progress import TuningProgress
from flows.runtime import StackContext, compute_summary, resolve_stack
from flows.tasks import StepTimer
from flows.training_inputs import MODES, Inputs, Mode, gather
from flywheel.contracts import events
from flywheel.contracts.model_version import REASON_TAG, STACK_TAG, ModelVersion, TrainingRecord
from flywheel.contracts.problem import ProblemSpec, load_spec
from stacks.components.model_versions import alias_version, by_alias
from steps.data import features, split, training_data
from steps.data.champion_diff import ChampionDiff
from steps.data.feedback import SERVED_AT
from steps.data.training_data import FROM_FEEDBACK
from steps.model import (
    card,
    card_log,
    evaluate,
    explain,
    fairness,
    incremental,
    promote,
    provenance,
    reference,
    register,
    track,
    train,
    train_dask,
    tune,
)
from steps.model.threshold import choose_threshold

MIN_NEW_ROWS = 10
"""Fewer new feedback rows than this cannot be split into rows to learn from and rows to judge on."""


@flow(name="training", log_prints=True)
@lineage_events.emits("training")
def training(
    problem: str,
    stack: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    sample_rows: int | None = None,
    pruning: bool = True,
    seed: int = 42,
    reason: str = "manual",
    mode: Mode = "full",
) -> dict[str, Any]:
    """Train, evaluate and register a model for a problem spec on a stack; promote it if it passes the gate.

    ``reason`` records why this run happened (manual, schedule, or the drift evidence of a trigger).
    """
    logger = get_run_logger()
    flow_started = time.perf_counter()
    ctx = resolve_stack(stack)
    spec = load_spec(problem)
    lineage_events.bind(ctx.stack, spec.name)
    timer = StepTimer()
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    champion_mv = by_alias(spec.model_name)
    if mode == "incremental" and champion_mv is None:
        logger.warning("incremental training needs a champion to continue from: training in full instead")
        mode = "full"
    logger.info(
        "stack %r (%s), problem %r, mode %s, reason: %s",
        ctx.stack.name,
        ctx.stack.source,
        spec.name,
        mode,
        reason,
    )
    settings = {
        "n_trials": n_trials or spec.tuning.n_trials,
        "sample_rows": sample_rows,
        "pruning": pruning,
    }
    inputs = gather(
        timer,
        ctx,
        spec,
        champion_mv,
        mode,
        reason=reason,
        sample_rows=sample_rows,
        seed=seed,
        settings=settings,
        validation_key=_key(spec, "validation"),
    )
    for note in inputs.notes:
        logger.info("%s", note)
    lineage_events.snapshot("source", inputs.snapshot)
    for join_name, join_snapshot in inputs.join_snapshots.items():
        lineage_events.snapshot(f"join:{join_name}", join_snapshot)
    lineage_events.snapshot("feedback", inputs.feedback_snapshot)
    nothing_new = _nothing_new(spec, champion_mv, inputs)
    if nothing_new is None:
        parts = timer.run(split.split, "split", inputs.data.dataset, spec, inputs.data.holdout)
        if mode == "incremental":
            assert champion_mv is not None
            parts = incremental.unseen_only(parts, champion_mv.tags.training.feedback_until)
            if parts.train.frame.empty:
                nothing_new = (
                    "nothing new to learn: every feedback row the champion has not learned from is held out "
                    "for the gate; no version trained or promoted"
                )
    if nothing_new is not None:
        logger.info("%s", nothing_new)
        create_markdown_artifact(
            f"# Training: nothing new to learn\n\n{nothing_new}",
            key=_key(spec, "promotion"),
            description="Promotion decision",
        )
        return {
            "model_name": spec.model_name,
            "version": None,
            "promoted": False,
            "reason": nothing_new,
            "champion_version": champion_mv.version if champion_mv else None,
            "mode": mode,
            "data": inputs.data.info,
            "timings": dict(timer.seconds),
            "flow_s": time.perf_counter() - flow_started,
        }

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
    # a staged rollout, or an approval (the stack's model_deployer.rollout), takes a passing candidate to
    # the alias itself
    policy = rollout_flow.policy_of(ctx.stack)
    staged = champion_mv is not None and (policy.strategy == "staged" or policy.approval != "none")
    try:
        params = {
            "n_trials": n_trials or spec.tuning.n_trials,
            "sample_rows": sample_rows or "all",
            "seed": seed,
            "pruning": pruning,
            "mode": mode,
            "engine": ctx.engine,
            **inputs.data.info,
            **parts.info,
        }
        timer.run(
            track.log_inputs,
            "track-inputs",
            run_id,
            spec,
            inputs.snapshot,
            inputs.join_snapshots,
            params,
            feedback=inputs.feedback_snapshot,
            retries=2,
        )
        if inputs.champion_diff is not None:
            timer.run(track.log_data_diff, "track-data-diff", run_id, inputs.champion_diff, retries=2)
            create_markdown_artifact(
                _data_diff_markdown(inputs.champion_diff),
                key=_key(spec, "data-diff"),
                description="The source data against the champion's: what changed since the last model",
            )
        warnings: list[str] = []
        if mode == "incremental":
            assert champion_mv is not None
            champion_booster, champion_params = timer.run(
                incremental.load_champion, "load-champion", spec.model_name, champion_mv.version, retries=2
            )
            rounds = spec.training_data.incremental_rounds
            grown = incremental.grown_params(champion_params, ctx.n_jobs)
            booster = timer.run(
                incremental.continue_boosting, "boost", champion_booster, parts.train, grown, rounds
            )
            tuning = tune.TuningResult(
                best_params=grown,
                best_value=float("nan"),
                best_rounds=champion_booster.num_boosted_rounds() + rounds,
                n_trials=0,
                n_pruned=0,
                duration_s=0.0,
                study_name="",
                trials=pd.DataFrame(),
            )
            threshold = champion_mv.tags.threshold or spec.fixed_threshold
        else:
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
                warnings.append(choice.warning)
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
            schema=inputs.schema,
            example=register.input_example(parts.test.frame, inputs.schema),
            training_profile=profile,
            lineage={
                **inputs.lineage,
                **_record(inputs, mode, parts.train, champion_mv).to_tags(),
                **provenance.capture().to_tags(),  # what a reproduction compares against
            },
            threshold=threshold,
            warnings=warnings,
            retries=2,
        )
        lineage_events.model(spec.model_name, registered.version, output=True)
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
            promote.promote,
            "promote",
            spec,
            registered.version,
            evaluation.predictions,
            parts.test,
            _newer_than(inputs, parts.train, champion_mv),
            fairness.violations(evaluation.fairness, spec.fairness),
            move_alias=not staged,
        )
        model_card = None
        try:  # the version is registered and decided: a card that cannot be written must not undo that
            version_mv, previous = timer.run(
                card_log.recorded, "card-inputs", spec.model_name, registered.version, champion_mv, retries=2
            )
            card_facts = timer.run(
                card.facts,
                "model-card",
                spec,
                registered.version,
                run_id,
                evaluation,
                explanation,
                parts,
                decision,
                threshold=threshold,
                dataset=version_mv.tags.dataset,
                training=version_mv.tags.training,
                reason=reason,
                previous=previous,
                seed=seed,
            )
            model_card = card.build(card_facts)
            timer.run(
                card_log.log_model_card,
                "track-card",
                run_id,
                spec.model_name,
                registered.version,
                model_card,
                retries=2,
            )
        except Exception as exc:  # any step of it; the run says so and goes on
            logger.warning(
                "model card of v%s not written: %s: %s", registered.version, type(exc).__name__, exc
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
    if model_card is not None:
        create_markdown_artifact(
            card.to_markdown(model_card),
            key=_key(spec, "model-card"),
            description=f"Model card of {spec.model_name} v{registered.version} (HTML in the MLflow run)",
        )
    if evaluation.fairness:
        create_markdown_artifact(
            f"# Fairness of {spec.model_name} v{registered.version}\n\n"
            + fairness.to_markdown(evaluation.fairness),
            key=_key(spec, "fairness"),
            description="Metrics and disparities by group of each sensitive feature",
        )
    rolled_out: dict[str, Any] | None = None
    if decision.promoted and staged:
        rolled_out = rollout_flow.rollout(
            model=spec.model_name,
            version=registered.version,
            reason=decision.reason,
            stack=ctx.stack.name if stack is None else stack,
            key=spec.rollout_key,
        )
    elif decision.promoted:
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
        "promoted": decision.promoted if rolled_out is None else rolled_out["promoted"],
        "reason": decision.reason
        if rolled_out is None
        else f"{decision.reason}; rollout: {rolled_out['reason']}",
        "rollout": rolled_out,
        "champion_version": champion,
        "metrics": evaluation.metrics,
        "snapshot": inputs.snapshot.digest if inputs.snapshot else None,
        "feedback_snapshot": inputs.feedback_snapshot.digest if inputs.feedback_snapshot else None,
        "data": inputs.data.info,
        "mode": mode,
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
        "promoted" if summary["promoted"] else "not promoted",
        summary["reason"],
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


def _record(
    inputs: Inputs, mode: str, trained: features.Dataset, champion: ModelVersion | None
) -> TrainingRecord:
    """What the version's tags keep of this training: its mode, fingerprint and the feedback rows it
    learned from (``trained``: the rows its booster was fitted on, the gate's rows not among them)."""
    fed = inputs.feedback_snapshot
    until = training_data.feedback_until(trained)
    n_feedback = int(trained.frame[FROM_FEEDBACK].sum()) if FROM_FEEDBACK in trained.frame else 0
    return TrainingRecord(
        mode=mode,
        fingerprint=inputs.fingerprint,
        feedback_digest=fed.digest if fed and n_feedback else "",
        feedback_snapshot=fed.uri if fed and n_feedback else "",
        feedback_rows=n_feedback,
        feedback_until=until,
        champion_version=champion.version if champion is not None else "",
        champion_feedback_until=champion.tags.training.feedback_until if champion is not None else None,
    )


def _nothing_new(spec: ProblemSpec, champion: ModelVersion | None, inputs: Inputs) -> str | None:
    """Why this run would only repeat the champion, or None when it has something new to learn from."""
    if champion is None:
        return None
    if champion.tags.training.fingerprint == inputs.fingerprint:
        return (
            f"nothing new to learn: champion v{champion.version} learned from exactly this data with these "
            "settings (same source snapshot, feedback and spec); no version trained or promoted"
        )
    if inputs.mode == "incremental":
        seen = champion.tags.training.feedback_until
        fed = inputs.data.dataset.frame
        new = int((fed[SERVED_AT] > seen).sum()) if seen is not None else int(fed[FROM_FEEDBACK].sum())
        if new < MIN_NEW_ROWS:
            return (
                f"nothing new to learn: {new:,} feedback rows served after what champion "
                f"v{champion.version} learned from (needs {MIN_NEW_ROWS}); no version trained or promoted"
            )
    return None


def _newer_than(inputs: Inputs, trained: features.Dataset, champion: ModelVersion | None) -> bool:
    """Did the candidate learn from data the champion did not have: another source snapshot, or feedback
    served after the champion's?"""
    if champion is None:
        return True
    if inputs.snapshot is not None and champion.tags.dataset.digest != inputs.snapshot.digest:
        return True
    until = training_data.feedback_until(trained)
    seen = champion.tags.training.feedback_until
    return until is not None and (seen is None or until > seen)


def _data_diff_markdown(changed: ChampionDiff) -> str:
    """The Prefect artifact: the summary, then the diff's tables as text (the page is in the MLflow run)."""
    from steps.data import diff_report

    if changed.diff is None:
        return f"# What changed in the data\n\n{changed.note}."
    return (
        f"# What changed in the data\n\n{changed.note}: {diff_report.summary(changed.diff)}\n\n"
        f"```\n{diff_report.to_text(changed.diff)}\n```\n\nThe page: `data_diff/diff.html` in the MLflow run."
    )


def _key(spec: ProblemSpec, what: str) -> str:
    return f"{spec.name}-{what}".lower().replace("_", "-")
