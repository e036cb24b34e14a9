"""`flywheel service ...`: deploy, list, read the logs of and stop the model services of a stack.

Mounted by `flywheel/cli.py` as `app.add_typer(service_app, name="service")`. Each model has a service of
its own; `deploy`, `stop` and `logs` act on one model: `--model NAME`, or the model of `--problem NAME`
(its spec's `model_name`), or of the chosen problem (`$FLYWHEEL_PROBLEM`, then `flywheel problem use`).
There is no default model. `status` lists every model's service on the stack (or one, with `--model` or
`--problem`). `status`, `stop` and `logs` read the state files the stack's deployer wrote
(`flywheel_home()/services/<stack>/<model>.json`) and need neither Prefect nor MLflow, so they answer at
once; `deploy` runs the `deployment` flow.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from flywheel.cli_common import ModelOption, ProblemOption, StackOption, fail, model_or_fail

if TYPE_CHECKING:
    from stacks.components.deployers import ModelDeployer, ServiceInfo

__all__ = ["service_app", "status_table"]

service_app = typer.Typer(
    help="The model services of a stack, one per model (local processes, containers or Kubernetes): "
    "deploy, status, logs, stop.",
    no_args_is_help=True,
)

MAX_LOG_LINES = 10_000


def _deployer(stack: str | None) -> ModelDeployer:
    from stacks.components.deployers import DeploymentError, deployer_for
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        return deployer_for(load_stack(selected_stack_name(stack)))
    except (StackError, DeploymentError) as exc:
        fail(str(exc))


def status_table(infos: list[ServiceInfo]) -> list[str]:
    """One line per service: model, version served, URL, pid (or container / Deployment), state."""
    header = ("MODEL", "VERSION", "URL", "PID/HANDLE", "STATE")
    rows = [
        (
            i.model_name,
            f"v{i.model_version}" if i.model_version else "?",
            i.url,
            i.handle,
            i.state + (f" ({i.detail})" if i.detail and not (i.running and i.healthy) else ""),
        )
        for i in infos
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    ]


@service_app.command("status")
def status(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every model's service on the stack: version served, URL, pid or container, healthy?

    Exit 1 if one is not healthy or none is recorded. With --model or --problem: that one model's service in
    detail.
    """
    from stacks.components.deployers import DeploymentError

    deployer = _deployer(stack)
    name = deployer.stack.name
    if model is not None or problem is not None:
        chosen = model_or_fail(model, problem)
        try:
            info = deployer.status(chosen)
        except DeploymentError as exc:
            fail(str(exc))
        if info is None:
            typer.echo(
                json.dumps(None)
                if as_json
                else f"no service of '{chosen}' recorded on stack '{name}' (`flywheel service deploy "
                f"--model {chosen}` starts one)"
            )
            raise typer.Exit(1)
        typer.echo(json.dumps(info.to_dict(), indent=2) if as_json else "\n".join(info.lines()))
        if not (info.running and info.healthy):
            raise typer.Exit(1)
        return
    try:
        infos, problems = deployer.statuses()
    except DeploymentError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
    elif not infos:
        typer.echo(
            f"no service recorded on stack '{name}' (`flywheel service deploy --model NAME` starts one)"
        )
    else:
        healthy = sum(1 for i in infos if i.running and i.healthy)
        typer.echo(f"stack '{name}' ({deployer.flavor}): {len(infos)} services, {healthy} healthy")
        typer.echo("\n".join(status_table(infos)))
    for line in problems:
        typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
    if not infos or problems or any(not (i.running and i.healthy) for i in infos):
        raise typer.Exit(1)


@service_app.command("stop")
def stop(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    stop_all: Annotated[bool, typer.Option("--all", help="stop every model's service on the stack")] = False,
) -> None:
    """Stop a model's service (SIGTERM, then SIGKILL after a timeout) and forget it; --all: every model's."""
    from stacks.components.deployers import DeploymentError

    deployer = _deployer(stack)
    name = deployer.stack.name
    if stop_all and (model is not None or problem is not None):
        fail("--all stops every model's service: give it without --model or --problem")
    try:
        if stop_all:
            recorded, problems = deployer.statuses()
            for line in problems:
                typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
            models = [i.model_name for i in recorded]
            if not models:
                typer.echo(f"no service recorded on stack '{name}': nothing to stop")
        else:
            models = [model_or_fail(model, problem)]
        for chosen in models:
            info = deployer.recorded(chosen)
            stopped = deployer.stop(chosen)
            if info is None:
                typer.echo(f"no service of '{chosen}' recorded on stack '{name}': nothing to stop")
            elif stopped:
                typer.echo(
                    f"stopped the service of '{chosen}' on stack '{name}' ({info.flavor}, {info.handle})"
                )
            else:
                typer.echo(
                    f"the service of '{chosen}' on stack '{name}' ({info.handle}) was not running; "
                    "its record is removed"
                )
    except DeploymentError as exc:
        fail(str(exc))


@service_app.command("logs")
def logs(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, max=MAX_LOG_LINES, help="how many of the last lines")
    ] = 50,
) -> None:
    """The last lines a model's service wrote (its log file, `docker logs` or `kubectl logs`)."""
    from stacks.components.deployers import DeploymentError

    deployer = _deployer(stack)
    chosen = model_or_fail(model, problem)
    try:
        typer.echo(deployer.logs(chosen, lines))
    except DeploymentError as exc:
        fail(str(exc))


@service_app.command("deploy")
def deploy(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="replace the model's running service")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for /ready")] = None,
) -> None:
    """Serve a model's champion in a service of its own, with the stack's deployer (the `deployment` flow).

    Other models' services keep running untouched."""
    chosen_model = model_or_fail(model, problem)
    from flows.runtime import prepare_prefect
    from stacks.config import StackError

    try:
        chosen = prepare_prefect(stack)
    except StackError as exc:
        fail(str(exc))
    from flows.deployment import deployment
    from stacks.components.deployers import DeploymentError

    try:
        result = deployment(
            model_name=chosen_model, stack=stack or chosen.name, restart=restart, ready_timeout_s=timeout
        )
    except DeploymentError as exc:
        fail(str(exc))
    typer.echo("")
    typer.secho(
        f"{result['model_name']} v{result['model_version']} served at {result['url']} "
        f"({result['flavor']}, {'pid' if result['pid'] is not None else 'handle'} {result['handle']})",
        bold=True,
    )
    if result.get("detail"):
        typer.echo(result["detail"])
    import shlex

    where = f"--stack {shlex.quote(stack or chosen.name)}"
    named = f"--model {shlex.quote(chosen_model)}"
    typer.echo(f"Status: .venv/bin/flywheel service status {where}")
    typer.echo(f"Logs:   .venv/bin/flywheel service logs {where} {named}")
    typer.echo(f"Stop:   .venv/bin/flywheel service stop {where} {named}")
