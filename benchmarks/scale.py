"""Scale benchmark (issue 5): Optuna on 1 vs 2 Dask workers, and training/scoring cost at 1x, 4x, 10x rows.

1. Tuning: the same study (trials, seed, pruning, in-memory storage) in process on XGBoost's 2 threads
   (the local stack), on a LocalCluster of 1 worker and of 2 workers (1 thread each, trials in parallel).
2. Scale: the flights rows resampled with new ids to 1x, 4x and 10x; each configuration (training with
   fixed parameters and rounds; batch scoring as the flow does it) runs alone in a fresh process, on the
   pandas path and on the Dask path (LocalCluster, 2 workers x 1 thread), with the peak resident memory of
   the whole process tree. From the measured points: how time and memory grow with rows, the pandas path's
   memory ceiling (a linear extrapolation to this machine's RAM: an estimate) and where Dask wins, if it
   does.

The JSON copy goes to .flywheel/bench/scale.json (scale-quick.json for ``--quick``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import save, table

PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_cat_to_onehot": 1,
    "max_depth": 8,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "seed": 0,
}
ROW_GROUP = 100_000


def _info(name: str, value: str) -> None:
    print(f"  {name:<62} {value}")


def _imports() -> None:
    import optuna  # noqa: F401
    import xgboost  # noqa: F401

    import steps.model.tune_dask  # noqa: F401


def tuning(trials: int, sample_rows: int, folder: Path, seed: int = 7) -> list[dict[str, Any]]:
    """The same trials three ways, each study in its own SQLite file (the local stack's tuner storage).

    Random sampling: trial i is seeded ``seed + i`` on the Dask workers, so 1 and 2 workers train the
    same parameter sets; the in-process run (the local stack: XGBoost on 2 threads, one trial at a time)
    gets the 1-worker run's parameters enqueued. The median pruner decides from the trials finished so
    far, so the pruned count can differ a little between runs. Cluster start-up is timed apart.
    """
    import optuna
    from distributed import Client, LocalCluster

    from flywheel.contracts.problem import load_spec
    from steps.data.features import build_dataset
    from steps.data.sources import read_source
    from steps.data.split import split
    from steps.model.tune import tune

    spec = load_spec("flights")
    raw = read_source(spec.source)
    raw = raw.sample(n=min(sample_rows, len(raw)), random_state=0).sort_index().reset_index(drop=True)
    parts = split(build_dataset(raw, spec, {"weather": read_source(spec.joins[0].source)}), spec)
    rows = []
    first_params: list[dict[str, Any]] = []
    for workers in (1, 2, None):
        storage = f"sqlite:///{folder / f'tune-{workers or 0}.db'}"
        started = time.perf_counter()
        if workers is None:
            label, startup = "in process, XGBoost on 2 threads (local stack)", 0.0
            study = optuna.create_study(study_name="b", storage=storage, direction="maximize")
            for params in first_params:
                study.enqueue_trial(params)  # the very trials the Dask runs trained
            result = tune(
                *(parts.fit, parts.valid, spec), study_name="b", storage=storage, n_trials=trials, seed=seed
            )
        else:
            label = f"Dask LocalCluster, {workers} worker{'s' if workers > 1 else ''} x 1 thread"
            with (
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
                Client(cluster) as client,
            ):
                client.wait_for_workers(workers)
                client.run(_imports)  # worker start-up, not tuning
                startup = time.perf_counter() - started
                result = tune(
                    *(parts.fit, parts.valid, spec),
                    study_name="b",
                    storage=storage,
                    n_trials=trials,
                    seed=seed,
                    sampler="random",
                    client=client,
                )
            if workers == 1:
                first_params = [t.params for t in optuna.load_study(study_name="b", storage=storage).trials]
        rows.append(
            {
                "how": label,
                "trials": result.n_trials,
                "pruned": result.n_pruned,
                "seconds": result.duration_s,
                "best_auc": result.best_value,
                "startup_s": startup,
                "load": os.getloadavg()[0],
            }
        )
        print(f"  {label}: {result.duration_s:.1f} s, {result.n_pruned} pruned", flush=True)
    return rows


def prepare(folder: Path, scales: list[int], base_rows: int | None, rounds: int) -> dict[str, Any]:
    """Raw rows (for scoring) and encoded rows (for training) at each scale, the schema and a model."""
    from flywheel.contracts.problem import load_spec
    from steps.data import features
    from steps.data.sources import read_source
    from steps.model.train import train

    spec = load_spec("flights")
    flights = read_source(spec.source)
    if base_rows:
        flights = flights.sample(n=base_rows, random_state=0).sort_index()
    flights = flights.reset_index(drop=True)
    weather = read_source(spec.joins[0].source)
    weather.to_parquet(folder / "weather.parquet", index=False)
    base = features.build_dataset(flights, spec, {"weather": weather})
    schema = base.schema
    (folder / "schema.json").write_text(json.dumps(schema.to_dict()))
    booster = train(base, PARAMS, rounds)
    booster.save_model(folder / "model.ubj")
    sizes: dict[int, dict[str, int]] = {}
    for k in scales:
        raw = flights if k == 1 else flights.sample(n=k * len(flights), replace=True, random_state=k)
        raw = raw.reset_index(drop=True)
        raw.insert(0, "id", np.arange(len(raw), dtype="int64"))  # new ids: a resampled row is a new flight
        raw.to_parquet(folder / f"raw-{k}x.parquet", index=False, row_group_size=ROW_GROUP)
        derived = features.derive(raw, spec, {"weather": weather})
        labelled = derived[derived[spec.label].notna()]
        encoded = features.encode(labelled, schema)
        encoded[spec.label] = labelled[spec.label].astype("int64")
        encoded.reset_index(drop=True).to_parquet(
            folder / f"train-{k}x.parquet", index=False, row_group_size=ROW_GROUP
        )
        sizes[k] = {"raw_rows": len(raw), "train_rows": len(encoded)}
        print(f"  {k}x: {len(raw):,} raw rows, {len(encoded):,} training rows", flush=True)
        del raw, derived, labelled, encoded
    return {"sizes": sizes, "schema_columns": len(schema.columns)}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh process (see scale_child)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_child", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{job['kind']} {job['engine']} {job['k']}x failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scale_runs(folder: Path, scales: list[int], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for kind in ("train", "score"):
        for k in scales:
            for engine in ("pandas", "dask"):
                job = {
                    "kind": kind,
                    "engine": engine,
                    "k": k,
                    "workers": 2,
                    "data": str(folder / f"{'train' if kind == 'train' else 'raw'}-{k}x.parquet"),
                    "schema": str(folder / "schema.json"),
                    "model": str(folder / "model.ubj"),
                    "weather": str(folder / "weather.parquet"),
                    "output": str(folder / "out" / f"{kind}-{engine}-{k}x"),
                    "params": {**PARAMS, "nthread": 1} if engine == "dask" else PARAMS,
                    "rounds": rounds,
                    "partition_rows": ROW_GROUP,
                }
                result = measure(job)
                rows.append({"kind": kind, "engine": engine, "k": k, **result})
                print(
                    f"  {kind:<5} {engine:<6} {k:>2}x: {result['seconds']:7.1f} s, "
                    f"peak {result['peak_rss_mb']:7.0f} MB (driver {result['peak_driver_rss_mb']:.0f} MB), "
                    f"load {result['load_before']:.1f}",
                    flush=True,
                )
    return rows


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of a least-squares line (two points or more)."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def analyse(rows: list[dict[str, Any]], sizes: dict[int, dict[str, int]]) -> dict[str, Any]:
    """Growth vs 1x, the pandas path's memory ceiling, and where (if anywhere) Dask wins."""
    ram_mb = _ram_mb()
    flights = sizes[min(sizes)]
    out: dict[str, Any] = {"ram_mb": ram_mb, "kinds": {}}
    for kind, unit in (("train", "train_rows"), ("score", "raw_rows")):
        found: dict[str, Any] = {}
        for engine in ("pandas", "dask"):
            mine = [r for r in rows if r["kind"] == kind and r["engine"] == engine]
            mine.sort(key=lambda r: int(r["k"]))
            first = mine[0]
            for r in mine:
                r["rows"] = sizes[r["k"]][unit]
                r["time_x"] = r["seconds"] / first["seconds"]
                r["memory_x"] = r["peak_rss_mb"] / first["peak_rss_mb"]
            xs = [r["rows"] for r in mine]
            found[engine] = {
                "time": _fit(xs, [r["seconds"] for r in mine]),
                "memory": _fit(xs, [r["peak_rss_mb"] for r in mine]),
                "rows": mine,
            }
        a, b = found["pandas"]["memory"]
        ceiling_rows = (ram_mb - a) / b if b > 0 else float("inf")
        verdict = _where_dask_wins(found, "seconds", "time")
        verdict_memory = _where_dask_wins(found, "peak_rss_mb", "memory")
        out["kinds"][kind] = {
            "pandas_mb_per_million_rows": b * 1e6,
            "pandas_ceiling_rows": ceiling_rows,
            "pandas_ceiling_x": ceiling_rows / flights[unit],
            "dask_mb_per_million_rows": found["dask"]["memory"][1] * 1e6,
            "dask_wins_time": verdict,
            "dask_wins_memory": verdict_memory,
            "fits": {e: {"time": found[e]["time"], "memory": found[e]["memory"]} for e in found},
        }
    return out


def _where_dask_wins(found: dict[str, Any], key: str, fit: str) -> str:
    pandas_rows, dask_rows = found["pandas"]["rows"], found["dask"]["rows"]
    for p, d in zip(pandas_rows, dask_rows, strict=True):
        if d[key] < p[key]:
            return f"from {p['k']}x ({p['rows']:,} rows) measured"
    (ap, bp), (ad, bd) = found["pandas"][fit], found["dask"][fit]
    if bd < bp:
        cross = (ad - ap) / (bp - bd)
        return f"not within {pandas_rows[-1]['k']}x; the lines cross at ~{cross:,.0f} rows (extrapolated)"
    return f"not within {pandas_rows[-1]['k']}x, and its cost grows as fast or faster (no crossing)"


def _ram_mb() -> float:
    import psutil

    return float(psutil.virtual_memory().total / 2**20)


def report(payload: dict[str, Any]) -> None:
    t = payload["tuning"]
    print()
    print(table(f"1. Optuna, {t[0]['trials']} trials (the same parameters), median pruner, SQLite study", t))
    one = next(r for r in t if "1 worker" in r["how"])
    two = next(r for r in t if "2 workers" in r["how"])
    local = next(r for r in t if "in process" in r["how"])
    _info("tuning wall time, 2 Dask workers / 1 Dask worker", f"{two['seconds'] / one['seconds']:.3f}")
    _info(
        "tuning wall time, 2 Dask workers / in process on 2 threads",
        f"{two['seconds'] / local['seconds']:.3f}",
    )
    rows = [
        {
            "kind": r["kind"],
            "engine": r["engine"],
            "scale": f"{r['k']}x",
            "rows": r["rows"],
            "seconds": r["seconds"],
            "time_x": r["time_x"],
            "peak_MB": round(r["peak_rss_mb"]),
            "memory_x": r["memory_x"],
            "driver_MB": round(r["peak_driver_rss_mb"]),
            "startup_s": r["startup_s"],
            "load": round(r["load_before"], 1),
        }
        for r in payload["scale"]
    ]
    print()
    print(
        table(
            "2. Cost with rows: one configuration per fresh process; peak = RSS of the process tree "
            "(x: vs 1x of the same path)",
            rows,
        )
    )
    a = payload["analysis"]
    print()
    for kind, what in (("train", "training"), ("score", "scoring")):
        k = a["kinds"][kind]
        _info(f"{what}: pandas peak memory per million rows", f"{k['pandas_mb_per_million_rows']:,.0f} MB")
        _info(
            f"{what}: Dask peak memory (all processes) per million rows",
            f"{k['dask_mb_per_million_rows']:,.0f} MB",
        )
        ceiling = (
            f"~{k['pandas_ceiling_rows'] / 1e6:,.1f} M rows (~{k['pandas_ceiling_x']:,.0f}x the flights)"
            if np.isfinite(k["pandas_ceiling_rows"])
            else "no growth measured at these sizes"
        )
        _info(f"{what}: pandas memory ceiling at {a['ram_mb'] / 1024:.0f} GiB RAM (estimate)", ceiling)
        _info(f"{what}: Dask faster", k["dask_wins_time"])
        _info(f"{what}: Dask lighter (peak RSS)", k["dask_wins_memory"])


def main(
    quick: bool = False,
    trials: int = 20,
    sample_rows: int | None = None,
    scales: list[int] | None = None,
    home: Path | None = None,
) -> dict[str, Any]:
    scales = scales or ([1, 2] if quick else [1, 4, 10])
    tune_rows = sample_rows or (20_000 if quick else 336_776)  # all flights: trials long enough to share
    tune_trials = min(trials, 4) if quick else trials
    rounds = 20 if quick else 100
    base_rows = 30_000 if quick else None
    folder = Path(tempfile.mkdtemp(prefix="flywheel-scale-"))
    os.environ.setdefault("FLYWHEEL_HOME", str(home or folder / "home"))
    print(
        f"Scale benchmark: {os.cpu_count()} cores, {_ram_mb() / 1024:.1f} GiB RAM; "
        f"tuning {tune_trials} trials on {tune_rows:,} flights; scales {scales} of "
        f"{'all' if not base_rows else f'{base_rows:,}'} flights, {rounds} rounds; data in {folder}\n",
        flush=True,
    )
    print("tuning ...", flush=True)
    tuned = tuning(tune_trials, tune_rows, folder)
    print("\npreparing data ...", flush=True)
    prepared = prepare(folder, scales, base_rows, rounds)
    print("\nmeasuring (one process per configuration) ...", flush=True)
    measured = scale_runs(folder, scales, rounds)
    payload = {
        "quick": quick,
        "cores": os.cpu_count(),
        "params": PARAMS,
        "rounds": rounds,
        "tuning": tuned,
        "sizes": prepared["sizes"],
        "scale": measured,
    }
    payload["analysis"] = analyse(measured, {int(k): v for k, v in prepared["sizes"].items()})
    report(payload)
    print(f"\nsaved {save('scale-quick' if quick else 'scale', payload, Path.cwd() / '.flywheel')}")
    return payload
