"""``flywheel model``: a model's versions and who serves, and moving the champion alias by hand.

``list`` and ``show`` read the registry; ``promote`` and ``rollback`` run the flows of
:mod:`flows.model_ops` (visible in the Prefect UI, with their events), which every service watching the
alias follows within its watch interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from flywheel.cli_common import ModelOption, ProblemOption, StackOption, fail, model_or_fail, prepared_stack
from flywheel.contracts.rollout import ROLLOUT_RESULT_TAG

model_app = typer.Typer(
    help="A model's versions, aliases and decisions; promote one by hand or roll the champion back.",
    no_args_is_help=True,
)
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="why: recorded on the version")]


def _registry(stack: str | None) -> Any:
    from flows.runtime import resolve_stack
    from stacks.config import StackError

    try:
        return resolve_stack(stack)
    except StackError as exc:
        fail(str(exc))


def _row(mv: Any, metric: str | None, metrics: dict[str, float]) -> dict[str, str]:
    promotion = mv.tags.promotion
    rolled = mv.tags.rollback
    status = []
    if promotion is not None:
        status.append(promotion.decision + (" (forced)" if mv.tags.forced else ""))
    if rolled is not None:
        status.append(f"rolled back to v{rolled.to}")
    rollout = mv.tags.raw.get(ROLLOUT_RESULT_TAG)
    if rollout:
        status.append(f"rollout {rollout}")
    value = metrics.get(f"test.{metric}") if metric else None
    return {
        "version": mv.version,
        "aliases": ",".join(mv.aliases) or "-",
        "created": datetime.fromtimestamp(mv.created_at, UTC).strftime("%Y-%m-%d %H:%M")
        if mv.created_at
        else "-",
        "mode": mv.tags.training.mode,
        metric or "metric": "-" if value is None else f"{value:.4f}",
        "status": "; ".join(status) or "-",
    }


@model_app.command("list")
def list_versions(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="newest versions shown")] = 20,
) -> None:
    """The model's versions, newest first: aliases, training mode, test metric, the gate's decision and
    any rollback; then the champion history."""
    from mlflow import MlflowClient

    from stacks.components import model_versions

    name = model_or_fail(model, problem)
    _registry(stack)
    found = model_versions.versions(name, limit)
    if not found:
        fail(f"{name} has no registered version")
    client = MlflowClient()
    rows = []
    for mv in found:
        promotion = mv.tags.promotion
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        rows.append(_row(mv, promotion.metric if promotion else None, metrics))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    typer.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))
    state = model_versions.rollout_state(name)
    if state is not None:
        share = f" {100 * state.fraction:.0f}%" if state.stage == "canary" else ""
        typer.echo(
            f"rollout in progress: v{state.candidate} beside v{state.champion}, "
            f"step {state.step}/{state.steps} ({state.stage}{share})"
        )
    history = model_versions.champion_history(name)
    typer.echo(f"champion history (oldest first): {' -> '.join('v' + v for v in history) or 'not recorded'}")


@model_app.command("show")
def show(
    reference: Annotated[str, typer.Argument(help="MODEL@ALIAS, MODEL/VERSION or MODEL (its champion)")],
    stack: StackOption = None,
) -> None:
    """One version: aliases, lineage, the gate's decision, any rollback, test metrics, and every tag."""
    from mlflow import MlflowClient

    from stacks.components.model_versions import VersionNotFound, resolve

    _registry(stack)
    try:
        mv = resolve(reference)
    except VersionNotFound as exc:
        fail(str(exc))
    metrics = MlflowClient().get_run(mv.run_id).data.metrics if mv.run_id else {}
    typer.echo(f"{mv.name} v{mv.version}  aliases: {', '.join(mv.aliases) or '-'}  run: {mv.run_id or '-'}")
    promotion = mv.tags.promotion
    if promotion is not None:
        forced = " (forced past the gate)" if mv.tags.forced else ""
        typer.echo(f"gate            {promotion.decision}{forced}: {promotion.reason}")
    rolled = mv.tags.rollback
    if rolled is not None:
        typer.echo(f"rolled back     to v{rolled.to} at {rolled.at} by {rolled.by}: {rolled.reason}")
    for key in sorted(k for k in metrics if k.startswith("test.")):
        typer.echo(f"metric          {key.removeprefix('test.'):<24} {metrics[key]:.6g}")
    typer.echo("tags:")
    for key, value in sorted(mv.tags.raw.items()):
        typer.echo(f"  {key} = {value[:200]}")


@model_app.command("promote")
def promote(
    reference: Annotated[str, typer.Argument(help="MODEL/VERSION (or MODEL@ALIAS) to make the champion")],
    reason: ReasonOption,
    stack: StackOption = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="past the gate: the version records that it was forced and by whom"),
    ] = False,
) -> None:
    """Make a version the champion through the promotion gate (the same test rows, rebuilt from its
    record) or, with --force, past it. Exit 1 when the gate keeps it out."""
    from flywheel.contracts.model_version import parse_reference

    chosen = prepared_stack(stack)
    from flows.model_ops import promotion
    from stacks.components.model_versions import VersionNotFound, resolve

    _registry(stack or chosen.name)
    try:
        name, _, _ = parse_reference(reference)
        mv = resolve(reference)
    except (VersionNotFound, ValueError) as exc:
        fail(str(exc))
    result = promotion(model=name, version=mv.version, reason=reason, force=force, stack=stack or chosen.name)
    typer.echo(
        f"{name} v{mv.version}: {'promoted' if result['promoted'] else 'not promoted'}: {result['reason']}"
    )
    if not result["promoted"]:
        raise typer.Exit(1)


@model_app.command("rollback")
def rollback(
    reason: ReasonOption,
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
) -> None:
    """Give the champion alias back to the previous champion (the champion history's, else the one the
    gate compared the champion with); every service swaps within its watch interval."""
    name = model_or_fail(model, problem)
    chosen = prepared_stack(stack)
    from flows.model_ops import rollback as rollback_flow
    from stacks.components.model_versions import NothingToRollBackTo

    try:
        result = rollback_flow(model=name, reason=reason, stack=stack or chosen.name)
    except NothingToRollBackTo as exc:
        fail(str(exc))
    typer.echo(f"{name}: champion v{result['from']} rolled back to v{result['to']} ({reason})")


def _answer(name: str, approve: bool, comment: str, by: str | None) -> None:
    """Resume the model's rollout flow that waits for approval, with the same form the Prefect UI fills."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    try:
        with get_client(sync_client=True) as client:
            paused = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["rollout"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
    except Exception as exc:  # no server: the local stack's ephemeral API lives inside the flow's process
        fail(f"cannot ask the Prefect API for paused rollouts ({exc}); approvals need a Prefect server")
    waiting = [r for r in paused if r.parameters.get("model") == name]
    if not waiting:
        fail(f"no rollout of {name} waits for approval")
    run = waiting[0]
    from flows.model_ops import operator_name

    who = operator_name(by)
    resume_flow_run(run.id, run_input={"approve": approve, "approver": who, "comment": comment})
    version = run.parameters.get("version")
    typer.echo(f"{name} v{version}: {'approved' if approve else 'rejected'} by {who} (flow run {run.name})")


CommentOption = Annotated[str, typer.Option("--comment", "-c", help="why: kept on the version")]
ByOption = Annotated[str | None, typer.Option("--by", help="who answers (default: the OS user)")]


@model_app.command("approve")
def approve(
    comment: CommentOption = "",
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    by: ByOption = None,
) -> None:
    """Approve the model's rollout step or promotion that waits for a person (as the Prefect UI's form)."""
    name = model_or_fail(model, problem)
    prepared_stack(stack)
    _answer(name, True, comment, by)


@model_app.command("reject")
def reject(
    comment: CommentOption = "",
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    by: ByOption = None,
) -> None:
    """Reject it: the candidate stays the challenger and the champion keeps every request."""
    name = model_or_fail(model, problem)
    prepared_stack(stack)
    _answer(name, False, comment, by)
