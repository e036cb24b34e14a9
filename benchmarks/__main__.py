"""`make bench` / `python -m benchmarks [training] [--trials N] [--seeds 0,1,2] [--sample-rows N]`."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="Flywheel benchmarks: tables and ratios against the baselines.")


@app.command()
def main(
    parts: Annotated[list[str] | None, typer.Argument(help="which parts: training (default: all)")] = None,
    trials: Annotated[int, typer.Option(help="Optuna trials per study")] = 20,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds for the pruning comparison")] = "0,1,2",
    sample_rows: Annotated[
        int | None, typer.Option(help="use a sample of the flights (default: all)")
    ] = None,
) -> None:
    chosen = parts or ["training"]
    known = {"training"}
    unknown = set(chosen) - known
    if unknown:
        raise typer.BadParameter(f"unknown part(s) {sorted(unknown)}; known: {sorted(known)}")
    if "training" in chosen:
        from benchmarks import training

        training.main(trials=trials, seeds=[int(s) for s in seeds.split(",")], sample_rows=sample_rows)


if __name__ == "__main__":
    app()
