"""`flywheel service ...`: deploy, look at and stop the model service of a stack.

Mounted by `flywheel/cli.py` as `app.add_typer(service_app, name="service")`. `status` and `stop` read
the state file the stack's deployer wrote (`flywheel_home()/services/<stack>.json`) and need neither
Prefect nor MLflow, so they answer at once; `deploy` runs the `deployment` flow.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from stacks.components.deployers import ModelDeployer

__all__ = ["service_app"]

service_app = typer.Typer(
    help="The model service of a stack (a local process, a container or Kubernetes): deploy, status, stop.",
    no_args_is_help=True,
)

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="stack name or file (default: FLYWHEEL_STACK, then `flywheel stack use`, then local)",
    ),
]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _deployer(stack: str | None) -> ModelDeployer:
    from stacks.components.deployers import DeploymentError, deployer_for
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        return deployer_for(load_stack(selected_stack_name(stack)))
    except (StackError, DeploymentError) as exc:
        _fail(str(exc))


@service_app.command("status")
def status(
    stack: StackOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Where the stack's service runs, which version it serves, and whether it is healthy (exit 1 if not)."""
    from stacks.components.deployers import DeploymentError

    deployer = _deployer(stack)
    try:
        info = deployer.status()
    except DeploymentError as exc:
        _fail(str(exc))
    if info is None:
        if as_json:
            typer.echo(json.dumps(None))
        else:
            name = deployer.stack.name
            typer.echo(f"no service recorded for stack '{name}' (`flywheel service deploy` starts one)")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
    else:
        typer.echo("\n".join(info.lines()))
    if not (info.running and info.healthy):
        raise typer.Exit(1)


@service_app.command("stop")
def stop(stack: StackOption = None) -> None:
    """Stop the stack's service (SIGTERM, then SIGKILL after a timeout) and forget it."""
    from stacks.components.deployers import DeploymentError

    deployer = _deployer(stack)
    try:
        recorded = deployer.recorded()
        stopped = deployer.stop()
    except DeploymentError as exc:
        _fail(str(exc))
    name = deployer.stack.name
    if recorded is None:
        typer.echo(f"no service recorded for stack '{name}': nothing to stop")
    elif stopped:
        typer.echo(f"stopped the service of stack '{name}' ({recorded.flavor}, {recorded.handle})")
    else:
        typer.echo(
            f"the service of stack '{name}' ({recorded.handle}) was not running; its record is removed"
        )


@service_app.command("deploy")
def deploy(
    stack: StackOption = None,
    model: Annotated[str, typer.Option(help="registered model name")] = "flight-delay",
    restart: Annotated[bool, typer.Option("--restart", help="replace a running service")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for /ready")] = None,
) -> None:
    """Serve the model's champion with the stack's deployer (runs the `deployment` flow)."""
    from flows.runtime import prepare_prefect
    from stacks.config import StackError

    try:
        chosen = prepare_prefect(stack)
    except StackError as exc:
        _fail(str(exc))
    from flows.deployment import deployment
    from stacks.components.deployers import DeploymentError

    try:
        result = deployment(
            stack=stack or chosen.name, model_name=model, restart=restart, ready_timeout_s=timeout
        )
    except DeploymentError as exc:
        _fail(str(exc))
    typer.echo("")
    typer.secho(
        f"{result['model_name']} v{result['model_version']} served at {result['url']} "
        f"({result['flavor']}, {'pid' if result['pid'] is not None else 'handle'} {result['handle']})",
        bold=True,
    )
    if result.get("detail"):
        typer.echo(result["detail"])
    typer.echo(f"Status: .venv/bin/flywheel service status --stack {stack or chosen.name}")
    typer.echo(f"Stop:   .venv/bin/flywheel service stop --stack {stack or chosen.name}")
