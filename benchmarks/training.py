"""Training benchmark: per-step times, the flow's orchestration overhead, and Optuna pruning vs none.

Baselines named by the foundation issue: orchestration overhead = flow wall time / sum of step times
(target <= 1.05); Optuna with pruning vs without at equal trials over three seeds (target: median pruned
time <= 0.8x plain, at the same best AUC +- 0.002). All ratios are measured in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import ratio_line, save, table


def flow_overhead(trials: int, sample_rows: int | None) -> dict[str, Any]:
    """Run the real training flow on the local stack (ephemeral Prefect API) and read its own timings."""
    from flows.runtime import prepare_prefect

    prepare_prefect("local")
    from flows.training import training

    started = time.perf_counter()
    summary = training(stack="local", problem="flights", n_trials=trials, sample_rows=sample_rows)
    process_wall = time.perf_counter() - started
    return {"summary": summary, "call_wall_s": process_wall}


def pruning(trials: int, seeds: list[int], sample_rows: int | None) -> list[dict[str, Any]]:
    """The same study, with and without XGBoost's pruning callback, seed by seed, on the same split."""
    from flywheel.contracts.problem import load_spec
    from steps.data.features import build_dataset
    from steps.data.sources import read_source
    from steps.data.split import split
    from steps.model.tune import tune

    spec = load_spec("flights")
    raw = read_source(spec.source)
    if sample_rows:
        raw = raw.sample(n=sample_rows, random_state=0).sort_index()
    parts = split(build_dataset(raw, spec, {"weather": read_source(spec.joins[0].source)}), spec)
    rows = []
    for seed in seeds:
        for pruned in (False, True):
            result = tune(
                parts.fit,
                parts.valid,
                spec,
                study_name=f"bench-{seed}-{pruned}",
                n_trials=trials,
                timeout_s=None,
                pruning=pruned,
                seed=seed,
            )
            rows.append(
                {
                    "seed": seed,
                    "pruning": "on" if pruned else "off",
                    "seconds": result.duration_s,
                    "best_auc": result.best_value,
                    "pruned_trials": result.n_pruned,
                }
            )
            print(
                f"  seed {seed} pruning {'on ' if pruned else 'off'}: {result.duration_s:6.1f}s "
                f"best AUC {result.best_value:.4f} ({result.n_pruned} pruned)",
                flush=True,
            )
    return rows


def main(
    trials: int = 20, seeds: list[int] | None = None, sample_rows: int | None = None, home: Path | None = None
) -> dict[str, Any]:
    seeds = seeds or [0, 1, 2]
    import os

    if home is None:
        home = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    print(
        f"Training benchmark: flights, {trials} trials, seeds {seeds}, "
        f"{'all rows' if not sample_rows else f'{sample_rows:,} rows'}; home {home}\n",
        flush=True,
    )

    flow = flow_overhead(trials, sample_rows)
    summary = flow["summary"]
    step_rows = [
        {"step": k, "seconds": v, "share": v / summary["steps_total_s"]}
        for k, v in sorted(summary["timings"].items(), key=lambda kv: -kv[1])
    ]
    step_rows.append({"step": "sum of steps", "seconds": summary["steps_total_s"], "share": 1.0})
    step_rows.append(
        {
            "step": "flow wall (inside the flow)",
            "seconds": summary["flow_s"],
            "share": summary["flow_s"] / summary["steps_total_s"],
        }
    )
    step_rows.append(
        {
            "step": "call wall (incl. Prefect start-up)",
            "seconds": flow["call_wall_s"],
            "share": flow["call_wall_s"] / summary["steps_total_s"],
        }
    )
    print(table("Per-step times (training flow, local stack)", step_rows))
    overhead = summary["flow_s"] / summary["steps_total_s"]
    print()
    print(f"test ROC AUC {summary['metrics']['roc_auc']:.4f}; model v{summary['version']}")
    print(
        ratio_line(
            "orchestration overhead: flow wall / sum of step times", overhead, "<= 1.05", overhead <= 1.05
        )
    )
    print(
        "(call wall incl. the ephemeral Prefect server start: "
        f"{flow['call_wall_s'] / summary['steps_total_s']:.3f})"
    )
    print("\nOptuna pruning vs none, equal trials:", flush=True)
    rows = pruning(trials, seeds, sample_rows)
    print(table("Optuna: XGBoost pruning callback on vs off", rows))
    ratios = []
    gaps = []
    for seed in seeds:
        off = next(r for r in rows if r["seed"] == seed and r["pruning"] == "off")
        on = next(r for r in rows if r["seed"] == seed and r["pruning"] == "on")
        ratios.append(on["seconds"] / off["seconds"])
        gaps.append(on["best_auc"] - off["best_auc"])
    median_ratio = statistics.median(ratios)
    median_gap = statistics.median(gaps)
    print()
    print("per-seed time ratio (on/off): " + ", ".join(f"{r:.2f}" for r in ratios))
    print(ratio_line("median pruned time / plain time", median_ratio, "<= 0.8", median_ratio <= 0.8))
    print(
        ratio_line(
            "median best AUC difference (pruned - plain)",
            median_gap,
            "within 0.002",
            abs(median_gap) <= 0.002,
        )
    )
    payload = {
        "trials": trials,
        "seeds": seeds,
        "sample_rows": sample_rows,
        "steps": summary["timings"],
        "flow_s": summary["flow_s"],
        "steps_total_s": summary["steps_total_s"],
        "call_wall_s": flow["call_wall_s"],
        "overhead": overhead,
        "pruning": rows,
        "pruning_ratio_median": median_ratio,
        "auc_gap_median": median_gap,
        "test_auc": summary["metrics"]["roc_auc"],
    }
    print(f"\nsaved {save('training', payload, Path.cwd() / '.flywheel')}")
    return payload
