"""Moving the champion alias by hand: a promotion through the gate (or past it, recorded) and a rollback to
the previous champion. Flows, so that each shows in the Prefect UI with its decision as an artifact and
emits the event the rest of the loop listens to; ``flywheel model promote|rollback`` run them.

Every service watching the alias swaps within its watch interval (``FLYWHEEL_WATCH_INTERVAL_S``), with no
request failed: a rollback is only the alias moving back, which the hot swap already serves.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.runtime import emit_model_event, resolve_stack
from flywheel.contracts import events
from flywheel.contracts.model_version import (
    PROMOTION_BY_TAG,
    PROMOTION_FORCED_TAG,
    PROMOTION_REASON_TAG,
    TEST_METRIC_PREFIX,
    ModelVersion,
    Promotion,
    Rollback,
    models_uri,
)
from stacks.components import model_versions


def operator_name(by: str | None) -> str:
    """``by``, else the OS user (``unknown`` where the uid has no name, as in some containers)."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "unknown"


def _key(model: str, what: str) -> str:
    return f"{model}-{what}".lower().replace("_", "-")


@flow(name="rollback", log_prints=False)
def rollback(model: str, reason: str, stack: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Give the champion alias back to the previous champion; the reason, time and who on the version
    rolled back; event ``flywheel.model.rolled-back``."""
    logger = get_run_logger()
    resolve_stack(stack)
    current, previous = model_versions.previous_champion(model)
    record = Rollback(
        reason=reason,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        to=previous.version,
        by=operator_name(by),
    )
    model_versions.roll_back(model, current, previous, record.to_tags())
    from flows.rollout import refresh_card

    refresh_card(model, current.version)  # its model card says it was rolled back, when and why
    logger.info("%s: champion v%s rolled back to v%s (%s)", model, current.version, previous.version, reason)
    create_markdown_artifact(
        f"# Rollback of {model}\n\nv{current.version} -> **v{previous.version}** by {record.by} at "
        f"{record.at}.\n\nReason: {reason}",
        key=_key(model, "rollback"),
        description="The champion given back to the previous one",
    )
    emit_model_event(
        events.MODEL_ROLLED_BACK,
        model,
        previous.version,
        {"from": current.version, "to": previous.version, "reason": reason, "by": record.by},
    )
    return {
        "model": model,
        "from": current.version,
        "to": previous.version,
        "reason": reason,
        "by": record.by,
    }


@flow(name="promotion", log_prints=False)
def promotion(
    model: str,
    version: str,
    reason: str,
    force: bool = False,
    stack: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion: through the promotion gate on the test rows it was judged on (rebuilt
    from its record), or past it with ``force`` (recorded on the version). Event ``flywheel.model.promoted``
    when it is promoted."""
    logger = get_run_logger()
    ctx = resolve_stack(stack)
    mv = model_versions.get_version(model, version)
    champion = model_versions.by_alias(model)
    who = operator_name(by)
    if champion is not None and champion.version == mv.version:
        return {
            "model": model,
            "version": mv.version,
            "promoted": False,
            "reason": f"v{mv.version} is the champion already",
        }
    outcome = _forced(mv, champion, reason, who) if force else _through_gate(mv, reason, who, ctx.store)
    logger.info("%s v%s: %s", model, mv.version, outcome["reason"])
    verdict = "promoted to champion" if outcome["promoted"] else "NOT promoted"
    create_markdown_artifact(
        f"# Promotion by hand: {model} v{mv.version} {verdict}\n\nBy {who}. {outcome['reason']}",
        key=_key(model, "promotion"),
        description="Promotion decision",
    )
    if outcome["promoted"]:
        emit_model_event(
            events.MODEL_PROMOTED,
            model,
            mv.version,
            {"version": mv.version, "reason": outcome["reason"], "by": who, "forced": force},
        )
    return {"model": model, "version": mv.version, **outcome}


def _forced(mv: ModelVersion, champion: ModelVersion | None, reason: str, who: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    metrics = MlflowClient().get_run(mv.run_id).data.metrics if mv.run_id else {}
    promotion = mv.tags.promotion
    metric = promotion.metric if promotion else ""
    said = f"promoted by hand past the gate by {who}: {reason}"
    recorded = Promotion(
        promoted=True,
        reason=said,
        metric=metric,
        candidate_metric=metrics.get(f"{TEST_METRIC_PREFIX}{metric}") if metric else None,
        champion_version=champion.version if champion else None,
    )
    model_versions.set_tags(
        mv.name, mv.version, {**recorded.to_tags(), PROMOTION_FORCED_TAG: "true", PROMOTION_BY_TAG: who}
    )
    model_versions.make_champion(mv.name, mv.version)
    return {"promoted": True, "reason": said, "forced": True}


def _through_gate(mv: ModelVersion, reason: str, who: str, store: Any) -> dict[str, Any]:
    import mlflow

    from flywheel.reproduce import CannotReproduce, test_rows
    from steps.model import promote
    from steps.model.xgb import predict

    try:
        spec, test = test_rows(mv, store)
    except CannotReproduce as exc:
        said = f"the gate cannot judge v{mv.version}: {exc}; promote it with --force to go past the gate"
        return {"promoted": False, "reason": said, "forced": False}
    booster = mlflow.xgboost.load_model(models_uri(mv.name, mv.version))
    decision = promote.promote(spec, mv.version, predict(booster, test.X), test)
    said = f"{decision.reason} (asked by hand by {who}: {reason})"
    model_versions.set_tags(mv.name, mv.version, {PROMOTION_REASON_TAG: said, PROMOTION_BY_TAG: who})
    return {"promoted": decision.promoted, "reason": said, "forced": False}
