"""Serving before / after a change: the single-row ``/predict`` of the current working tree against a
``git worktree`` of an earlier commit, in one run.

Same home, same registered flights champion, profiling off, the local deployer's command line (the
current server flags on both sides: the baseline has them too); fresh
processes every repeat, wrk phases interleaved (baseline then current, at c=1 then c=16), medians of the
repeats, and the ratios current / baseline against the 5% target. The default baseline is the commit
before "One platform, many models" (multiclass, contracts, the router split), so the cost of that work on
the request path is what this prints. ``python -m benchmarks.before_after [--baseline REF] [--quick]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from benchmarks import hardening
from benchmarks.report import ratio_line, save
from benchmarks.serving_procs import Processes, Wrk, listening

PLATFORM_BASELINE_REF = "df0e5ff"
"""The last commit before "One platform, many models"."""


def main(
    baseline: str = PLATFORM_BASELINE_REF, quick: bool = False, reps: int | None = None
) -> dict[str, Any]:
    from benchmarks import serving_setup as setup
    from flows.runtime import prepare_prefect

    plan = hardening.Plan.make(quick)
    if reps is not None:
        plan = hardening.Plan(**{**asdict(plan), "reps": reps})
    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-before-after-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["FLYWHEEL_STACK"] = "local"
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    prepare_prefect("local")
    wrk = Wrk(home)
    print(
        f"Serving before / after: baseline {baseline}; {plan.train_rows:,} training flights; phases "
        f"{plan.phase_s:g} s; {plan.reps} repeat(s); load average {hardening._loadavg()}\n",
        flush=True,
    )
    payload: dict[str, Any] = {}
    try:
        trained, name, _ = hardening._train(plan, home)
        single = wrk.body_file("single", setup.complete_record(trained.parts.test.X))
        with Processes(home / "logs") as procs:
            payload = hardening.compare(
                plan, home, procs, wrk, baseline, name, single, check_identity=False, same_flags=True
            )
            ports = list(procs.ports)
        payload["ports_still_listening"] = listening(ports)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = hardening.comparison_lines(payload)
    print("\nRatios (this run):")
    for name, value, target, ok in lines:
        print(ratio_line(name, value, target, ok))
    print(
        f"  CPU per request, current / baseline: {payload['cpu_ratio_c1']:.3f} at c=1, "
        f"{payload['cpu_ratio_c16']:.3f} at c=16"
    )
    saved = save("before-after", json.loads(json.dumps(payload, default=str)), Path.cwd() / ".flywheel")
    print(f"\nsaved {saved}")
    return payload


if __name__ == "__main__":
    typer.run(main)
