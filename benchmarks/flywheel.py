"""The data flywheel measured end to end on the flights: does learning from served traffic pay?

`make bench ARGS="flywheel"` (about 20 min; `--quick` about 4):
1. the training flow makes a first champion from January to September (the spec's ``training_data.until``);
2. the real service (started as the local deployer starts it, profiling on) answers October flights sent by
   ``flywheel replay``, whose outcomes come back through ``/feedback``;
3. the training flow, on that feedback: an ``incremental`` candidate (the champion boosted on it) and a
   ``full`` retrain (source + feedback, tuned), each gated against the first champion on the newest half of
   the October feedback (the alias is put back on the first champion after each, so both face the same one);
4. the service, still serving the first champion, answers November-December flights with their outcomes:
   the champion's realized ROC AUC on that traffic comes from its prediction log and the labels, as
   monitoring computes it; the two candidates score the very same served rows.
One table: each model's ROC AUC (and log loss) on the November-December traffic, its training time, what the
gate said; and the ratios against the champion. JSON copy: ``.flywheel/bench/flywheel.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.hardening import start_service, write_stack
from benchmarks.report import ratio_line, save, table
from benchmarks.serving_procs import Processes, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def _train(stack: Path, **kwargs: Any) -> dict[str, Any]:
    from flows.training import training

    started = time.perf_counter()
    result = training(problem="flights", stack=str(stack), **kwargs)
    result["wall_s"] = time.perf_counter() - started
    return result


def _replay(url: str, frame: Any, spec: Any, limit: int, rate: float, seed: int) -> Any:
    from flywheel.replay import replay

    result = replay(
        url,
        frame,
        problem=spec,
        rate=rate,
        limit=limit,
        duration=limit / rate * 3 + 60,
        feedback_delay=0.2,
        seed=seed,
    )
    if result.failed:
        raise RuntimeError(f"replay failed {result.failed} requests: {result.statuses}")
    return result


def _scores(version: str, frame: Any, spec: Any) -> dict[str, float]:
    """ROC AUC and log loss of a registered version on served feedback rows (its own encoding)."""
    import mlflow
    from sklearn.metrics import log_loss, roc_auc_score

    from flywheel.contracts.model_version import models_uri
    from stacks.components import model_versions
    from steps.data.features import encode
    from steps.model.xgb import predict

    schema = model_versions.feature_schema(model_versions.get_version(spec.model_name, version).run_id)
    booster = mlflow.xgboost.load_model(models_uri(spec.model_name, version))
    p = predict(booster, encode(frame, schema))
    y = frame["label"].to_numpy()
    return {"roc_auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p.clip(1e-7, 1 - 1e-7)))}


def main(quick: bool = False, trials: int | None = None, keep_home: bool = False) -> dict[str, Any]:
    from flywheel.contracts.problem import load_spec
    from flywheel.replay import rows_between
    from stacks.components import model_versions
    from stacks.components.artifact_store import ArtifactStore
    from steps.data import feedback
    from steps.data.sources import read_source
    from steps.monitor import policy, windows

    n_trials = trials or (3 if quick else 20)
    sample_rows = 60_000 if quick else None
    october_rows, later_rows, rate = (6_000, 4_000, 300.0) if quick else (20_000, 12_000, 300.0)
    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-flywheel-"))
    saved = {k: os.environ.get(k) for k in ("FLYWHEEL_HOME", "FLYWHEEL_STACK")}
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ.pop("FLYWHEEL_STACK", None)
    spec = load_spec("flights")
    stack = write_stack(home / "flywheel-bench.yaml", "flywheel-bench", free_port(), None)
    common = {"n_trials": n_trials, "sample_rows": sample_rows, "seed": 0}
    flights = read_source(spec.source)
    try:
        with Processes(home / "logs") as procs:
            champion = _train(stack, **common, reason="benchmark: first champion (January-September)")
            first = str(champion["version"])
            print(
                f"champion v{first}: {champion['wall_s']:.0f} s, "
                f"test roc_auc {champion['metrics']['roc_auc']:.4f}"
            )
            server, _ = start_service(procs, "service-october", stack, home, spec.model_name)
            wait_ready(server, "/ready", 180)
            october = rows_between(flights, spec, "2013-10", "2013-10")
            sent = _replay(server.url, october, spec, october_rows, rate, seed=1)
            procs.stop(server)  # SIGTERM: the profiler writes the prediction log and the labels it holds
            print(f"October: {sent.sent:,} requests, {sent.feedback_sent:,} labels")
            incremental = _train(stack, **common, mode="incremental", reason="benchmark: incremental")
            model_versions.make_champion(spec.model_name, first)
            full = _train(stack, **common, reason="benchmark: full retrain with the October feedback")
            model_versions.make_champion(spec.model_name, first)
            later_from = time.time()
            server, _ = start_service(procs, "service-later", stack, home, spec.model_name)
            wait_ready(server, "/ready", 180)
            later = rows_between(flights, spec, "2013-11", "2013-12")
            sent_later = _replay(server.url, later, spec, later_rows, rate, seed=2)
            procs.stop(server)
            print(f"November-December: {sent_later.sent:,} requests, {sent_later.feedback_sent:,} labels")
        store = ArtifactStore(str(home / "artifacts"))
        labelled = windows.labelled_predictions(store, spec.model_name, first, spec.task, ["0", "1"])
        served_later = labelled.frame[labelled.frame["ts"] >= later_from]
        realized = policy.realized_metrics(served_later, spec.task)
        names = model_versions.feature_schema(champion["run_id"]).names
        rows = feedback.collect(store, spec, names, ["0", "1"]).frame
        rows = rows[rows["served_at"] >= later_from]
        results = []
        for label, run in (("champion", champion), ("incremental", incremental), ("full retrain", full)):
            version = run.get("version")
            scored = (
                _scores(str(version), rows, spec)
                if version
                else {"roc_auc": float("nan"), "log_loss": float("nan")}
            )
            results.append(
                {
                    "model": f"{label} v{version}" if version else f"{label} (none)",
                    "learned from": _learned(run),
                    "train s": round(run["wall_s"], 1),
                    "Nov-Dec roc_auc": scored["roc_auc"],
                    "Nov-Dec log_loss": scored["log_loss"],
                    "gate (late October)": "first" if label == "champion" else _gate(run),
                }
            )
        base = results[0]["Nov-Dec roc_auc"]
        print()
        print(table(f"The flywheel on {len(rows):,} served November-December flights with outcomes", results))
        print(
            f"\nchampion's realized ROC AUC from its prediction log and labels (as monitoring computes it): "
            f"{realized.get('roc_auc', float('nan')):.4f} on {int(realized.get('labels', 0)):,} labels"
        )
        ratios = []
        for row in results[1:]:
            value = row["Nov-Dec roc_auc"] / base
            ratios.append(
                {"name": f"{row['model']} / champion, Nov-Dec ROC AUC", "value": value, "target": "> 1"}
            )
            print(ratio_line(ratios[-1]["name"], value, "> 1", value > 1))
        payload = {
            "quick": quick,
            "trials": n_trials,
            "sample_rows": sample_rows,
            "october_requests": sent.sent,
            "later_requests": sent_later.sent,
            "realized_champion": realized,
            "results": results,
            "ratios": ratios,
            "runs": {"champion": champion, "incremental": incremental, "full": full},
        }
        print(f"\nJSON: {save('flywheel' + ('-quick' if quick else ''), payload, ROOT / '.flywheel')}")
        return payload
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep_home:
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _learned(run: dict[str, Any]) -> str:
    data = run.get("data") or {}
    held = int(data.get("data.holdout_rows", 0))
    fed = int(data.get("data.feedback_rows", 0)) - held
    if run.get("mode") == "incremental":
        return f"champion + {fed:,} feedback rows ({held:,} held out)"
    return f"{data.get('data.source_rows', 0):,} source + {fed:,} feedback rows ({held:,} held out)"


def _gate(run: dict[str, Any]) -> str:
    if run.get("version") is None:
        return str(run.get("reason", ""))[:60]
    verdict = "promoted" if run.get("promoted") else "rejected"
    return f"{verdict}: {str(run.get('reason', ''))[:70]}"
