"""A staged rollout: a candidate that passed the gate goes through the stack's steps (shadow, canary
shares), each held while its guardrails hold, then takes the champion alias; a broken guardrail ends it and
the champion keeps (or takes back) every request.

The flow writes the rollout state (a registered-model tag) and every replica follows at its watch tick
(serving.rollout); the evidence is the replicas' ``/metrics`` (steps.rollout.guardrails) and, once labels
come back through ``/feedback``, both versions' realized metrics from the prediction and shadow logs
(steps.rollout.realized). Each step is a
task in the Prefect UI, each decision a tag on the candidate, a Prefect artifact and an event
(``flywheel.model.rollout-step``, ``flywheel.model.rolled-back``, ``flywheel.model.promoted``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows import approval
from flows.runtime import emit_model_event, resolve_stack
from flywheel.contracts import events
from flywheel.contracts.model_version import ModelVersion
from flywheel.contracts.rollout import (
    PROMOTED,
    ROLLED_BACK,
    ROLLOUT_REASON_TAG,
    ROLLOUT_RESULT_TAG,
    ROLLOUT_STEPS_TAG,
    RolloutState,
)
from stacks.components import model_versions
from stacks.components.artifact_store import ArtifactStore
from stacks.config import RolloutPolicy, RolloutStep, Stack
from steps.rollout import guardrails, realized

EVIDENCE_WAIT = 10.0
"""A step without ``min_requests`` of evidence after this many times its hold ends as not proven."""


def policy_of(stack: Stack) -> RolloutPolicy:
    deployer = stack.model_deployer
    return deployer.configuration.rollout if deployer is not None else RolloutPolicy()


def service_urls(stack: Stack, model: str) -> list[str]:
    """Where the model's figures are served: its service as the stack's deployer recorded it, and each of
    its running stream consumers that serves metrics (a canary answers stream records too)."""
    from stacks.components import stream_endpoints
    from stacks.components.deployers import deployer_for

    info = deployer_for(stack).status(model)
    services = [info.url] if info is not None and info.running else []
    return services + [c.url for c in stream_endpoints.recorded(stack.name, model)]


def realized_inputs(stack: Stack, candidate: ModelVersion, champion: ModelVersion) -> realized.Inputs | None:
    """What judging the step on labels needs: the candidate's task and classes (its feature schema), the
    gate's metric, both thresholds; None (and a warning) when the schema cannot be read."""
    try:
        schema = model_versions.feature_schema(candidate.run_id)
        thresholds = candidate.tags.threshold, champion.tags.threshold
    except Exception as exc:  # MLflow, the artifact store, a damaged tag: the step goes on without labels
        get_run_logger().warning("realized metrics not judged: %s", exc)
        return None
    promotion = candidate.tags.promotion
    return realized.Inputs(
        model=candidate.name,
        task=schema.task,
        classes=schema.classes,
        metric=realized.realized_metric(schema.task, promotion.metric if promotion else ""),
        candidate_threshold=thresholds[0] if thresholds[0] is not None else 0.5,
        champion_threshold=thresholds[1] if thresholds[1] is not None else 0.5,
        window_s=stack.data_validator_config().profile_window_seconds,
    )


@task(
    name="rollout-step",
    task_run_name="step {number}: {step.stage} {step.fraction}",
    cache_policy=NONE,  # the artifact store is no cache key
)
def hold_step(
    model: str,
    candidate: str,
    champion: str,
    number: int,
    step: RolloutStep,
    policy: RolloutPolicy,
    urls: list[str],
    prometheus_url: str | None = None,
    store: ArtifactStore | None = None,
    labels: realized.Inputs | None = None,
) -> dict[str, Any]:
    """Hold one step: until ``hold_s`` passed with ``min_requests`` of evidence, every check passing; or
    the first broken guardrail; or no evidence in time (not proven: the candidate does not go on). The
    evidence comes from the stack's Prometheus (``prometheus_url``), else each service's ``/metrics``; and
    with ``store`` and ``labels``, the realized metrics of what both versions scored in the step."""
    logger = get_run_logger()
    started = time.monotonic()
    step_started = time.time()

    def read() -> tuple[guardrails.Snapshot, list[str]]:
        if prometheus_url is not None:
            from stacks.components.prometheus import PrometheusAPI
            from stacks.config import PrometheusConfig

            return guardrails.from_prometheus(PrometheusAPI(PrometheusConfig(url=prometheus_url)), model)
        return guardrails.scrape(urls)

    before, _ = read()
    deadline = started + max(step.hold_s * EVIDENCE_WAIT, step.hold_s + 300)
    while True:
        time.sleep(policy.check_every_s)
        now, unreachable = read()
        since = {key: figures - before.get(key, guardrails.Figures()) for key, figures in now.items()}
        verdict = guardrails.judge(step, policy.guardrails, since, candidate, champion)
        if store is not None and labels is not None:
            try:
                found = realized.compare(store, labels, step.stage, candidate, champion, step_started)
            except Exception as exc:  # the store unreachable for a moment: judged at the next check
                logger.warning("realized metrics not read: %s", exc)
            else:
                on_labels = guardrails.judge_realized(found, policy.guardrails)
                verdict.broken.extend(on_labels.broken)
                verdict.measured.update(on_labels.measured)
        held = time.monotonic() - started
        logger.info(
            "step %d (%s %.0f%%): %.0f s, %.0f candidate rows, measured %s%s",
            number,
            step.stage,
            100 * step.fraction,
            held,
            verdict.evidence,
            {k: round(v, 4) if isinstance(v, float) else v for k, v in verdict.measured.items()},
            f"; unreachable: {unreachable}" if unreachable else "",
        )
        outcome: dict[str, Any] = {"step": number, "stage": step.stage, "fraction": step.fraction}
        outcome |= {"held_s": round(held, 1), "measured": verdict.measured}
        if verdict.broken:
            return {**outcome, "held": False, "reason": "; ".join(verdict.broken)}
        if held >= step.hold_s and verdict.evidence >= step.min_requests:
            return {**outcome, "held": True, "reason": "every guardrail held"}
        if time.monotonic() >= deadline:
            reason = (
                f"not proven: {verdict.evidence:.0f} of {step.min_requests} candidate rows in {held:.0f} s"
            )
            return {**outcome, "held": False, "reason": reason}


@flow(name="rollout", log_prints=False)
def rollout(
    model: str,
    version: str,
    reason: str = "",
    stack: str | None = None,
    urls: list[str] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Roll ``version`` out by the stack's policy (``model_deployer.rollout``), judged on the services at
    ``urls`` (default: the one the stack's deployer recorded); ``key`` is the spec's ``rollout_key``."""
    logger = get_run_logger()
    ctx = resolve_stack(stack)
    policy = policy_of(ctx.stack)
    champion = model_versions.by_alias(model)
    if champion is None or champion.version == version or policy.strategy == "immediate":
        if policy.approval != "none" and champion is not None and champion.version != version:
            model_versions.mark_challenger(model, version)
            answer = approval.ask(model, version, "promotion to champion", policy.approval_timeout_s)
            if not answer.approved:
                return _rejected(model, version, champion.version, answer, [])
            refresh_card(model, version)
        model_versions.make_champion(model, version)
        return {"model": model, "version": version, "promoted": True, "reason": "immediate", "steps": []}
    targets = urls if urls is not None else service_urls(ctx.stack, model)
    # the stack's Prometheus scrapes every replica; services named by hand are read directly
    metrics = ctx.stack.metrics
    prometheus_url = metrics.configuration.url if urls is None and metrics is not None else None
    model_versions.mark_challenger(model, version)
    labels = realized_inputs(ctx.stack, model_versions.get_version(model, version), champion)
    done: list[dict[str, Any]] = []
    total = len(policy.steps) + 1  # the last: every request (the alias moves)
    outcome: dict[str, Any] = {"held": True}
    try:
        for number, step in enumerate(policy.steps, start=1):
            if policy.approval == "each_step":
                what = f"step {number}/{total}: {step.stage} {100 * step.fraction:.0f}%"
                answer = approval.ask(model, version, what, policy.approval_timeout_s)
                if not answer.approved:
                    model_versions.set_rollout(model, None)
                    return _rejected(model, version, champion.version, answer, done)
            state = RolloutState(
                version, champion.version, step.stage, step.fraction, number, total, time.time(), key
            )
            model_versions.set_rollout(model, state)
            emit_model_event(
                events.MODEL_ROLLOUT_STEP,
                model,
                version,
                {
                    "step": number,
                    "of": total,
                    "stage": step.stage,
                    "fraction": step.fraction,
                    "champion": champion.version,
                },
            )
            logger.info(
                "%s v%s: step %d/%d, %s %.0f%%",
                model,
                version,
                number,
                total,
                step.stage,
                100 * step.fraction,
            )
            outcome = hold_step(
                model,
                version,
                champion.version,
                number,
                step,
                policy,
                targets,
                prometheus_url,
                ctx.store,
                labels,
            )
            done.append(outcome)
            _artifact(model, version, champion.version, done)
            if not outcome["held"]:
                break
    except BaseException:
        # whatever stopped the flow (a crash, a cancellation), no replica goes on routing to the candidate
        model_versions.set_rollout(model, None)
        raise
    model_versions.set_rollout(model, None)
    steps_tag = json.dumps(done, default=str)[:4900]
    if not outcome["held"]:
        why = f"step {outcome['step']} ({outcome['stage']}): {outcome['reason']}"
        model_versions.set_tags(
            model,
            version,
            {ROLLOUT_RESULT_TAG: ROLLED_BACK, ROLLOUT_REASON_TAG: why, ROLLOUT_STEPS_TAG: steps_tag},
        )
        refresh_card(model, version)
        emit_model_event(
            events.MODEL_ROLLED_BACK,
            model,
            champion.version,
            {"from": version, "to": champion.version, "reason": why},
        )
        logger.warning(
            "%s v%s rolled back, v%s keeps every request: %s", model, version, champion.version, why
        )
        create_markdown_artifact(
            f"# Rollout of {model} v{version}: ROLLED BACK\n\n"
            f"v{champion.version} keeps every request.\n\n{why}",
            key=f"{model}-rollout-result".lower(),
            description="How the rollout ended",
        )
        return {"model": model, "version": version, "promoted": False, "reason": why, "steps": done}
    if policy.approval != "none":
        answer = approval.ask(
            model, version, "promotion to champion after every step held", policy.approval_timeout_s
        )
        if not answer.approved:
            return _rejected(model, version, champion.version, answer, done)
    model_versions.make_champion(model, version)
    why = f"every step held ({len(done)} steps); {reason}".rstrip("; ")
    model_versions.set_tags(
        model, version, {ROLLOUT_RESULT_TAG: PROMOTED, ROLLOUT_REASON_TAG: why, ROLLOUT_STEPS_TAG: steps_tag}
    )
    refresh_card(model, version)
    emit_model_event(
        events.MODEL_ROLLOUT_STEP,
        model,
        version,
        {"step": total, "of": total, "stage": "full", "fraction": 1.0, "champion": version},
    )
    emit_model_event(events.MODEL_PROMOTED, model, version, {"version": version, "reason": why})
    create_markdown_artifact(
        f"# Rollout of {model} v{version}: PROMOTED\n\n{why}",
        key=f"{model}-rollout-result".lower(),
        description="How the rollout ended",
    )
    return {"model": model, "version": version, "promoted": True, "reason": why, "steps": done}


def refresh_card(model: str, version: str) -> None:
    """The version's model card gets its approvals and rollout (a card that cannot be rewritten is a
    warning, never a failed rollout)."""
    from steps.model import card_log

    try:
        card_log.refresh_approvals(model, version)
    except Exception as exc:  # any step of it: MLflow, the artifact store
        get_run_logger().warning("model card of %s v%s not rewritten: %s", model, version, exc)


def _rejected(
    model: str, version: str, champion: str, answer: Any, done: list[dict[str, Any]]
) -> dict[str, Any]:
    """An approver (or the timeout) said no: the candidate stays the challenger, the champion serves."""
    why = f"{answer.what}: rejected by {answer.by}" + (f": {answer.comment}" if answer.comment else "")
    model_versions.set_tags(model, version, {ROLLOUT_RESULT_TAG: ROLLED_BACK, ROLLOUT_REASON_TAG: why})
    refresh_card(model, version)
    emit_model_event(
        events.MODEL_ROLLED_BACK, model, champion, {"from": version, "to": champion, "reason": why}
    )
    create_markdown_artifact(
        f"# Rollout of {model} v{version}: REJECTED\n\nv{champion} keeps every request.\n\n{why}",
        key=f"{model}-rollout-result".lower(),
        description="How the rollout ended",
    )
    return {"model": model, "version": version, "promoted": False, "reason": why, "steps": done}


def _artifact(model: str, version: str, champion: str, done: list[dict[str, Any]]) -> None:
    rows = [
        {
            "step": d["step"],
            "stage": d["stage"],
            "fraction": d["fraction"],
            "held_s": d["held_s"],
            "held": d["held"],
            "reason": d["reason"],
            **{k: "-" if v is None else f"{v:.4g}" for k, v in d["measured"].items()},
        }
        for d in done
    ]
    create_table_artifact(
        rows, key=f"{model}-rollout".lower(), description=f"Rollout of v{version} beside v{champion}"
    )
