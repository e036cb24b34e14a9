"""`flywheel reproduce MODEL@ALIAS|MODEL/VERSION`: retrain a version from its record and compare.

Mounted by `flywheel/cli.py` as a command. The IO edge only: the stack's artifact store and registry are
resolved here, the work is :mod:`flywheel.reproduce`. Exit 0 when the version was reproduced, 1 otherwise
(a report says why: what differed, or which snapshot is gone), never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

StackOption = Annotated[
    str | None,
    typer.Option("--stack", help="stack whose registry and artifact store to use (default: the active one)"),
]


def reproduce_command(
    reference: Annotated[
        str, typer.Argument(help="MODEL@ALIAS or MODEL/VERSION, e.g. flight-delay@champion")
    ],
    stack: StackOption = None,
    tolerance: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="largest metric or prediction difference still reproduced"),
    ] = 1e-9,
) -> None:
    """Retrain a version from exactly what it recorded (snapshots, spec, tuned parameters and rounds, no
    tuning) and compare test metrics and predictions with it; report what differs (code, libraries, data)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the report is the output
    from mlflow.exceptions import MlflowException

    from flows.runtime import resolve_stack
    from flywheel.reproduce import reproduce
    from stacks.components.model_versions import VersionNotFound, resolve
    from stacks.components.registry_health import RegistryUnavailable
    from stacks.config import StackError

    try:
        ctx = resolve_stack(stack)
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        mv = resolve(reference)
    except VersionNotFound as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        report = reproduce(mv, ctx.store, tolerance=tolerance)
    except (MlflowException, RegistryUnavailable, OSError) as exc:
        typer.secho(f"cannot reproduce {reference!r}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(report.text())
    raise typer.Exit(0 if report.reproduced else 1)
