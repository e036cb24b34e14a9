"""The monitoring flow: the champion's serving windows against its own training profile, realized
performance where labels came back, a report, and, when the stack's policy says so, a drift event that
prefect.yaml's training deployment is triggered by (its payload's ``mode`` becomes the training run's
``mode``: full on input drift, incremental on mild decay with steady inputs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import lineage_events
from flows.runtime import resolve_stack
from flows.tasks import StepTimer
from flywheel.contracts import events, layout
from flywheel.contracts.problem import load_spec
from stacks.components.model_registry import load_model
from stacks.components.model_versions import alias_version
from steps.monitor import drift as drift_step
from steps.monitor import policy as policy_step
from steps.monitor import report, service_level, state, track, windows

PAST_VERSIONS = 4  # earlier versions whose realized metrics the report shows beside the champion's


@flow(name="monitoring", log_prints=True)
@lineage_events.emits("monitoring")
def monitoring(problem: str, stack: str | None = None, emit: bool = True) -> dict[str, Any]:
    """Check the champion's traffic; emit ``flywheel.model.drift-detected`` when the policy fires."""
    logger = get_run_logger()
    ctx = resolve_stack(stack)
    spec = load_spec(problem)
    lineage_events.bind(ctx.stack, spec.name)
    timer = StepTimer()
    version = alias_version(spec.model_name)
    if version is None:
        raise ValueError(f"{spec.model_name!r} has no champion to monitor: train one first")
    model = timer.run(load_model, "load-model", spec.model_name, version, retries=2)
    policy = policy_step.RetrainPolicy.from_config(ctx.stack.data_validator_config())
    watched = [
        c
        for c in policy_step.watched_columns(policy, model.schema.names)
        if c not in spec.monitoring.ignore_drift
    ]
    remembered = state.load_state(ctx.store, spec.model_name)
    found = timer.run(windows.list_windows, "list-windows", ctx.store, spec.model_name, version)
    recent = found[-max(policy.of_last, 1) :]
    fresh = [w for w in found if remembered.last_window is None or w.name > remembered.last_window]
    checked = {w.name: w for w in recent} | {w.name: w for w in fresh}
    reference = timer.run(windows.load_reference, "load-reference", ctx.store, spec.model_name, version)
    views = {name: windows.load_window(ctx.store, w) for name, w in sorted(checked.items())}
    lineage_events.model(spec.model_name, version)
    profiles = ctx.store.uri(layout.serving_profiles(spec.model_name, version))
    lineage_events.serving_windows(profiles, list(views))
    drift = timer.run(drift_step.window_drift, "drift", reference, views, ctx.validator, watched)
    # the champion and up to PAST_VERSIONS before it: realized metrics over time, per version
    versions = [version] + (
        [str(v) for v in range(int(version) - 1, max(0, int(version) - 1 - PAST_VERSIONS), -1)]
        if version.isdigit()
        else []
    )
    by_version = timer.run(
        windows.labelled_by_version,
        "labels",
        ctx.store,
        spec.model_name,
        versions,
        model.task,
        model.schema.classes,
    )
    labelled = by_version[version]
    realized = policy_step.realized_metrics(labelled.frame, model.task)
    if labelled.skipped:
        realized["skipped_labels"] = float(sum(labelled.skipped.values()))
        logger.warning("label rows left out: %s", labelled.skipped)
    now = datetime.now(UTC)
    registered = datetime.fromtimestamp(model.created_at, UTC) if model.created_at else None
    decision = policy_step.decide(
        policy,
        drift,
        realized,
        remembered.last_event(),
        now,
        watched,
        champion_registered=registered,
    )
    over_time = report.realized_over_time({v: lab.frame for v, lab in by_version.items()}, model.task)
    content = report.build(
        spec.model_name,
        version,
        decision,
        policy,
        drift,
        realized,
        skipped=labelled.skipped,
        over_time=over_time,
        ignored=spec.monitoring.ignore_drift,
        checked_at=now,
        service_level=None
        if ctx.stack.metrics is None
        else service_level.read(ctx.stack.metrics.configuration, spec.model_name),
    )
    html_report = report.to_html(
        content, report.heatmap(drift, policy.drift_threshold), report.realized_figure(over_time)
    )
    report_uri = ctx.store.write_bytes(layout.monitoring_report(spec.model_name, now), html_report.encode())
    lineage_events.dataset(report_uri, output=True)
    run_id = timer.run(
        track.log_monitoring_run,
        "track",
        spec.model_name,
        version,
        drift,
        realized,
        decision,
        html_report,
        retries=2,
    )
    create_markdown_artifact(
        report.to_markdown(content, report_uri),
        key=f"{spec.name}-monitoring",
        description=f"Monitoring of {spec.model_name} v{version}",
    )
    event_id = None
    if decision.fire and emit:
        from prefect.events import emit_event

        event = emit_event(
            event=events.DRIFT_DETECTED,
            resource=events.model_resource(spec.model_name, version),
            payload={
                "reason": decision.summary(),
                "mode": decision.mode,
                "mode_reason": decision.mode_reason,
                "model": spec.model_name,
                "version": version,
                "evidence": decision.evidence,
                "monitoring_run_id": run_id,
                "report": report_uri,
                "problem": spec.name,
                "stack": ctx.stack.name,
            },
        )
        event_id = str(event.id) if event is not None else None
        remembered.last_event_at = now.isoformat()
        remembered.last_event_version = version
        logger.warning("drift event emitted for %s v%s: %s", spec.model_name, version, decision.summary())
    if found:
        remembered.last_window = found[-1].name
    state.save_state(ctx.store, spec.model_name, remembered)
    logger.info("%s v%s: %s", spec.model_name, version, decision.summary())
    return {
        "model_name": spec.model_name,
        "version": version,
        "fire": decision.fire,
        "reason": decision.summary(),
        "suppressed_by": decision.suppressed_by,
        "mode": decision.mode,
        "waiting": decision.waiting,
        "windows": list(views),
        "realized": realized,
        "skipped_labels": labelled.skipped,
        "report": report_uri,
        "monitoring_run_id": run_id,
        "event_id": event_id,
        "evidence": decision.evidence,
    }
