"""Serving benchmark (issue 3): the Flywheel service against the in-process floor and `mlflow models serve`.

One run, one model, loopback only. A temporary FLYWHEEL_HOME gets a flights champion trained on a large
sample with fixed parameters; then:

1. in-process floor: ``booster.inplace_predict`` on the service's float32 code matrix, nthread=1;
2. HTTP, one uvicorn worker each, OMP_NUM_THREADS=1: the Flywheel service (profiling off) against
   ``mlflow models serve --env-manager local`` of a pyfunc wrapper (the xgboost flavor's own pyfunc is tried
   once and its error recorded): single-row latency and throughput at concurrency 1 and 16 with wrk, and
   one 1,000-row request;
3. profiling on vs off at concurrency 16, interleaved repeats;
4. hot swap under load: the champion alias moves during a concurrency-16 load; every failure is counted;
5. the batch inference flow against raw in-place predict on the same rows;
6. streaming: ``flywheel stream serve`` on a real redis-server, profiling on, at steady input rates and a
   burst: records per second and end-to-end latency percentiles (benchmarks/streaming.py).

Ratios are printed next to their targets; the JSON copy goes to .flywheel/bench/serving.json
(serving-quick.json for ``--quick``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import ratio_line, save, table
from benchmarks.serving_procs import (
    HOST,
    Client,
    LoadResult,
    Meter,
    Processes,
    Server,
    Wrk,
    free_port,
    get,
    listening,
    wait_ready,
)
from flywheel.contracts import layout
from flywheel.contracts.model_version import CHAMPION


@dataclass(frozen=True)
class Plan:
    train_rows: int
    rounds: int
    max_depth: int
    phase_s: float
    warmup_s: float
    swap_s: float
    reps: int
    batch_requests: int
    flow_rows: int | None

    @classmethod
    def make(cls, quick: bool, train_rows: int | None, phase_s: float | None, flow_rows: int | None) -> Plan:
        if quick:
            return cls(train_rows or 20_000, 40, 8, phase_s or 3, 1, 8, 1, 5, flow_rows or 30_000)
        return cls(train_rows or 100_000, 150, 8, phase_s or 10, 2, 20, 3, 30, flow_rows)


def _server_env(home: Path, **extra: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow runs `uvicorn` from PATH
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_STACK": "local",
        "FLYWHEEL_MODEL": "flight-delay",  # the flights champion the set-up trains
        "OMP_NUM_THREADS": "1",
        "UVICORN_ACCESS_LOG": "false",  # both servers run the uvicorn CLI: same logging for both
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "WHYLOGS_NO_ANALYTICS": "True",
    }
    env.update(extra)
    return env


def _start_flywheel(procs: Processes, name: str, home: Path, **extra: str) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return procs.start(name, command, _server_env(home, **extra), port)


def _start_mlflow(procs: Processes, name: str, home: Path, model_path: str, cpu: int | None = None) -> Server:
    """``mlflow models serve`` of a local model; with ``cpu``, pinned to that one CPU (taskset)."""
    port = free_port()
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    command = [
        *pin,
        mlflow_cli,
        "models",
        "serve",
        "-m",
        model_path,
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
        "-w",
        "1",
    ]
    return procs.start(name, command, _server_env(home), port)


def _metric(server: Server, name: str) -> float | None:
    """A metric's value, summed over its labelled series (e.g. dropped rows of every reason)."""
    status, body = get(server.url + "/metrics")
    if status != 200:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    return sum(values) if values else None


def _drain_profiler(server: Server, limit_s: float) -> float:
    """Wait until the service's profiling queue is empty; seconds waited (capped at ``limit_s``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        depth = _metric(server, "flywheel_profile_queue_depth")
        if depth is None or depth <= 0:
            break
        time.sleep(0.25)
    return time.perf_counter() - started


def _batch_latency(server: Server, path: str, body: bytes, n: int) -> dict[str, Any]:
    """``n`` sequential requests on one persistent connection (after two warm-ups): median and spread."""
    times = []
    status = 0
    data = b""
    with Client(server.port) as client:
        for i in range(n + 2):
            status, data, seconds = client.post(path, body)
            if status != 200:
                raise RuntimeError(f"{server.name} {path} answered {status}: {data[:500]!r}")
            if i >= 2:
                times.append(seconds)
    return {
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "requests": n,
        "last_body": data,
    }


def _load_row(service: str, case: str, r: LoadResult) -> dict[str, Any]:
    return {
        "service": service,
        "case": case,
        "conns": r.connections,
        "seconds": r.seconds,
        "requests": r.requests,
        "req_per_s": r.rps,
        "p50_ms": r.p50_ms,
        "p90_ms": r.p90_ms,
        "p99_ms": r.p99_ms,
        "max_ms": r.max_ms,
        "failed": r.failed,
        **_cpu_columns(r),
    }


def _cpu_columns(r: LoadResult) -> dict[str, Any]:
    """Where the CPU went during a phase: the server's busiest process and its helpers per request, the
    load generator, and the rest of the machine (other users) in cores."""
    per = 1000 / r.requests if r.requests else 0.0
    return {
        "srv_cpu_ms/req": r.server_top_cpu_s * per,
        "helper_cpu_ms/req": (r.server_cpu_s - r.server_top_cpu_s) * per,
        "wrk_cores": r.wrk_cpu_s / r.seconds if r.seconds else 0.0,
        "other_cores": r.other_cpu_s / r.seconds if r.seconds else 0.0,
    }


def _log_findings(server: Server) -> list[str]:
    """What went wrong in a server's log: each exception (the last line of its traceback) with its count,
    and other ERROR lines, 5xx access lines and failed model loads."""
    try:
        lines = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    counts: dict[str, int] = {}
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith(" ") or not line.strip():
                continue
            in_traceback = False
            key = f"exception: {line.strip()}"
        elif re.search(r"ERROR|\" 5\d\d |hot swap .* failed", line) and (
            "Exception in ASGI application" not in line
        ):
            key = line.strip()
        else:
            continue
        counts[key[:300]] = counts.get(key[:300], 0) + 1
    return [f"{n} x {text}" for text, n in counts.items()][:20]


def _parquet_rows(root: Path, pattern: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in root.rglob(pattern))


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("xgboost", "mlflow", "fastapi", "uvicorn", "uvloop", "httptools", "pydantic")
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def wait_quiet(limit_s: float, cores: float = 0.3) -> float:
    """Wait (up to ``limit_s``) until processes outside this one use under ``cores`` CPUs over 2 s;
    returns what they used in the last window. The benchmark goes on either way, and says so."""
    from benchmarks.serving_procs import machine_busy, self_cpu

    deadline = time.monotonic() + limit_s
    while True:
        m0, s0, t0 = machine_busy(), self_cpu(), time.perf_counter()
        time.sleep(2)
        other = ((machine_busy() - m0) - (self_cpu() - s0)) / (time.perf_counter() - t0)
        if other < cores or time.monotonic() >= deadline:
            return other


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def xgboost_flavor_attempt(
    procs: Processes, home: Path, model_uri: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Serve the registered model's own (xgboost flavor) pyfunc and send it one record, once."""
    import json

    import mlflow

    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(home / "served" / "xgboost-flavor"))
    server = _start_mlflow(procs, "mlflow-xgboost-flavor", home, local)
    try:
        wait_ready(server, "/ping", 180)
        with Client(server.port) as client:
            status, data, _ = client.post(
                "/invocations", json.dumps({"dataframe_records": [record]}).encode()
            )
    finally:
        procs.stop(server)
    text = data.decode(errors="replace")
    try:
        answer = json.loads(text)
        trace = [line for line in str(answer.get("stack_trace", "")).splitlines() if line.strip()]
        message = str(answer.get("message", text)) + (f" | cause: {trace[-1].strip()}" if trace else "")
    except ValueError:
        message = text
    return {"status": status, "error": message.strip()[:1500], "model_uri": model_uri}


def main(
    quick: bool = False,
    train_rows: int | None = None,
    phase_s: float | None = None,
    flow_rows: int | None = None,
    keep_home: bool = False,
) -> dict[str, Any]:
    import json

    plan = Plan.make(quick, train_rows, phase_s, flow_rows)
    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["FLYWHEEL_STACK"] = "local"
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no per-artifact INFO lines in the report
    from flows.runtime import prepare_prefect

    prepare_prefect("local")  # Prefect reads its settings at import: set them before anything imports it
    wrk = Wrk(home)
    cores = os.cpu_count()
    print(
        f"Serving benchmark{' (quick)' if quick else ''}: flights, {plan.train_rows:,} training rows, "
        f"{plan.rounds} rounds, max_depth {plan.max_depth}; phases {plan.phase_s:g} s, "
        f"swap {plan.swap_s:g} s; home {home}\n{cores} cores, load average {_loadavg()}; "
        f"{_versions()}\nload generator {' '.join(wrk.version)}, 1 thread, on the same cores as the servers; "
        "other_cores = CPU used meanwhile by processes outside this benchmark\n",
        flush=True,
    )
    ok = False
    payload: dict[str, Any] = {"plan": asdict(plan), "cores": cores, "load_average_start": _loadavg()}
    try:
        with Processes(home / "logs") as procs:
            payload |= _run(plan, home, procs, wrk, quick)
            ports = list(procs.ports)
        left = listening(ports)
        payload["ports_used"] = ports
        payload["ports_still_listening"] = left
        print(f"\nservers stopped; ports {ports} listening after the run: {left or 'none'}")
        if left:
            raise RuntimeError(f"ports still listening after the run: {left}")
        payload |= _batch_flow(plan, payload["versions"]["champion"], quick)
        payload["load_average_end"] = _loadavg()
        _report(payload)
        ok = True
    finally:
        if ok and not keep_home:
            shutil.rmtree(home, ignore_errors=True)
        elif not ok:
            print(f"\nkept {home} (server logs under logs/)", file=sys.stderr)
    name = "serving-quick" if quick else "serving"  # a check run never overwrites the full result
    saved = save(name, json.loads(json.dumps(payload, default=_jsonable)), Path.cwd() / ".flywheel")
    print(f"\nsaved {saved}")
    return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")[:200]
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _run(plan: Plan, home: Path, procs: Processes, wrk: Wrk, quick: bool) -> dict[str, Any]:
    import json

    import numpy as np
    from mlflow import MlflowClient

    from benchmarks import serving_setup as setup
    from benchmarks.pyfunc_wrapper import log_wrapper
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack
    from steps.model import register

    out: dict[str, Any] = {}
    configure_mlflow(load_stack("local"))
    print("training the champion (v1) and the swap candidate (v2) ...", flush=True)
    first = setup.train_model(plan.train_rows, plan.rounds, plan.max_depth, seed=42)
    v1 = setup.register_model(first, promote=True, reason="serving benchmark champion")
    second = setup.train_model(plan.train_rows, plan.rounds, plan.max_depth, seed=7)
    name = first.spec.model_name
    client = MlflowClient()
    champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    if champion != v1.version:
        raise RuntimeError(f"v{v1.version} was not promoted (champion is v{champion})")
    auc = client.get_run(v1.run_id).data.metrics.get("test.roc_auc", float("nan"))
    print(
        f"  v{v1.version}: {len(first.dataset.frame):,} labelled rows, trained in {first.seconds:.1f} s, "
        f"registered in {v1.seconds:.1f} s, test ROC AUC {auc:.4f}; "
        f"{first.booster.num_boosted_rounds()} trees, {len(first.dataset.schema.columns)} features",
        flush=True,
    )
    out["versions"] = {"champion": v1.version}
    out["model"] = {"train_rows": first.sample_rows, "test_auc": auc, "features": first.dataset.schema.names}

    test_x = first.parts.test.X
    records = setup.json_records(test_x, 10_000)
    single = setup.complete_record(test_x)
    batch = records[:1000]

    # 1. in-process floor
    print("in-process floor ...", flush=True)
    floor = setup.in_process(name, v1.version, records, quick)
    out["floor"] = floor.rows
    out["service_path_in_process"] = floor.service_path

    # the pyfunc wrapper baseline, and the xgboost flavor tried once
    folder = home / "served"
    booster_path, schema_path = setup.save_booster_and_schema(first, folder / "wrapper-src")
    wrapper_uri = log_wrapper(booster_path, schema_path, register.signature(first.dataset.schema), v1.run_id)
    import mlflow

    wrapper_path = mlflow.artifacts.download_artifacts(wrapper_uri, dst_path=str(folder / "wrapper"))
    print("mlflow models serve of the xgboost flavor, one request ...", flush=True)
    flavor = xgboost_flavor_attempt(procs, home, f"models:/{name}/{v1.version}", single)
    out["xgboost_flavor"] = flavor
    print(f"  HTTP {flavor['status']}: {flavor['error'][:300]}", flush=True)

    bodies = {
        "flywheel_1": wrk.body_file("flywheel-1", single),
        "flywheel_1000": wrk.body_file("flywheel-1000", {"records": batch}),
        "mlflow_1": wrk.body_file("mlflow-1", {"dataframe_records": [single]}),
        "mlflow_1000": wrk.body_file("mlflow-1000", {"dataframe_records": batch}),
    }

    # 2. and 3. Flywheel with profiling off; then on, its repeats interleaved with off's; then MLflow
    if not quick:
        other = wait_quiet(120)
        print(f"other processes use {other:.2f} cores before the HTTP phases", flush=True)
        out["other_cores_before_http"] = other
    print("starting the Flywheel service (profiling off) ...", flush=True)
    off = _start_flywheel(procs, "flywheel-off", home, FLYWHEEL_PROFILING="off")
    out["startup_s"] = {"flywheel-off": wait_ready(off, "/ready", 180)}
    loads: list[dict[str, Any]] = []
    foreign: list[dict[str, Any]] = []

    def note(phase: str, r: LoadResult) -> None:
        foreign.append(
            {
                "phase": phase,
                "other_cores": r.other_cpu_s / r.seconds if r.seconds else 0.0,
                "top": r.other_top,
            }
        )

    results: dict[str, Any] = {}

    def measure(server: Server, service: str, path: str, body1: Path) -> None:
        wrk.run(server.url + path, body1, 16, plan.warmup_s)  # warm-up, not counted
        for conns in (1, 16):
            r = wrk.run(server.url + path, body1, conns, plan.phase_s, group=server.process.pid)
            results[f"{service}_c{conns}"] = r
            note(f"{service} c={conns}", r)
            loads.append(_load_row(service, "1 row", r))
            print(
                f"  {service} c={conns}: {r.rps:,.0f} req/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms",
                flush=True,
            )

    print("Flywheel (profiling off) ...", flush=True)
    measure(off, "flywheel", "/predict", bodies["flywheel_1"])
    fw_batch = _batch_latency(
        off, "/predict/batch", bodies["flywheel_1000"].read_bytes(), plan.batch_requests
    )
    fw_pred = np.array([p["prediction"] for p in json.loads(fw_batch.pop("last_body"))["predictions"]])
    fw_batch["max_abs_diff_vs_in_process"] = float(np.max(np.abs(fw_pred - floor.predictions_1000)))

    print("profiling on vs off, concurrency 16, interleaved ...", flush=True)
    on = _start_flywheel(procs, "flywheel-on", home, FLYWHEEL_PROFILING="on")
    out["startup_s"]["flywheel-on"] = wait_ready(on, "/ready", 180)
    # the profiling process starts (imports pandas and whylogs) after the app: let it settle, not count it
    wrk.run(on.url + "/predict", bodies["flywheel_1"], 16, plan.warmup_s)
    _drain_profiler(on, 60)
    time.sleep(1)
    prof_rows = []
    for rep in range(plan.reps):
        for label, server in (("off", off), ("on", on)):
            r = wrk.run(
                server.url + "/predict", bodies["flywheel_1"], 16, plan.phase_s, group=server.process.pid
            )
            drain = 0.0
            if label == "on":
                drain = _drain_profiler(server, 60)
                time.sleep(1)  # the last micro-batch is profiled and written after the queue empties
            note(f"profiling {label} rep {rep + 1}", r)
            prof_rows.append(
                {
                    "rep": rep + 1,
                    "profiling": label,
                    "requests": r.requests,
                    "req_per_s": r.rps,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "max_ms": r.max_ms,
                    "failed": r.failed,
                    "queue_drain_s": drain,
                    **_cpu_columns(r),
                }
            )
            print(f"  rep {rep + 1} profiling {label}: {r.rps:,.0f} req/s p99 {r.p99_ms:.2f} ms", flush=True)
    dropped = _metric(on, "flywheel_profile_dropped_rows_total")
    profiled = _metric(on, "flywheel_predicted_rows_total")
    procs.stop(on)  # flushes its open profile windows on shutdown
    windows = sorted(
        str(p.relative_to(home))
        for p in (home / "artifacts").rglob(layout.serving_profiles("*", "*") + "/*.bin")
    )
    out["profiling"] = {
        "rows": prof_rows,
        "dropped_rows": dropped,
        "predicted_rows": profiled,
        "logged_prediction_rows": _parquet_rows(
            home / "artifacts", layout.prediction_logs("*", "*") + "/*/*.parquet"
        ),
        "profile_files_written": len(windows),
        "profile_files": windows[:5],
    }
    out["findings_logs"] = {"flywheel-on": _log_findings(on)}
    procs.stop(off)
    out["findings_logs"]["flywheel-off"] = _log_findings(off)

    print("mlflow models serve (pyfunc wrapper) ...", flush=True)
    ml = _start_mlflow(procs, "mlflow-wrapper", home, wrapper_path)
    out["startup_s"]["mlflow-wrapper"] = wait_ready(ml, "/ping", 180)
    measure(ml, "mlflow", "/invocations", bodies["mlflow_1"])
    ml_batch = _batch_latency(
        ml, "/invocations", bodies["mlflow_1000"].read_bytes(), max(3, plan.batch_requests // 2)
    )
    ml_pred = np.array(json.loads(ml_batch.pop("last_body"))["predictions"], dtype=float)
    ml_batch["max_abs_diff_vs_in_process"] = float(np.max(np.abs(ml_pred - floor.predictions_1000)))
    procs.stop(ml)
    out["findings_logs"]["mlflow-wrapper"] = _log_findings(ml)
    if shutil.which("taskset"):
        # its worker threads contend for the GIL across cores: on one CPU it serves more, not less
        print("mlflow models serve pinned to one CPU (its best case) ...", flush=True)
        pinned = _start_mlflow(procs, "mlflow-wrapper-1cpu", home, wrapper_path, cpu=0)
        out["startup_s"]["mlflow-wrapper-1cpu"] = wait_ready(pinned, "/ping", 180)
        wrk.run(pinned.url + "/invocations", bodies["mlflow_1"], 16, plan.warmup_s)
        r = wrk.run(
            pinned.url + "/invocations", bodies["mlflow_1"], 16, plan.phase_s, group=pinned.process.pid
        )
        results["mlflow_1cpu_c16"] = r
        note("mlflow (1 CPU) c=16", r)
        loads.append(_load_row("mlflow (1 CPU)", "1 row", r))
        print(f"  mlflow (1 CPU) c=16: {r.rps:,.0f} req/s p50 {r.p50_ms:.2f} ms", flush=True)
        procs.stop(pinned)
        out["findings_logs"]["mlflow-wrapper-1cpu"] = _log_findings(pinned)
    out["batch_1000"] = {"flywheel": fw_batch, "mlflow": ml_batch}
    out["load"] = loads
    out["foreign_load"] = foreign
    out["load_results"] = {k: asdict(v) for k, v in results.items()}

    # 4. hot swap under load
    out["swap"] = _swap(plan, home, procs, wrk, bodies["flywheel_1"], second, name, v1.version)
    client.set_registered_model_alias(name, CHAMPION, v1.version)  # the batch flow scores the same model

    # 5b. shadow on vs off: v2 scores a copy of every request beside the champion
    out["shadow"] = _shadow(
        plan, home, procs, wrk, bodies["flywheel_1"], name, v1.version, out["swap"]["new_version"]
    )

    # 6. streaming, the same champion
    from benchmarks import streaming

    print("streaming: flywheel stream serve on redis-server (profiling on) ...", flush=True)
    out["streaming"] = streaming.measure(home, procs, _server_env(home), name, records, quick)
    return out


def _swap(
    plan: Plan, home: Path, procs: Processes, wrk: Wrk, body: Path, second: Any, name: str, v1: str
) -> dict[str, Any]:
    import json

    from mlflow import MlflowClient

    from benchmarks import serving_setup as setup

    print(f"hot swap under load ({plan.swap_s:g} s at concurrency 16, watch interval 1 s) ...", flush=True)
    server = _start_flywheel(
        procs, "flywheel-swap", home, FLYWHEEL_WATCH_INTERVAL_S="1", FLYWHEEL_PROFILING="on"
    )
    wait_ready(server, "/ready", 180)
    wrk.run(server.url + "/predict", body, 16, plan.warmup_s)
    load = wrk.start(server.url + "/predict", body, 16, plan.swap_s, int(plan.swap_s * 20_000))
    started = time.perf_counter()
    events: dict[str, float] = {}
    ready_versions: list[str] = []
    try:
        time.sleep(plan.swap_s * 0.2)
        events["register_start_s"] = time.perf_counter() - started
        v2 = setup.register_model(second, promote=False, reason="serving benchmark swap").version
        events["registered_s"] = time.perf_counter() - started
        MlflowClient().set_registered_model_alias(name, CHAMPION, v2)
        events["alias_moved_s"] = time.perf_counter() - started
        deadline = started + plan.swap_s + 5
        while time.perf_counter() < deadline:
            try:
                status, data = get(server.url + "/ready", timeout=5)
            except OSError as exc:
                ready_versions.append(f"error {exc}")
                time.sleep(0.1)
                continue
            version = str(json.loads(data).get("model_version")) if status == 200 else f"HTTP {status}"
            if not ready_versions or ready_versions[-1] != version:
                ready_versions.append(version)
            if version == v2:
                events["ready_new_s"] = time.perf_counter() - started
                break
            time.sleep(0.1)
    finally:
        result = wrk.finish(load, plan.swap_s, int(plan.swap_s * 20_000))
        result.connections = 16
    loads_ok = MlflowClient().get_model_version_by_alias(name, CHAMPION).version
    procs.stop(server)
    swapped = events.get("ready_new_s")
    row = {
        "requests": result.requests,
        "req_per_s": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "timeouts": result.timeouts,
        "failed": result.failed,
        "statuses": result.statuses,
        "versions_served": result.versions,
        "ready_versions_seen": ready_versions,
        "new_version": v2,
        "old_version": v1,
        "alias_now": str(loads_ok),
        "alias_to_ready_s": (swapped - events["alias_moved_s"]) if swapped is not None else None,
        "events_s": events,
        "swapped": swapped is not None,
        "log_findings": _log_findings(server),
    }
    print(
        f"  {result.requests:,} requests, failed {result.failed}, versions served {result.versions}, "
        f"/ready went {' -> '.join(ready_versions)}",
        flush=True,
    )
    return row


def _shadow(
    plan: Plan, home: Path, procs: Processes, wrk: Wrk, body: Path, name: str, v1: str, v2: str
) -> dict[str, Any]:
    """The champion's answers with a shadow candidate scoring a copy of each request, and without, on one
    server (profiling on, as by default), interleaved repeats at concurrency 16."""
    from flywheel.contracts.rollout import RolloutState
    from stacks.components import model_versions

    print("shadow on vs off, concurrency 16, interleaved ...", flush=True)
    server = _start_flywheel(
        procs, "flywheel-shadow", home, FLYWHEEL_WATCH_INTERVAL_S="0.5", FLYWHEEL_PROFILING="on"
    )
    wait_ready(server, "/ready", 180)
    wrk.run(server.url + "/predict", body, 16, plan.warmup_s)
    state = RolloutState(v2, v1, "shadow", 0.0, 1, 2, time.time())
    rows = []
    try:
        for rep in range(plan.reps):
            for label in ("off", "on"):
                model_versions.set_rollout(name, state if label == "on" else None)
                time.sleep(2.0)  # four watch ticks: every replica follows
                shadowed = _metric(server, "flywheel_version_scored_rows_total") or 0.0
                r = wrk.run(server.url + "/predict", body, 16, plan.phase_s, group=server.process.pid)
                time.sleep(0.5)  # the shadow queue drains
                scored = (_metric(server, "flywheel_version_scored_rows_total") or 0.0) - shadowed
                rows.append(
                    {
                        "rep": rep + 1,
                        "shadow": label,
                        "requests": r.requests,
                        "req_per_s": r.rps,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "failed": r.failed,
                        "rows_scored_all_versions": scored,
                        **_cpu_columns(r),
                    }
                )
                print(f"  rep {rep + 1} shadow {label}: {r.rps:,.0f} req/s p99 {r.p99_ms:.2f} ms", flush=True)
        dropped = _metric(server, "flywheel_shadow_dropped_total")
    finally:
        model_versions.set_rollout(name, None)
    procs.stop(server)
    return {"rows": rows, "dropped": dropped, "log_findings": _log_findings(server)}


def _batch_flow(plan: Plan, version: str, quick: bool) -> dict[str, Any]:
    from benchmarks import serving_setup as setup
    from flows.runtime import prepare_prefect

    prepare_prefect("local")
    rows_label = "all" if plan.flow_rows is None else f"{plan.flow_rows:,}"
    print(f"\nbatch inference flow ({rows_label} flights, Prefect ephemeral API) ...", flush=True)
    from flows.inference import inference

    # the flow is run three times (once for --quick) and the run with the median score time reported: one
    # run against a median of raw repeats let a single slow run decide the ratio
    # the ratio's runs leave the prediction table out (the local stack upserts every scored row into
    # SQLite since precomputed predictions came): one more run with it shows what the table costs
    plain = _stack_without_prediction_store()
    runs: list[tuple[dict[str, Any], float, Meter]] = []
    for _ in range(1 if quick else 3):
        started = time.perf_counter()
        with Meter() as flow_meter:
            result = inference(stack=str(plain), problem="flights", sample_rows=plan.flow_rows)
        runs.append((result, time.perf_counter() - started, flow_meter))
    stored = inference(stack="local", problem="flights", sample_rows=plan.flow_rows)
    runs_score_s = [r[0]["score_seconds"] for r in runs]
    summary, _, flow_meter = sorted(runs, key=lambda r: r[0]["score_seconds"])[len(runs) // 2]
    call_wall = runs[0][1]  # the first call: the one that boots Prefect's temporary server
    if str(summary["version"]) != version:
        raise RuntimeError(f"the flow scored v{summary['version']}, expected v{version}")
    model, _, encoded = setup.flow_input(summary["model_name"], str(summary["version"]), plan.flow_rows)
    if len(encoded) != summary["rows"]:
        raise RuntimeError(f"rebuilt {len(encoded)} rows, the flow scored {summary['rows']}")
    with Meter() as raw_meter:
        raw = setup.raw_throughput(model, encoded, 100_000, 3 if quick else 5)
        parts = setup.score_direct(model, encoded, 100_000)
    f32 = setup.code_matrix(encoded)
    raw_f32 = []
    for _ in range(3):
        t = time.perf_counter()
        model.booster.inplace_predict(f32, validate_features=False)
        raw_f32.append(time.perf_counter() - t)
    rows = int(summary["rows"])
    return {
        "batch_flow": {
            "rows": rows,
            "version": summary["version"],
            "score_seconds": summary["score_seconds"],
            "score_seconds_runs": runs_score_s,
            "score_seconds_with_prediction_table": stored["score_seconds"],
            "prediction_table_rows": (stored.get("prediction_store") or {}).get("stored"),
            "predict_seconds": summary["predict_seconds"],
            "flow_s": summary["flow_s"],
            "call_wall_s": call_wall,
            "timings": summary["timings"],
            "raw_seconds": raw["seconds"],
            "raw_rows_per_s": raw["rows_per_s"],
            "raw_float32_rows_per_s": rows / statistics.median(raw_f32),
            "score_parts_s": parts,
            "booster_nthread": _nthread(model.booster),
            "other_cores_during_flow": flow_meter.other_cores,
            "other_top_during_flow": flow_meter.top,
            "other_cores_during_raw": raw_meter.other_cores,
            "other_top_during_raw": raw_meter.top,
        }
    }


def _stack_without_prediction_store() -> Path:
    """The local stack less its prediction store, as a file in the benchmark's home."""
    import yaml

    from stacks.loader import load_stack

    doc = load_stack("local").to_dict()
    doc["components"].pop("prediction_store", None)
    path = Path(os.environ["FLYWHEEL_HOME"]) / "local-no-prediction-store.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _nthread(booster: Any) -> str:
    """The booster's thread setting as the flow uses it (0: all cores)."""
    import json

    return str(json.loads(booster.save_config())["learner"]["generic_param"].get("nthread", "?"))


def _report(p: dict[str, Any]) -> None:
    print()
    print(
        table(
            "1. In-process floor: booster.inplace_predict, float32 code matrix, nthread=1 (median; "
            "service_call_ms: the service's direct call of the same C function)",
            p["floor"],
        )
    )
    print()
    print(
        table(
            "   The service's request path in process, no HTTP (median per stage)",
            p["service_path_in_process"],
        )
    )
    print()
    print(
        "2a. MLflow xgboost flavor pyfunc served from JSON: "
        f"HTTP {p['xgboost_flavor']['status']}: {p['xgboost_flavor']['error'][:600]}"
    )
    print("   (baseline below: mlflow models serve of a pyfunc wrapper that makes pandas categoricals)")
    print()
    print(table("2b. HTTP, one worker each, loopback, wrk (single-row requests)", p["load"]))
    b = p["batch_1000"]
    batch_rows = [
        {
            "service": s,
            "median_ms": b[s]["median_ms"],
            "min_ms": b[s]["min_ms"],
            "max_ms": b[s]["max_ms"],
            "requests": b[s]["requests"],
            "max_abs_diff_vs_in_process": b[s]["max_abs_diff_vs_in_process"],
        }
        for s in ("flywheel", "mlflow")
    ]
    print()
    print(table("   One 1,000-row request (sequential, one connection)", batch_rows))
    print()
    print(table("3. Profiling off vs on, concurrency 16 (Flywheel)", p["profiling"]["rows"]))
    pr = p["profiling"]
    print(
        f"   profiling on: {pr['predicted_rows']:.0f} rows predicted, "
        f"{pr['logged_prediction_rows']} logged by the profiling process, "
        f"{pr['dropped_rows']:.0f} dropped; {pr['profile_files_written']} window profile(s) written "
        "at shutdown (SIGTERM to the server process)"
    )
    s = p["swap"]
    print()
    swap_view = {
        k: s[k]
        for k in (
            "requests",
            "req_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "non_2xx",
            "socket_errors",
            "timeouts",
            "alias_to_ready_s",
        )
    }
    print(table("4. Hot swap under load (concurrency 16, profiling on as by default)", [swap_view]))
    print()
    print(
        table(
            "4b. Shadow on vs off (a second version scores a copy of every request off the request path; "
            "rows_scored counts both versions)",
            p["shadow"]["rows"],
        )
    )
    print(f"   shadow copies dropped (queue full or other features): {p['shadow']['dropped'] or 0:.0f}")
    print(
        f"   v{s['old_version']} -> v{s['new_version']}: "
        f"/ready went {' -> '.join(s['ready_versions_seen'])}; "
        f"responses by version {s['versions_served']}; statuses {s['statuses']}"
    )
    f = p["batch_flow"]
    flow_rows = [
        {
            "what": "raw inplace_predict (flow's DataFrame chunks, same booster)",
            "seconds": f["raw_seconds"],
            "rows_per_s": f["raw_rows_per_s"],
        },
        {
            "what": "flow: predict only (inside score)",
            "seconds": f["predict_seconds"],
            "rows_per_s": f["rows"] / f["predict_seconds"],
        },
        {
            "what": "flow: score (predict + write + profile)",
            "seconds": f["score_seconds"],
            "rows_per_s": f["rows"] / f["score_seconds"],
        },
        {
            "what": "flow: score, the stack's prediction table too",
            "seconds": f["score_seconds_with_prediction_table"],
            "rows_per_s": f["rows"] / f["score_seconds_with_prediction_table"],
        },
        {"what": "flow: end to end (flow_s)", "seconds": f["flow_s"], "rows_per_s": f["rows"] / f["flow_s"]},
        {
            "what": "flow call incl. Prefect start-up",
            "seconds": f["call_wall_s"],
            "rows_per_s": f["rows"] / f["call_wall_s"],
        },
    ]
    print()
    print(
        table(
            f"5. Batch inference flow, {f['rows']:,} rows, the median of "
            f"{len(f['score_seconds_runs'])} run(s) by score time "
            f"(step timings {_fmt_timings(f['timings'])})",
            flow_rows,
        )
    )
    print(
        "   (raw inplace_predict on a float32 code matrix of the same rows: "
        f"{f['raw_float32_rows_per_s']:,.0f} rows/s)"
    )
    print(
        f"   other processes used {f['other_cores_during_flow']:.2f} cores during the flow, "
        f"{f['other_cores_during_raw']:.2f} during the raw and direct measurements"
    )
    print(
        "   the score step called directly on the same rows (no Prefect): "
        + ", ".join(f"{k} {v:.2f} s ({f['rows'] / v:,.0f} rows/s)" for k, v in f["score_parts_s"].items())
    )

    st = p["streaming"]
    print()
    print(
        table(
            "6. Streaming: flywheel stream serve, one consumer (reads of up to 100 records), profiling on; "
            "latency = prediction entry id - request entry id (Redis server ms)",
            st["rows"],
        )
    )
    print(f"   consumer start-up {st['startup_s']:.1f} s; {st['consumer_summary']}")

    # ratios, all from this run
    r = p["load_results"]
    fw1, ml16 = r["flywheel_c1"], r["mlflow_c16"]
    prof = p["profiling"]["rows"]
    # Flywheel (profiling off) at c=16: the median of every such phase (the first one and the repeats)
    fw16_rps = statistics.median(
        [r["flywheel_c16"]["rps"], *(x["req_per_s"] for x in prof if x["profiling"] == "off")]
    )
    rps_off = statistics.median(x["req_per_s"] for x in prof if x["profiling"] == "off")
    rps_on = statistics.median(x["req_per_s"] for x in prof if x["profiling"] == "on")
    p99_off = statistics.median(x["p99_ms"] for x in prof if x["profiling"] == "off")
    p99_on = statistics.median(x["p99_ms"] for x in prof if x["profiling"] == "on")
    # the baseline at its best: unpinned or pinned to one CPU, whichever answered more (a noisy machine
    # must not flatter the ratio)
    ml16_best = max(ml16["rps"], r.get("mlflow_1cpu_c16", {}).get("rps", 0.0))
    floor_1000_ms = next(x["ms_per_call"] for x in p["floor"] if x["rows"] == 1000)
    fw_1000 = p["batch_1000"]["flywheel"]["median_ms"]
    flow_ratio = (f["rows"] / f["score_seconds"]) / f["raw_rows_per_s"]
    e2e_ratio = (f["rows"] / f["flow_s"]) / f["raw_rows_per_s"]
    shadow_rows = p["shadow"]["rows"]
    shadow_rps = statistics.median(
        x["req_per_s"] for x in shadow_rows if x["shadow"] == "on"
    ) / statistics.median(x["req_per_s"] for x in shadow_rows if x["shadow"] == "off")
    shadow_p99 = statistics.median(
        x["p99_ms"] for x in shadow_rows if x["shadow"] == "on"
    ) / statistics.median(x["p99_ms"] for x in shadow_rows if x["shadow"] == "off")
    lines = [
        ("Flywheel single-row p50 at concurrency 1 (ms)", fw1["p50_ms"], "<= 1.5 ms", fw1["p50_ms"] <= 1.5),
        ("Flywheel requests/s at concurrency 16, one worker (median)", fw16_rps, ">= 1000", fw16_rps >= 1000),
        (
            "Flywheel / mlflow models serve (its better run), requests/s at c=16",
            fw16_rps / ml16_best,
            ">= 20x",
            fw16_rps / ml16_best >= 20,
        ),
        (
            "1,000-row request / in-process predict of 1,000 rows",
            fw_1000 / floor_1000_ms,
            "<= 2x",
            fw_1000 / floor_1000_ms <= 2,
        ),
        (
            "profiling on / off: requests/s at c=16 (median)",
            rps_on / rps_off,
            ">= 0.95",
            rps_on / rps_off >= 0.95,
        ),
        (
            "profiling on / off: p99 kept (p99 off / p99 on, median)",
            p99_off / p99_on,
            ">= 0.95",
            p99_off / p99_on >= 0.95,
        ),
        ("failed requests across the hot swap", float(s["failed"]), "0", s["failed"] == 0 and s["swapped"]),
        ("shadow on / off: requests/s at c=16 (median)", shadow_rps, ">= 0.9", shadow_rps >= 0.9),
        ("shadow on / off: p99 at c=16 (median)", shadow_p99, "<= 1.2", shadow_p99 <= 1.2),
        ("batch flow score rows/s / raw inplace_predict rows/s", flow_ratio, ">= 0.8", flow_ratio >= 0.8),
        ("batch flow end-to-end rows/s (flow_s) / raw rows/s", e2e_ratio, ">= 0.8", e2e_ratio >= 0.8),
    ]
    print("\nRatios (this run) against the issue's targets:")
    for name, value, target, ok in lines:
        print(ratio_line(name, value, target, ok))
    p["ratios"] = [{"name": n, "value": v, "target": t, "met": ok} for n, v, t, ok in lines]
    extra = {
        "mlflow single-row p50 at c=1 (ms)": r["mlflow_c1"]["p50_ms"],
        "Flywheel / mlflow unpinned, req/s at c=16": fw16_rps / ml16["rps"],
        **(
            {"Flywheel / mlflow pinned to one CPU, req/s at c=16": fw16_rps / r["mlflow_1cpu_c16"]["rps"]}
            if "mlflow_1cpu_c16" in r
            else {}
        ),
        "Flywheel / mlflow requests/s at c=1": fw1["rps"] / r["mlflow_c1"]["rps"],
        "Flywheel 1,000-row request / mlflow 1,000-row request": fw_1000
        / p["batch_1000"]["mlflow"]["median_ms"],
        "HTTP single-row p50 at c=1 / in-process 1-row predict": fw1["p50_ms"]
        / next(x["ms_per_call"] for x in p["floor"] if x["rows"] == 1),
        "stream burst records/s / HTTP single-row req/s at c=16 (profiling off)": st["rows"][-1][
            "records_per_s"
        ]
        / fw16_rps,
    }
    print("\nContext:")
    for k, v in extra.items():
        print(f"  {k:<64} {v:10.3f}")
    for phase, x in p["load_results"].items():
        # Little's law: sequential latencies cannot add up to more than connections x wall time
        implied = x["requests"] * x["mean_ms"] / 1000 / x["seconds"] if x["seconds"] else 0.0
        if implied > 1.1 * x["connections"]:
            print(
                f"\nnote: {phase}: wrk's latencies add up to {implied:.2f} connections busy on average with "
                f"{x['connections']} open: its latency tail for that phase is not trustworthy (mean "
                f"{x['mean_ms']:.2f} ms, p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms)"
            )
    busy = [x for x in p["foreign_load"] if x["other_cores"] > 0.2]
    if busy:
        print("\nOther processes were busy during these phases (cores used; the busiest one):")
        for x in busy:
            print(f"  {x['phase']:<24} {x['other_cores']:.2f}   {x['top'][:110]}")
    else:
        print("\nNo other process used more than 0.2 cores during any measured phase.")
    findings = {k: v for k, v in p["findings_logs"].items() if v}
    if s["log_findings"]:
        findings["flywheel-swap"] = s["log_findings"]
    if findings:
        print("\nError lines in server logs:")
        for server, found in findings.items():
            for line in found:
                print(f"  [{server}] {line[:300]}")
        if any("ClientDisconnect" in line for found in findings.values() for line in found):
            print(
                "  (ClientDisconnect: wrk closes its connections when a phase ends, with requests still in "
                "flight; not a failed request)"
            )
    print(f"\nload average: start {p['load_average_start']}, end {p['load_average_end']}")


def _fmt_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
