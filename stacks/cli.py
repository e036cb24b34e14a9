"""`flywheel stack ...`: list, show, use, check, provision, export and import stacks.

Mounted by `flywheel/cli.py` as `app.add_typer(stack_app, name="stack")`. Only light modules
are imported here so `flywheel --help` stays fast. Nothing printed here ever contains a secret:
a stack cannot hold one in plain text (loading refuses it), `show` and `export` print the stack's
references through its masked dump, `check` prints one-line reasons with secrets masked, and
every error has its URLs' passwords masked.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml

from stacks import secret_keys
from stacks.check import check_stack
from stacks.config import StackError
from stacks.loader import (
    STACKS_DIR,
    active_stack_file,
    list_stacks,
    load_stack,
    stack_selection,
    use_stack,
)
from stacks.zenml_io import (
    ZENML_FALLBACK_VERSION,
    export_native,
    export_zenml,
    import_zenml_with_warnings,
    to_zenml_dict,
)

__all__ = ["stack_app"]

stack_app = typer.Typer(
    help="Stacks: the infrastructure a run uses (orchestrator, artifact store, MLflow...), one YAML each.",
    no_args_is_help=True,
)

NameArg = Annotated[
    str | None,
    typer.Argument(help="Stack name or YAML path; default: $FLYWHEEL_STACK, then `stack use`, then local."),
]


class ExportFormat(StrEnum):
    """Output formats of `stack export`."""

    native = "native"
    zenml = "zenml"


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {secret_keys.redact(str(exc))}", err=True)
    raise typer.Exit(1)


def _warn(lines: list[str]) -> None:
    for line in lines:
        typer.echo(f"warning: {line}", err=True)


@stack_app.command("list")
def list_command() -> None:
    """List the shipped and imported stacks; `*` marks the one a run would use."""
    active, origin = stack_selection(None)
    names = list_stacks()
    for name in names:
        where = "shipped" if (STACKS_DIR / f"{name}.yaml").is_file() else "imported"
        typer.echo(f"{'*' if name == active else ' '} {name:<20} {where}")
    typer.echo(f"\nactive: {active} ({origin})")
    if active not in names and not active.endswith((".yaml", ".yml")):
        typer.echo(f"warning: the active stack '{active}' does not exist", err=True)


@stack_app.command("show")
def show_command(name: NameArg = None) -> None:
    """Print a stack's effective configuration as YAML (secret references shown, never values)."""
    try:
        stack = load_stack(name)
    except StackError as exc:
        _fail(exc)
    typer.echo(f"# {stack.source}")
    typer.echo(yaml.safe_dump(stack.to_dict(), sort_keys=False).rstrip())


@stack_app.command("use")
def use_command(
    name: Annotated[str, typer.Argument(help="Stack name (or YAML path) to make active.")],
) -> None:
    """Make a stack the active one for this flywheel home (after checking that it loads)."""
    try:
        stack = use_stack(name)
    except StackError as exc:
        _fail(exc)
    typer.echo(f"active stack: {stack.name} (written to {active_stack_file()})")
    env = os.environ.get("FLYWHEEL_STACK", "").strip()
    if env and env != name:
        typer.echo(f"warning: FLYWHEEL_STACK={env} is set and takes precedence until unset", err=True)


@stack_app.command("check")
def check_command(
    name: NameArg = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each component.")] = 5.0,
) -> None:
    """Connect to every component and say what is reachable; exit code 1 if anything is not."""
    try:
        stack = load_stack(name)
    except StackError as exc:
        _fail(exc)
    typer.echo(f"stack '{stack.name}' ({stack.source})")
    results = check_stack(stack, timeout=timeout)
    width_type = max(len(r.component_type) for r in results)
    width_name = max(len(r.name) for r in results)
    for r in results:
        status = "ok  " if r.ok else "FAIL"
        typer.echo(
            f"{status}  {r.component_type:<{width_type}}  {r.name:<{width_name}}  {r.flavor:<10}  {r.detail}"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        typer.echo(f"{len(failed)} of {len(results)} components not reachable", err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(results)} components reachable")


@stack_app.command("provision")
def provision_command(
    name: NameArg = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="a registered model to provision (repeat for several); written as the flywheel_models "
            "variable, and as flywheel_model when only one is named. Default: none (each problem's "
            "service deployment names its own model)",
        ),
    ] = None,
) -> None:
    """Create the stack's work pool and the Prefect variables prefect.yaml reads, on its Prefect server."""
    from stacks.provision import provision

    try:
        stack = load_stack(name)
        done = provision(stack, model or [])
    except StackError as exc:
        _fail(exc)
    except Exception as exc:  # the server's own errors: unreachable, refused
        _fail(RuntimeError(f"could not provision on the Prefect server: {type(exc).__name__}: {exc}"))
    state = "created" if done.created_pool else "exists"
    typer.echo(f"work pool '{done.work_pool}' ({done.work_pool_type}) {state} on {done.api_url}")
    for key, value in done.variables.items():
        typer.echo(f"variable {key} = {value!r}")
    for key in done.removed:
        typer.echo(f"variable {key} removed (no single model named)")
    typer.echo(
        "next: PREFECT_CLI_PROMPT=false prefect deploy --all, and a worker: "
        f"prefect worker start --pool {done.work_pool}"
    )


@stack_app.command("export")
def export_command(
    name: NameArg = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write; default: stdout.")
    ] = None,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="native, or zenml for `zenml stack import`.")
    ] = (ExportFormat.native),
) -> None:
    """Write a stack as our YAML or as a ZenML stack export (references kept, never resolved)."""
    try:
        stack = load_stack(name)
    except StackError as exc:
        _fail(exc)
    if output is None:
        data, warnings = (stack.to_dict(), []) if fmt is ExportFormat.native else to_zenml_dict(stack)
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
        _warn(warnings)
        return
    warnings = []
    if fmt is ExportFormat.native:
        export_native(stack, output)
    else:
        warnings = export_zenml(stack, output)
    _warn(warnings)
    typer.echo(f"exported stack '{stack.name}' ({fmt.value}) to {output}")
    if fmt is ExportFormat.zenml:
        typer.echo(
            f"import it with: zenml stack import {stack.name} -f {output} "
            f"(add --ignore-version-mismatch if your ZenML is not the version written in the file, "
            f"{ZENML_FALLBACK_VERSION} when zenml is not installed here); and back, after "
            f"`zenml stack export {stack.name} FILE`, with: flywheel stack import FILE --base {stack.name} "
            "--name NEW"
        )


@stack_app.command("import")
def import_command(
    path: Annotated[Path, typer.Argument(help="A `zenml stack export` file (or one of ours).")],
    name: Annotated[str | None, typer.Option("--name", help="Name for the imported stack.")] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Stack (name or YAML path) to take what ZenML cannot hold from: the Prefect "
            "orchestrator, deployer, tuner, compute, settings ZenML has no key for. For a file that "
            "`zenml stack export` wrote, which has no 'flywheel' section.",
        ),
    ] = None,
) -> None:
    """Import a ZenML stack export into flywheel home (unknown flavors skipped with a warning)."""
    try:
        base_stack = load_stack(base) if base is not None else None
        stack, warnings = import_zenml_with_warnings(path, name, base_stack)
    except StackError as exc:
        _fail(exc)
    _warn(warnings)
    typer.echo(f"imported stack '{stack.name}' to {stack.source}")
    typer.echo(f"use it with: flywheel stack use {stack.name}")
