"""`flywheel deployments write [--check] [--problems DIR]`: prefect.yaml from every problem spec in a
folder (flows/problems/ unless told otherwise).

Mounted by `flywheel/cli.py`. The generator (`flywheel/deployments.py`) is pure; this module reads the
specs, finds Prefect's version and writes or compares the file. Specs from another folder are passed to
the flows by path (relative to the project folder when they are inside it, as flow runs start there),
since a bare name only finds flows/problems/NAME.yaml.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["PREFECT_YAML", "deployments_app", "generated_prefect_yaml", "problem_refs"]

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_DIR / "prefect.yaml"

deployments_app = typer.Typer(
    help="Prefect deployments: prefect.yaml is generated from the problem specs.", no_args_is_help=True
)


def problem_refs(folder: Path) -> dict[str, str] | None:
    """What each spec in ``folder`` is passed to the flows as: None (their names) for flows/problems/,
    else name -> the spec's path, relative to the project folder where it lies inside it."""
    from flywheel.contracts.problem import PROBLEMS_DIR, load_spec

    folder = folder.resolve()
    if folder == PROBLEMS_DIR.resolve():
        return None
    refs = {}
    for path in sorted(folder.glob("*.yaml")):
        absolute = path.resolve()
        ref = absolute.relative_to(PROJECT_DIR) if absolute.is_relative_to(PROJECT_DIR) else absolute
        refs[load_spec(absolute).name] = str(ref)
    return refs


def generated_prefect_yaml(folder: Path | None = None) -> str:
    """What prefect.yaml should hold for the specs in ``folder`` (default flows/problems/) and the
    installed Prefect."""
    from flywheel.contracts.problem import PROBLEMS_DIR
    from flywheel.deployments import load_problem_specs, render

    folder = PROBLEMS_DIR if folder is None else folder
    return render(load_problem_specs(folder), version("prefect"), problem_refs(folder))


@deployments_app.command("write")
def write_command(
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 with a diff if the file is stale")
    ] = False,
    path: Annotated[Path, typer.Option(help="the file to write or check")] = PREFECT_YAML,
    problems: Annotated[
        Path | None,
        typer.Option(
            "--problems",
            help="the folder of problem specs (default: flows/problems); specs elsewhere are passed to "
            "the flows by path, so it must be readable where the flows run",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Write prefect.yaml: training, monitoring, batch-inference and deployment (service) per problem."""
    from flywheel.contracts.problem import SpecError
    from flywheel.deployments import stale_diff

    try:
        text = generated_prefect_yaml(problems)
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
