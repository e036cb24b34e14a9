"""`make bench` / `python -m benchmarks [training] [serving] [scale] [hardening] [before-after] [flywheel]
[monitoring] [options]`:
every part when none is named."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="Flywheel benchmarks: tables and ratios against the baselines.")

PARTS = ("training", "serving", "scale", "hardening", "before-after", "flywheel", "monitoring")


@app.command()
def main(
    parts: Annotated[
        list[str] | None, typer.Argument(help=f"which parts: {', '.join(PARTS)} (default: all)")
    ] = None,
    trials: Annotated[int, typer.Option(help="training, scale: Optuna trials per study")] = 20,
    flywheel_trials: Annotated[
        int | None, typer.Option(help="flywheel: trials per full training (default 20; --quick 3)")
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="training: comma-separated seeds for the pruning comparison")
    ] = "0,1,2",
    sample_rows: Annotated[
        int | None,
        typer.Option(help="training: use a sample of the flights (default: all); scale: flights to tune on"),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help="serving: a short check (small model, 3 s phases, 30k-row batch flow); "
            "scale: 4 trials, 30k flights at 1x and 2x; hardening: a small model, 2 s phases, 1 repeat; "
            "monitoring: a 40,000-request log"
        ),
    ] = False,
    scales: Annotated[
        str | None, typer.Option(help="scale: comma-separated multiples of the flights (default 1,4,10)")
    ] = None,
    train_rows: Annotated[
        int | None, typer.Option(help="serving: flights the served model learns from (default 100,000)")
    ] = None,
    phase_s: Annotated[
        float | None, typer.Option(help="serving: seconds per load phase (default 10)")
    ] = None,
    flow_rows: Annotated[
        int | None, typer.Option(help="serving: rows the batch flow scores (default: all flights)")
    ] = None,
    keep_home: Annotated[
        bool, typer.Option(help="serving, hardening: keep the temporary FLYWHEEL_HOME (models, server logs)")
    ] = False,
    baseline: Annotated[
        str,
        typer.Option(
            help="hardening: git ref of the service before the hardening work, measured beside the current "
            "one ('none': skip the before/after comparison)"
        ),
    ] = "2248341",
    since: Annotated[
        str,
        typer.Option(
            help="before-after: git ref the current service's single-row /predict is measured against "
            "(default: the commit before 'One platform, many models')"
        ),
    ] = "df0e5ff",
) -> None:
    chosen = parts or list(PARTS)
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise typer.BadParameter(f"unknown part(s) {sorted(unknown)}; known: {list(PARTS)}")
    if "training" in chosen:
        from benchmarks import training

        training.main(trials=trials, seeds=[int(s) for s in seeds.split(",")], sample_rows=sample_rows)
    if "serving" in chosen:
        from benchmarks import serving

        serving.main(
            quick=quick, train_rows=train_rows, phase_s=phase_s, flow_rows=flow_rows, keep_home=keep_home
        )
    if "scale" in chosen:
        from benchmarks import scale

        scale.main(
            quick=quick,
            trials=trials,
            sample_rows=sample_rows,
            scales=[int(s) for s in scales.split(",")] if scales else None,
        )
    if "hardening" in chosen:
        from benchmarks import hardening

        hardening.main(quick=quick, baseline=baseline, keep_home=keep_home)
    if "before-after" in chosen:
        from benchmarks import before_after

        before_after.main(baseline=since, quick=quick)
    if "flywheel" in chosen:
        from benchmarks import flywheel

        flywheel.main(quick=quick, trials=flywheel_trials, keep_home=keep_home)
    if "monitoring" in chosen:
        from benchmarks import monitoring

        monitoring.main(quick=quick)


if __name__ == "__main__":
    app()
