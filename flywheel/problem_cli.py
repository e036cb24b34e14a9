"""`flywheel problem list|show|use`: the problem specs in flows/problems/ and which one commands use.

Mounted by `flywheel/cli.py` as `app.add_typer(problem_app, name="problem")`. The choice is stored like
`flywheel stack use` stores a stack's (see `flywheel/problem_selection.py`). Specs are imported inside the
commands (their rule language brings pandas), so `flywheel --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml

__all__ = ["problem_app"]

problem_app = typer.Typer(
    help="Problems: what to learn from which data (flows/problems/*.yaml), and which one commands use.",
    no_args_is_help=True,
)


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@problem_app.command("list")
def list_command(
    with_champion: Annotated[
        bool,
        typer.Option(
            "--with-champion",
            help="only the names of the problems whose model has a champion on the stack, one per line "
            "(for scripts: `make up` deploys their services)",
        ),
    ] = False,
    stack: Annotated[str | None, typer.Option(help="the stack whose registry --with-champion reads")] = None,
) -> None:
    """List the problem specs; `*` marks the one commands use."""
    from flywheel.contracts.problem import SpecError, load_spec
    from flywheel.problem_selection import NoProblemChosen, known_problems, problem_selection

    if with_champion:
        _champions(stack)
        return

    try:
        active: str | None
        active, origin = problem_selection(None)
    except NoProblemChosen:
        active, origin = None, "none chosen"
    for name in known_problems():
        try:
            spec = load_spec(name)
        except SpecError as exc:
            typer.echo(f"{'*' if name == active else ' '} {name:<16} invalid: {str(exc).splitlines()[0]}")
            continue
        typer.echo(
            f"{'*' if name == active else ' '} {name:<16} {spec.task:<11} {spec.model_name:<20} "
            f"{spec.description}".rstrip()
        )
    if active is None:
        typer.echo(
            "\nactive: none (choose one with `flywheel problem use NAME`, --problem or $FLYWHEEL_PROBLEM)"
        )
    else:
        typer.echo(f"\nactive: {active} ({origin})")


def _champions(stack: str | None) -> None:
    """Print the problems whose model has a champion; a registry that cannot be read is an error (exit 1),
    never an empty answer."""
    from flywheel.deployments import load_problem_specs
    from stacks.components.model_versions import alias_version
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
        uri = chosen.mlflow_tracking_uri() or ""
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            return  # a local registry never written to: nothing was ever registered
        configure_mlflow(chosen, create_experiment=False)
        names = [spec.name for spec in load_problem_specs() if alias_version(spec.model_name)]
    except Exception as exc:  # no stack, an unreadable registry: say which, let the script decide
        typer.echo(f"error: cannot read the champions: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    for name in names:
        typer.echo(name)


@problem_app.command("show")
def show_command(
    name: Annotated[
        str | None,
        typer.Argument(help="problem name or spec path; default: $FLYWHEEL_PROBLEM, then `problem use`"),
    ] = None,
) -> None:
    """Print a problem spec as validated, defaults filled in, as YAML."""
    from flywheel.contracts.problem import SpecError, load_spec
    from flywheel.problem_selection import problem_selection

    try:
        chosen, _ = problem_selection(name)
        spec = load_spec(chosen)
    except SpecError as exc:
        _fail(exc)
    typer.echo(f"# {chosen}")
    typer.echo(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip())


@problem_app.command("use")
def use_command(
    name: Annotated[str, typer.Argument(help="problem name (flows/problems/NAME.yaml) or spec path")],
) -> None:
    """Make a problem the one commands use in this flywheel home (after checking that its spec loads)."""
    from flywheel.contracts.problem import SpecError
    from flywheel.problem_selection import ENV_VAR, active_problem_file, use_problem

    try:
        spec = use_problem(name)
    except SpecError as exc:
        _fail(exc)
    typer.echo(f"active problem: {spec.name} (model {spec.model_name}; written to {active_problem_file()})")
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env != name:
        typer.echo(f"warning: {ENV_VAR}={env} is set and takes precedence until unset", err=True)
