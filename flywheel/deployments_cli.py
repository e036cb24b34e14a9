"""`flywheel deployments write [--check]`: prefect.yaml from every problem spec in flows/problems/.

Mounted by `flywheel/cli.py`. The generator (`flywheel/deployments.py`) is pure; this module reads the
specs, finds Prefect's version and writes or compares the file.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["PREFECT_YAML", "deployments_app", "generated_prefect_yaml"]

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"

deployments_app = typer.Typer(
    help="Prefect deployments: prefect.yaml is generated from the problem specs.", no_args_is_help=True
)


def generated_prefect_yaml() -> str:
    """What prefect.yaml should hold for the specs in flows/problems/ and the installed Prefect."""
    from flywheel.deployments import load_problem_specs, render

    return render(load_problem_specs(), version("prefect"))


@deployments_app.command("write")
def write_command(
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 with a diff if the file is stale")
    ] = False,
    path: Annotated[Path, typer.Option(help="the file to write or check")] = PREFECT_YAML,
) -> None:
    """Write prefect.yaml: training, monitoring, batch-inference and deployment (service) per problem."""
    from flywheel.deployments import stale_diff
    from steps.problem import SpecError

    try:
        text = generated_prefect_yaml()
    except SpecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if check:
        committed = path.read_text(encoding="utf-8") if path.is_file() else ""
        diff = stale_diff(committed, text, path.name)
        if diff:
            typer.echo(diff, nl=False)
            typer.echo(f"{path} is stale: run `flywheel deployments write`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path} is up to date")
        return
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")
