"""Hardening benchmark: the real service attacked family by family, and its serving figures before and after.

One command, loopback only (``make bench ARGS="hardening"``). A temporary FLYWHEEL_HOME gets a small flights
champion (``benchmarks/serving_setup.py``) and a stack file whose ``server:`` block has short timeouts; the
service is started as the local deployer starts it (its own command line and environment: uvicorn[standard],
Flywheel's protocol class, the stack's limits, one worker), with profiling on. Then, each family bounded in
requests and time, with the service's RSS (the uvicorn process and its children) before and after:

1. bad input: a few hundred hand-made bad requests to every POST endpoint: 0 5xx, 0 hangs expected;
2. a 1 GB chunked body without Content-Length: 413, RSS growth under 50 MB;
3. amplification: 8 clients sending 1,000 empty records beside one normal client (and, for context, 8 clients
   sending valid rows): the normal client's throughput with and without them;
4. slow clients: idle connections, partial headers, partial bodies: closed within their timeout + 1 s while a
   normal client keeps its answers;
5. profiler kill: SIGKILL of the profiling process under batch load: back up, restarts counted, the main
   process's RSS bounded by the profiling queue's bound meanwhile; profiler hang: the same with SIGSTOP
   (alive, taking nothing), killed and restarted by the supervisor after the stall bound;
6. registry faults: the champion alias moved to a version whose files are gone (``/ready`` stays 200 and says
   so, no prediction fails), and services started on a corrupt and on a missing MLflow database (they start,
   ``/health`` 200, ``/ready`` 503 with the reason);
7. shutdown with a partial-body client connected: SIGTERM to exit within the graceful shutdown timeout, the
   request it cut off answered 503 with Connection: close.

Then, unless ``--baseline none``: a ``git worktree`` of the service before the hardening work (``--baseline``,
default ``2248341``) and the current service, same model, profiling off, the local stack's default limits:
single-row p50 at concurrency 1 and requests/s at concurrency 16 with wrk, interleaved repeats, medians and
the ratios current / baseline (target: within 5%).

One table and the ratios are printed; the JSON copy goes to .flywheel/bench/hardening.json
(hardening-quick.json for ``--quick``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import hardening_attacks as attacks
from benchmarks.report import ratio_line, save, table
from benchmarks.serving_procs import (
    HOST,
    LoadResult,
    Processes,
    Server,
    Wrk,
    free_port,
    get,
    listening,
    wait_ready,
)
from flywheel.contracts.model_version import CHAMPION

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "2248341"
"""The last commit before the hardening work."""
MB = attacks.MB
BENCH_LIMITS: dict[str, Any] = {
    "header_timeout_s": 2.0,
    "body_timeout_s": 4.0,
    "keep_alive_timeout_s": 2,
    "graceful_shutdown_timeout_s": 3,
}
"""The benchmark stack's ``server:`` block: short timeouts, so the slow clients are judged in seconds."""
PROFILE_QUEUE_ROWS = 50_000
"""The main service's bound on rows waiting for the profiling process (FLYWHEEL_PROFILE_QUEUE_ROWS)."""
SUPERVISE_SLACK_S = 0.3  # the supervisor's tick (0.2 s): the stall clock starts at the last row taken
PROFILER_STALL_S = 2.0
"""How long the profiling process may take no rows while rows wait before it is killed and restarted
(FLYWHEEL_PROFILE_STALL_S; the service's default is 60 s)."""
CHUNKED_RSS_LIMIT_MB = 50.0
AMPLIFICATION_TARGET = 0.5
"""Reported, not judged: the normal client's share beside 8 clients, whatever they send, is bounded by their
share of the one worker (8 clients of valid single rows leave it 0.10-0.16x, measured); the verdict is that a
rejected body costs no more than a scored one (SAME_COST)."""
SAME_COST = 0.8
"""Beside a flood of rejected bodies the normal client keeps at least this much of what it keeps beside a
flood of the cheapest valid requests, and a 422 costs no more server CPU than the request it would score."""
WITHIN = 0.05  # the before/after target: current within 5% of the baseline


@dataclass(frozen=True)
class Plan:
    train_rows: int
    rounds: int
    max_depth: int
    phase_s: float  # amplification and comparison load phases
    warmup_s: float
    reps: int  # comparison repeats (each: baseline, current at c=1 and c=16)
    amp_reps: int
    slow_clients: int  # per kind
    profiler_load_s: float
    alias_load_s: float
    persistent_limit_s: float  # how long the chunked upload that ignores the answer may go on

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(20_000, 40, 8, 2, 1, 1, 1, 200, 10, 10, 8)
        return cls(50_000, 100, 8, 10, 2, 5, 2, 200, 20, 15, 20)


@dataclass
class Family:
    name: str
    tried: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # 2xx, 4xx, 5xx, hang, no answer
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    tracebacks: int = 0
    failures: list[str] = field(default_factory=list)  # why the verdict is FAIL; empty: PASS
    notes: list[str] = field(default_factory=list)  # figures and findings printed under the table
    details: dict[str, Any] = field(default_factory=dict)
    ran: bool = True

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
        self.tried += n

    def count_statuses(self, statuses: dict[str, int]) -> None:
        for status, n in statuses.items():
            self.count(f"{str(status)[0]}xx", n)

    def expect(self, ok: bool, why: str) -> None:
        if not ok:
            self.failures.append(why)

    @property
    def verdict(self) -> str:
        if not self.ran:
            return "NOT RUN"
        return "FAIL" if self.failures else "PASS"

    def row(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "tried": self.tried,
            "2xx": self.counts.get("2xx", 0),
            "4xx": self.counts.get("4xx", 0),
            "5xx": self.counts.get("5xx", 0),
            "hangs": self.counts.get("hang", 0),
            "no_answer": self.counts.get("no answer", 0),
            "rss_before_MB": round(self.rss_before_mb, 1),
            "rss_after_MB": round(self.rss_after_mb, 1),
            "tracebacks": self.tracebacks,
            "verdict": self.verdict,
        }


@dataclass
class Battery:
    """What the families share: the main service, its limits, the model and request bodies."""

    plan: Plan
    home: Path
    procs: Processes
    wrk: Wrk
    server: Server
    limits: Any  # stacks.config.ServerLimits of the benchmark stack
    model_name: str
    champion: str
    trained: Any
    record: dict[str, Any]
    records: list[dict[str, Any]]
    bodies: dict[str, Path]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid


# ------------------------------------------------------------------------------------------ the service


def write_stack(path: Path, name: str, port: int, server: dict[str, Any] | None) -> Path:
    """The local stack with its deployer on ``port`` and, given ``server``, that ``server:`` block."""
    import yaml

    stack = yaml.safe_load((ROOT / "stacks" / "local.yaml").read_text())
    stack["stack_name"] = name
    deployer = stack["components"]["model_deployer"]["configuration"]
    deployer["host"] = HOST
    deployer["port"] = port
    if server is not None:
        deployer["server"] = dict(server)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def _inherited_env() -> dict[str, str]:
    """This process's environment less what selects a home, stack, registry or Prefect API."""
    drop = ("FLYWHEEL_", "PREFECT_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def start_service(
    procs: Processes, name: str, stack_path: Path, home: Path, model_name: str, **extra: str
) -> tuple[Server, Any]:
    """The service as the local deployer starts it (its command line and environment), in a process group
    of its own; returns the server and the stack's server limits."""
    from stacks.components.deployers.local import LocalDeployer
    from stacks.components.deployers.server_options import server_limits
    from stacks.loader import load_stack

    stack = load_stack(str(stack_path))
    deployer = LocalDeployer(stack)
    env = {
        **_inherited_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **deployer.environment(model_name),
        "FLYWHEEL_HOME": str(home),
        **extra,
    }
    return procs.start(name, deployer.command(), env, deployer.config.port), server_limits(stack)


def service_rss_mb(server: Server) -> float:
    return attacks.tree_rss(server.process.pid) / MB


def metrics_text(server: Server) -> str:
    status, body = get(server.url + "/metrics")
    return body.decode(errors="replace") if status == 200 else ""


def metric(text: str, name: str) -> float | None:
    """The sum of every sample of ``name`` (all its label values); None when it is not exported."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] == name:
            with contextlib.suppress(ValueError):
                total += float(value)
                found = True
    return total if found else None


def ready(server: Server) -> tuple[int, dict[str, Any]]:
    status, body = get(server.url + "/ready")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"body": body.decode(errors="replace")[:300]}


def log_size(server: Server) -> int:
    try:
        return server.log.stat().st_size
    except OSError:
        return 0


def log_since(server: Server, offset: int) -> str:
    try:
        with server.log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def log_problems(text: str) -> tuple[int, list[str]]:
    """Tracebacks in a stretch of a server log, and its ERROR lines (the first few)."""
    lines = text.splitlines()
    errors = [line.strip()[:240] for line in lines if " ERROR " in line or line.startswith("ERROR")]
    return sum("Traceback (most recent call last)" in line for line in lines), errors[:8]


def _rid(answer: attacks.Answer) -> str:
    if answer.status != 200:
        raise RuntimeError(f"a valid request was refused: {answer.status} {answer.body[:300]!r}")
    return str(json.loads(answer.body)["request_id"])


# ---------------------------------------------------------------------------------------------- families


def bad_input(b: Battery, family: Family) -> None:
    """Hand-made bad requests to every POST endpoint, one connection each."""
    issued = {
        "one": _rid(attacks.post(b.port, "/predict", b.record)),
        "two": _rid(attacks.post(b.port, "/predict", b.record)),
        "batch": _rid(attacks.post(b.port, "/predict/batch", {"records": [b.record] * 3})),
    }
    columns = b.trained.dataset.schema.columns
    cases = attacks.bad_input_cases(columns, b.record, issued, max_batch=1000)
    largest = (0, "")
    times: list[tuple[float, str]] = []
    unexpected: list[str] = []
    for case in cases:
        raw = attacks.request_bytes(b.port, case.method, case.path, case.body, case.content_type)
        answer = attacks.send(b.port, raw)
        family.count(answer.kind)
        shown = f"{case.name}: {answer.status or answer.error} {answer.body[:200]!r}"
        if answer.kind in ("5xx", "hang", "no answer"):
            family.failures.append(shown)
        elif not case.accepts(answer.status):
            unexpected.append(shown)
        if answer.status is not None and answer.status >= 400 and len(answer.body) > largest[0]:
            largest = (len(answer.body), case.name)
        times.append((answer.seconds, case.name))
    family.failures += [f"unexpected answer: {u}" for u in unexpected]
    family.expect(b.server.alive(), "the service died")
    slowest = sorted(times, reverse=True)[:3]
    family.details |= {
        "cases": len(cases),
        "largest_error_bytes": largest[0],
        "largest_error_case": largest[1],
        "slowest": slowest,
        "unexpected": unexpected,
    }
    family.notes += [
        f"{len(cases)} cases on 5 endpoints; {len(unexpected)} answered outside expectation; largest error "
        f"answer {largest[0]:,} bytes ({largest[1]})",
        "slowest answers (request sent to answer read): "
        + "; ".join(f"{name} {t * 1000:.0f} ms" for t, name in slowest),
    ]


def _kind(status: int | None, closed: bool) -> str:
    """How a table counts an answer: by status class; without one, closed (no answer) or not (a hang)."""
    if status is not None:
        return f"{status // 100}xx"
    return "no answer" if closed else "hang"


def chunked(b: Battery, family: Family) -> None:
    """1 GB chunked bodies with no Content-Length; the sender stops at the answer (and once goes on)."""
    attempts = [
        ("/predict", True, "1 GB chunked to /predict, sender stops at the answer"),
        ("/feedback", True, "1 GB chunked to /feedback, sender stops at the answer"),
        ("/predict/batch", False, "1 GB chunked to /predict/batch, sender goes on after the answer"),
    ]
    results = []
    with attacks.RssSampler(b.pid, children=False) as rss:
        for path, polite, label in attempts:
            limit = 60.0 if polite else b.plan.persistent_limit_s
            up = attacks.chunked_upload(b.port, path, 1 << 30, stop_on_answer=polite, limit_s=limit)
            results.append((label, polite, up))
            family.count(_kind(up.status, closed=up.closed_s is not None))
        declared = attacks.declared_upload(b.port, "/predict/columns", 1 << 30)
        family.count(declared.kind)
    growth = rss.peak_growth_mb
    for label, polite, up in results:
        family.expect(up.status == 413, f"{label}: answered {up.status} ({up.error or 'no error'}), not 413")
        after = (up.sent_bytes - (up.sent_before_answer or 0)) / MB
        text = (
            f"{label}: {up.status} after {(up.sent_before_answer or 0) / MB:.1f} MB sent "
            f"({(up.answered_s or 0) * 1000:.0f} ms)"
        )
        if not polite:
            closed = (
                f"closed it {up.closed_s - (up.answered_s or 0):.2f} s after its answer"
                if up.closed_s is not None
                else f"had not closed it after {up.seconds:.0f} s"
            )
            text += f"; the sender went on: {after:,.0f} MB more accepted, and the server {closed}"
            if up.status == 413 and up.answered_s is not None:
                allowed = max(b.limits.header_timeout_s, b.limits.keep_alive_timeout_s) + 1
                held = (up.closed_s if up.closed_s is not None else up.seconds) - up.answered_s
                family.expect(
                    up.closed_s is not None and held <= allowed,
                    f"{label}: after its 413 the server kept the connection open and read the body on "
                    f"({after:,.0f} MB in {held:.1f} s; expected a close within {allowed:g} s: the "
                    "header/keep-alive timeout + 1 s)",
                )
        family.notes.append(text)
    family.expect(declared.status == 413, f"1 GB declared by Content-Length: answered {declared.status}")
    family.notes.append(
        f"1 GB declared by Content-Length to /predict/columns: {declared.status} in "
        f"{declared.seconds * 1000:.0f} ms"
    )
    family.expect(
        growth < CHUNKED_RSS_LIMIT_MB,
        f"the server process grew {growth:.1f} MB (limit {CHUNKED_RSS_LIMIT_MB:g} MB)",
    )
    family.notes.append(f"server process RSS: peak growth {growth:.1f} MB during the uploads")
    family.details |= {
        "uploads": [{"label": label, **asdict(up)} for label, _, up in results],
        "declared": {"status": declared.status, "seconds": declared.seconds},
        "rss_peak_growth_mb": growth,
    }


def _wrk_phase(
    b: Battery, path: str, body: Path, conns: int, seconds: float, group: bool = True
) -> LoadResult:
    cap = int(seconds * 20_000)
    started = b.wrk.start(b.server.url + path, body, conns, seconds, cap, timeout_s=attacks.HANG_S)
    result = b.wrk.finish(started, seconds, cap)
    result.connections = conns
    return result


def _under_flood(b: Battery, flood_path: str, flood_body: Path) -> tuple[LoadResult, LoadResult]:
    """The normal client (wrk, one connection, single-row /predict) beside 8 connections of ``flood_body``."""
    seconds = b.plan.phase_s
    cap = int((seconds + 3) * 20_000)
    flood = b.wrk.start(b.server.url + flood_path, flood_body, 8, seconds + 2, cap, timeout_s=attacks.HANG_S)
    try:
        time.sleep(1)
        normal = b.wrk.run(b.server.url + "/predict", b.bodies["single"], 1, seconds, group=b.pid)
    finally:
        flooded = b.wrk.finish(flood, seconds + 2, cap)
        flooded.connections = 8
    return normal, flooded


def _drain(b: Battery, limit_s: float = 15.0) -> None:
    """Wait until the service answers a /health within 50 ms again (its backlog is served), or ``limit_s``."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        with contextlib.suppress(OSError):
            get(b.server.url + "/health", timeout=attacks.HANG_S)
        if time.perf_counter() - t0 < 0.05:
            return
        time.sleep(0.2)


def padded(body: bytes, size: int) -> bytes:
    """``body`` (JSON) grown to ``size`` bytes with whitespace after its commas, as a pretty-printer would:
    the same rows, valid, as large as the rejected body it is compared with."""
    commas = body.count(b",")
    extra = size - len(body)
    if extra <= 0 or not commas:
        return body
    grown = body.replace(b",", b"," + b" " * (extra // commas))
    return grown + b" " * (size - len(grown))


def beyond_decoding(d: dict[str, Any]) -> float:
    """Server CPU of the 100,000-key 422 less its JSON decoding, over the same for scoring the valid body of
    its size: what the service does with a body once decoded (receiving it, checking, answering), rejected
    against scored."""
    # refused unread (413: larger than any valid record), it was never decoded
    decoded = d.get("keys_status", 422) == 422
    rejected = d["server_cpu_ms_per_keys_422"] - (d["json_parse_ms_many_keys"] if decoded else 0.0)
    scored = d["server_cpu_ms_per_same_size_valid_batch"] - d["json_parse_ms_same_size_valid_batch"]
    return rejected / max(scored, 1e-9)


def json_parse_ms(body: bytes, repeats: int = 15) -> float:
    """CPU of ``orjson.loads`` of ``body`` and freeing the result, best of ``repeats``, in this process: the
    floor of any check that needs the decoded body."""
    import orjson

    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        decoded = orjson.loads(body)
        del decoded
        best = min(best, time.process_time() - started)
    return best * 1000


def amplification(b: Battery, family: Family) -> None:
    """The normal client alone, then beside 8 clients sending 1,000 empty records (interleaved repeats);
    once beside 8 clients sending valid single rows, for context (what sharing the server costs anyway)."""
    plan = b.plan
    url = b.server.url
    empty = b.bodies["empty1000"]
    probe = attacks.send(b.port, attacks.request_bytes(b.port, "POST", "/predict/batch", empty.read_bytes()))
    b.wrk.run(url + "/predict", b.bodies["single"], 1, plan.warmup_s)  # warm-up, not counted
    # the serving process's CPU per request of each kind, each alone on one connection, before any flood
    cost_s = max(1.0, plan.phase_s / 2)
    cost_422 = b.wrk.run(url + "/predict/batch", empty, 1, cost_s, group=b.pid)
    cost_keys = b.wrk.run(url + "/predict", b.bodies["many_keys"], 1, cost_s, group=b.pid)
    cost_batch = b.wrk.run(url + "/predict/batch", b.bodies["batch1000"], 1, cost_s, group=b.pid)
    same_size = b.bodies["batch_same_size"]
    cost_same = b.wrk.run(url + "/predict/batch", same_size, 1, cost_s, group=b.pid)
    keys_body = b.bodies["many_keys"].read_bytes()
    keys_probe = attacks.send(b.port, attacks.request_bytes(b.port, "POST", "/predict", keys_body))
    parse_keys = json_parse_ms(keys_body)
    parse_same = json_parse_ms(same_size.read_bytes())
    alone: list[LoadResult] = []
    attacked: list[LoadResult] = []
    floods: list[LoadResult] = []
    for _ in range(plan.amp_reps):
        alone.append(b.wrk.run(url + "/predict", b.bodies["single"], 1, plan.phase_s, group=b.pid))
        normal, flooded = _under_flood(b, "/predict/batch", empty)
        attacked.append(normal)
        floods.append(flooded)
    control_normal, control_flood = _under_flood(b, "/predict", b.bodies["single"])
    keys_normal, keys_flood = _under_flood(b, "/predict", b.bodies["many_keys"])
    _drain(b)  # the requests of the heaviest flood still in flight when its clients stopped
    extra = [
        control_normal,
        control_flood,
        keys_normal,
        keys_flood,
        cost_422,
        cost_keys,
        cost_batch,
        cost_same,
    ]
    for r in [*alone, *attacked, *floods, *extra]:
        family.count_statuses(r.statuses)
        family.count("hang", r.timeouts)
        family.count("no answer", r.socket_errors)
    rps_alone = statistics.median(r.rps for r in alone)
    rps_attacked = statistics.median(r.rps for r in attacked)
    ratio = rps_attacked / rps_alone if rps_alone else 0.0
    control = control_normal.rps / rps_alone if rps_alone else 0.0
    cpu_predict = statistics.median(r.server_top_cpu_s / r.requests * 1000 for r in alone if r.requests)
    cpu_422 = cost_422.server_top_cpu_s / cost_422.requests * 1000 if cost_422.requests else 0.0
    cpu_keys = cost_keys.server_top_cpu_s / cost_keys.requests * 1000 if cost_keys.requests else 0.0
    keys_ratio = keys_normal.rps / rps_alone if rps_alone else 0.0
    cpu_batch = cost_batch.server_top_cpu_s / cost_batch.requests * 1000 if cost_batch.requests else 0.0
    cpu_same = cost_same.server_top_cpu_s / cost_same.requests * 1000 if cost_same.requests else 0.0
    flood_rps = statistics.median(r.rps for r in floods)
    family.expect(
        ratio >= SAME_COST * control,
        f"the normal client kept {ratio:.2f}x its throughput beside the empty-record flood, under "
        f"{SAME_COST} of the {control:.2f}x it keeps beside 8 clients of valid rows",
    )
    family.expect(
        cpu_422 <= cpu_batch,
        f"a 422 of 1,000 empty records costs {cpu_422:.2f} ms of server CPU, more than scoring 1,000 rows "
        f"({cpu_batch:.2f} ms)",
    )
    family.expect(
        cpu_keys <= cpu_same,
        f"refusing 100,000 unknown keys ({len(keys_body) / MB:.1f} MB; {keys_probe.status}) costs "
        f"{cpu_keys:.2f} ms of server "
        f"CPU, more than scoring a valid body of the same size ({cpu_same:.2f} ms: 1,000 rows, "
        "whitespace-padded); "
        f"decoding its JSON alone costs {parse_keys:.2f} ms ({parse_keys / cpu_keys:.0%} of it), the valid "
        f"body's {parse_same:.2f} ms",
    )
    family.expect(
        cost_same.statuses == {"200": cost_same.requests},
        f"the whitespace-padded valid batch was not scored: {cost_same.statuses}",
    )
    family.expect(probe.status == 422, f"1,000 empty records answered {probe.status}, not 422")
    family.expect(len(probe.body) < 10_000, f"the 422 of 1,000 empty records is {len(probe.body):,} bytes")
    family.expect(
        keys_probe.status in (413, 422) and len(keys_probe.body) < 10_000,
        f"100,000 unknown keys answered {keys_probe.status} with {len(keys_probe.body):,} bytes",
    )
    for r in [*alone, *attacked, *floods, keys_normal, keys_flood, control_normal, control_flood]:
        bad = r.failed - sum(n for s, n in r.statuses.items() if s in ("422", "413"))
        family.expect(bad == 0, f"{bad} failed requests in an amplification phase: {r.statuses}")
    family.details |= {
        "rps_alone": [r.rps for r in alone],
        "rps_attacked": [r.rps for r in attacked],
        "flood_rps": [r.rps for r in floods],
        "control_rps": control_normal.rps,
        "control_flood_rps": control_flood.rps,
        "ratio": ratio,
        "control_ratio": control,
        "p50_alone_ms": statistics.median(r.p50_ms for r in alone),
        "p50_attacked_ms": statistics.median(r.p50_ms for r in attacked),
        "server_cpu_ms_per_prediction": cpu_predict,
        "server_cpu_ms_per_422": cpu_422,
        "keys_rps": keys_normal.rps,
        "keys_flood_rps": keys_flood.rps,
        "keys_ratio": keys_ratio,
        "server_cpu_ms_per_keys_422": cpu_keys,
        "server_cpu_ms_per_1000_row_batch": cpu_batch,
        "server_cpu_ms_per_same_size_valid_batch": cpu_same,
        "same_size_valid_batch_bytes": len(same_size.read_bytes()),
        "many_keys_bytes": len(keys_body),
        "keys_status": keys_probe.status,
        "json_parse_ms_many_keys": parse_keys,
        "json_parse_ms_same_size_valid_batch": parse_same,
        "json_parse_share_of_keys_422": parse_keys / cpu_keys if cpu_keys else None,
        "solo_target_ratio": AMPLIFICATION_TARGET,
        "empty_records_request_bytes": len(empty.read_bytes()),
        "empty_records_answer_bytes": len(probe.body),
        "other_cores": [r.other_cpu_s / r.seconds if r.seconds else 0.0 for r in attacked],
    }
    family.notes += [
        f"normal client alone {rps_alone:,.0f} req/s (p50 {family.details['p50_alone_ms']:.2f} ms); beside 8 "
        f"clients of 1,000 empty records ({flood_rps:,.0f} 422/s) {rps_attacked:,.0f} req/s (p50 "
        f"{family.details['p50_attacked_ms']:.2f} ms): {ratio:.2f}x",
        f"context: beside 8 clients of valid single rows ({control_flood.rps:,.0f} req/s) the normal client "
        f"kept {control:.2f}x; server CPU {cpu_422:.3f} ms per 422 (a {len(empty.read_bytes()):,}-byte "
        f"request, a {len(probe.body):,}-byte answer) vs {cpu_predict:.3f} ms per prediction",
        f"100,000 unknown keys (1.7 MB) to /predict from 8 clients ({keys_flood.rps:,.1f} "
        f"{keys_probe.status}/s, "
        f"{cpu_keys:.1f} ms of server CPU each): the normal client kept {keys_normal.rps:,.0f} req/s, "
        f"{keys_ratio:.2f}x",
        f"cost of refusing 100,000 keys ({len(keys_body):,} bytes, answered {keys_probe.status}"
        f"{': refused unread, larger than any valid record' if keys_probe.status == 413 else ''}): "
        f"{cpu_keys:.2f} ms of server CPU; decoding its JSON alone (orjson.loads and freeing the result) "
        f"{parse_keys:.2f} ms; scoring a valid body "
        f"of the same size (1,000 rows, whitespace-padded to {len(same_size.read_bytes()):,} bytes) "
        f"{cpu_same:.2f} ms (its JSON {parse_same:.2f} ms); 1,000 rows unpadded {cpu_batch:.2f} ms",
    ]


def slow_clients(b: Battery, family: Family) -> None:
    """Idle connections, partial headers and partial bodies, all at once, while a normal client goes on."""
    limits = b.limits
    n = b.plan.slow_clients
    expected = {
        "idle": limits.header_timeout_s + 1,
        "partial-headers": limits.header_timeout_s + 1,
        "partial-body": limits.body_timeout_s + 1,
    }
    watch_s = limits.body_timeout_s + max(limits.header_timeout_s, limits.keep_alive_timeout_s) + 4
    stop = threading.Event()
    normal: list[attacks.Loop] = []
    body = b.bodies["single"].read_bytes()
    client = threading.Thread(
        target=lambda: normal.append(
            attacks.closed_loop(b.port, "/predict", body, watch_s + 10, stop, 0.02, keep_latencies=True)
        ),
        daemon=True,
    )
    client.start()
    slow: list[attacks.Slow] = []
    try:
        for kind in expected:
            slow += attacks.open_slow(b.port, kind, n)
        attacks.watch_closed(slow, watch_s)
    finally:
        for s in slow:
            s.sock.close()
        stop.set()
        client.join(timeout=attacks.HANG_S + 5)
    loop = normal[0] if normal else attacks.Loop()
    family.count_statuses(loop.statuses)
    family.count("hang", loop.hangs)
    family.count("no answer", loop.errors)
    family.expect(bool(normal), "the normal client did not finish")
    family.expect(
        loop.hangs == 0 and loop.errors == 0, f"normal client: {loop.hangs} hangs, {loop.errors} errors"
    )
    family.expect(set(loop.statuses) <= {"200"}, f"normal client got {loop.statuses} (only 200 expected)")
    per_kind = {}
    for kind, limit in expected.items():
        group = [s for s in slow if s.kind == kind]
        ended = [
            min(t for t in (s.answered_s, s.closed_s) if t is not None)
            for s in group
            if s.answered_s is not None or s.closed_s is not None
        ]
        closed = [s.closed_s for s in group if s.closed_s is not None]
        never = len(group) - len(ended)
        late = sum(1 for t in ended if t > limit)
        statuses: dict[str, int] = {}
        for s in group:
            if s.status is not None:
                statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        family.count("hang", never)
        family.counts["4xx"] = family.counts.get("4xx", 0) + sum(
            v for k, v in statuses.items() if k.startswith("4")
        )
        family.tried += len(group) - never  # the answered or closed ones (hangs counted above)
        per_kind[kind] = {
            "connections": len(group),
            "ended": len(ended),
            "closed": len(closed),
            "never_closed": never,
            "late": late,
            "median_end_s": statistics.median(ended) if ended else None,
            "max_end_s": max(ended) if ended else None,
            "max_close_s": max(closed) if closed else None,
            "statuses": statuses,
            "limit_s": limit,
        }
        family.expect(
            never == 0 and late == 0,
            f"{kind}: {never} of {len(group)} never answered or closed within {watch_s:g} s, {late} later "
            f"than {limit:g} s",
        )
        median = f"{statistics.median(ended):.2f}" if ended else "-"
        worst = f"{max(ended):.2f}" if ended else "-"
        family.notes.append(
            f"{len(group)} {kind}: {len(ended)} ended by the server (median {median} s, max {worst} s; limit "
            f"{limit:g} s), answers {statuses or 'none'}, {len(closed)} closed (last at "
            f"{max(closed) if closed else 0:.2f} s)"
        )
    latency = sorted(loop.latencies)
    p99 = latency[int(0.99 * (len(latency) - 1))] * 1000 if latency else 0.0
    family.notes.append(
        f"normal client meanwhile: {loop.requests} requests, {loop.statuses}, p50 {loop.p50_ms():.2f} ms, "
        f"p99 {p99:.2f} ms, max {max(latency, default=0) * 1000:.1f} ms"
    )
    family.details |= {"kinds": per_kind, "normal": {**asdict(loop), "latencies": None, "p99_ms": p99}}


def _profiler_children(pid: int) -> list[int]:
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
    return found


def profiler_kill(b: Battery, family: Family) -> None:
    """SIGKILL the profiling process under batch load; watch /metrics until it is back."""
    _profiler_fault(b, family, signal.SIGKILL)


def profiler_hang(b: Battery, family: Family) -> None:
    """SIGSTOP the profiling process under batch load (alive, taking nothing): the supervisor must kill it
    after the stall bound (PROFILER_STALL_S) and start another, as for one that died."""
    _profiler_fault(b, family, signal.SIGSTOP)


def _profiler_fault(b: Battery, family: Family, fault: signal.Signals) -> None:
    plan = b.plan
    hang = fault == signal.SIGSTOP
    before = metrics_text(b.server)
    up0 = metric(before, "flywheel_profiler_up")
    restarts0 = metric(before, "flywheel_profiler_restarts_total")
    dropped0 = metric(before, "flywheel_profile_dropped_rows_total") or 0.0
    victims = _profiler_children(b.pid)
    family.expect(up0 == 1.0, f"flywheel_profiler_up before the kill: {up0} (1 expected)")
    family.expect(restarts0 is not None, "flywheel_profiler_restarts_total is not exported")
    if not victims:
        family.failures.append("no profiling process found among the service's children")
        return
    cap = int(plan.profiler_load_s * 20_000)
    load = b.wrk.start(
        b.server.url + "/predict/batch", b.bodies["batch1000"], 2, plan.profiler_load_s, cap, attacks.HANG_S
    )
    samples: list[tuple[float, float | None, float | None]] = []
    recovered_s: float | None = None
    down_seen = False
    ready_down: dict[str, Any] = {}
    ready_status = 0
    try:
        time.sleep(1.5)
        main_before = attacks.tree_rss(b.pid, children=False)
        main_peak = main_before
        killed_at = time.perf_counter()
        os.kill(victims[0], fault)
        deadline = killed_at + plan.profiler_load_s - 2.5
        while time.perf_counter() < deadline:
            text = metrics_text(b.server)
            up = metric(text, "flywheel_profiler_up")
            restarts = metric(text, "flywheel_profiler_restarts_total")
            main_peak = max(main_peak, attacks.tree_rss(b.pid, children=False))
            now = time.perf_counter() - killed_at
            samples.append((now, up, restarts))
            if up == 0.0 and not down_seen:
                down_seen = True
                ready_status, ready_down = ready(b.server)
            if recovered_s is None and up == 1.0 and restarts is not None and restarts > (restarts0 or 0):
                recovered_s = now
            if recovered_s is not None and now > recovered_s + 1:
                break
            time.sleep(0.2)
        time.sleep(2)  # a process that dies again at once would show here as a second restart
        after = metrics_text(b.server)
    finally:
        result = b.wrk.finish(load, plan.profiler_load_s, cap)
        if hang:  # never leave a stopped process behind, whatever the outcome
            with contextlib.suppress(ProcessLookupError):
                os.kill(victims[0], signal.SIGKILL)
    up1 = metric(after, "flywheel_profiler_up")
    restarts1 = metric(after, "flywheel_profiler_restarts_total")
    dropped1 = metric(after, "flywheel_profile_dropped_rows_total") or 0.0
    family.count_statuses(result.statuses)
    family.count("hang", result.timeouts)
    family.count("no answer", result.socket_errors)
    features = len(b.trained.dataset.schema.columns)
    bound_mb = PROFILE_QUEUE_ROWS * (4 * features + 200) / MB + 30
    growth = (main_peak - main_before) / MB
    family.expect(result.failed == 0, f"{result.failed} batch requests failed meanwhile: {result.statuses}")
    family.expect(recovered_s is not None, "flywheel_profiler_up was not 1 again with a restart counted")
    if hang:
        family.expect(
            recovered_s is None or recovered_s >= PROFILER_STALL_S - SUPERVISE_SLACK_S,
            f"restarted after {recovered_s} s, before the stall bound of {PROFILER_STALL_S} s",
        )
        family.expect(
            "hung" in json.dumps(ready_down or {}) or "hung" in str(_ready_profiler(b).get("last_error")),
            "neither /ready's profiler detail nor its last_error says the process hung",
        )
    family.expect(
        restarts1 is not None and restarts0 is not None and restarts1 - restarts0 == 1,
        f"restarts {restarts0} -> {restarts1} (one expected: a second means it died again)",
    )
    family.expect(up1 == 1.0, f"flywheel_profiler_up 2 s after the recovery: {up1}")
    family.expect(growth <= bound_mb, f"main process grew {growth:.1f} MB (bound {bound_mb:.0f} MB)")
    replaced = [p for p in _profiler_children(b.pid) if p not in victims]
    family.notes += [
        f"{'stopped (SIGSTOP)' if hang else 'killed'} pid {victims[0]} under {result.rps * 1000:,.0f} rows/s "
        "of batch load: "
        + (
            f"flywheel_profiler_up 1 again after {recovered_s:.1f} s"
            if recovered_s is not None
            else f"not back within {plan.profiler_load_s - 2.5:.0f} s"
        )
        + f" (down seen: {down_seen}), restarts {restarts0} -> {restarts1}, new pid {replaced or 'none'}",
        f"main process RSS +{growth:.1f} MB while it was {'hung' if hang else 'down'} "
        f"(bound {bound_mb:.0f} MB: "
        f"{PROFILE_QUEUE_ROWS:,} queued rows of {features} features, +30 MB); "
        f"{dropped1 - dropped0:,.0f} rows dropped; {result.requests} batch requests, {result.statuses}",
    ]
    if ready_down:
        shown = ready_down.get("profiler", ready_down)
        family.notes.append(f"/ready while it was down: HTTP {ready_status}, {json.dumps(shown)[:300]}")
    if hang:
        family.notes.append(
            f"stall bound FLYWHEEL_PROFILE_STALL_S={PROFILER_STALL_S:g} s; profiler detail afterwards: "
            f"{json.dumps(_ready_profiler(b))[:300]}"
        )
    family.details |= {
        "recovered_s": recovered_s,
        "samples": samples[:100],
        "restarts": [restarts0, restarts1],
        "up": [up0, up1],
        "dropped_rows": dropped1 - dropped0,
        "main_rss_growth_mb": growth,
        "bound_mb": bound_mb,
        "ready_while_down": ready_down,
        "load": asdict(result),
    }


def _ready_profiler(b: Battery) -> dict[str, Any]:
    _, detail = ready(b.server)
    shown = detail.get("profiler", {})
    return shown if isinstance(shown, dict) else {}


def registry_faults(b: Battery, family: Family) -> None:
    """The alias on a broken version (main service, under load), then services on a corrupt and on a
    missing MLflow database."""
    _broken_alias(b, family)
    _bad_databases(b, family)


def _broken_alias(b: Battery, family: Family) -> None:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from mlflow import MlflowClient

    from benchmarks import serving_setup as setup

    client = MlflowClient()
    broken = setup.register_model(
        b.trained, promote=False, reason="hardening benchmark: files deleted"
    ).version
    location = client.get_model_version_download_uri(b.model_name, broken)
    path = Path(url2pathname(urlparse(location).path)) if location.startswith("file:") else Path(location)
    if not path.exists():
        family.failures.append(f"cannot break v{broken}: its files are not at {location}")
        return
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    plan = b.plan
    cap = int(plan.alias_load_s * 20_000)
    load = b.wrk.start(
        b.server.url + "/predict", b.bodies["single"], 2, plan.alias_load_s, cap, attacks.HANG_S
    )
    seen: list[tuple[float, int, str | None, str | None]] = []
    broken_detail = ""
    back_s: float | None = None
    noticed_s: float | None = None
    moved = time.perf_counter()

    def sample() -> dict[str, Any]:
        """/ready once: counted, and kept with its time since the alias moved; its body."""
        status, body = ready(b.server)
        family.count(f"{status // 100}xx")
        seen.append(
            (time.perf_counter() - moved, status, body.get("served_version"), body.get("champion_version"))
        )
        return body

    try:
        time.sleep(0.5)
        moved = time.perf_counter()
        client.set_registered_model_alias(b.model_name, CHAMPION, broken)
        while time.perf_counter() - moved < 10:
            body = sample()
            if body.get("champion_version") == broken and noticed_s is None:
                noticed_s = time.perf_counter() - moved
                broken_detail = str(body.get("detail"))
            if noticed_s is not None and time.perf_counter() - moved > noticed_s + 1.5:
                break
            time.sleep(0.25)
        client.set_registered_model_alias(b.model_name, CHAMPION, b.champion)
        restored = time.perf_counter()
        while time.perf_counter() - restored < 10:
            body = sample()
            if body.get("champion_version") == b.champion and not body.get("load_error"):
                back_s = time.perf_counter() - restored
                break
            time.sleep(0.25)
    finally:
        result = b.wrk.finish(load, plan.alias_load_s, cap)
    family.count_statuses(result.statuses)
    family.count("hang", result.timeouts)
    family.count("no answer", result.socket_errors)
    statuses = {s for _, s, _, _ in seen}
    served = {v for _, _, v, _ in seen}
    family.expect(noticed_s is not None, f"/ready never named v{broken} as the champion within 10 s")
    family.expect(
        statuses == {200}, f"/ready answered {sorted(statuses)} while the alias was broken (200 expected)"
    )
    family.expect(served == {b.champion}, f"served versions seen on /ready: {sorted(map(str, served))}")
    family.expect(result.failed == 0, f"{result.failed} predictions failed: {result.statuses}")
    family.expect(back_s is not None, "after the alias moved back, /ready did not report the champion served")
    family.notes += [
        f"alias -> v{broken} (files deleted): noticed on /ready after "
        + (f"{noticed_s:.1f} s" if noticed_s is not None else "never")
        + f", /ready statuses {sorted(statuses)}, served {sorted(map(str, served))}; "
        f"detail: {broken_detail[:220]}",
        f"alias back to v{b.champion}: /ready clean after "
        + (f"{back_s:.1f} s" if back_s is not None else "never")
        + f"; {result.requests} predictions meanwhile, {result.statuses}, failed {result.failed}",
    ]
    family.details["broken_alias"] = {
        "version": broken,
        "noticed_s": noticed_s,
        "back_s": back_s,
        "ready_seen": seen,
        "detail": broken_detail,
        "load": asdict(result),
    }


def _corrupt(db: Path) -> None:
    """Overwrite every page after the first with random bytes (the file keeps its size and its header)."""
    rng = random.Random(7)
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.seek(4096)
        left = size - 4096
        while left > 0:
            n = min(left, 1 << 20)
            handle.write(rng.randbytes(n))
            left -= n


def _bad_databases(b: Battery, family: Family) -> None:
    cases = []
    for slug, label in (("corrupt", "corrupt MLflow database"), ("missing", "missing MLflow database")):
        home = b.home / "faults" / slug
        home.mkdir(parents=True, exist_ok=True)
        if slug == "corrupt":
            shutil.copy2(b.home / "mlflow.db", home / "mlflow.db")
            _corrupt(home / "mlflow.db")
        stack = write_stack(home / "stack.yaml", f"registry-{slug}", free_port(), BENCH_LIMITS)
        server, _ = start_service(
            b.procs, f"registry-{slug}", stack, home, b.model_name, FLYWHEEL_PROFILING="off"
        )
        cases.append((label, server))
    for label, server in cases:
        try:
            try:
                started_s = wait_ready(server, "/health", 180)
            except RuntimeError as exc:
                family.count("no answer")
                family.failures.append(f"{label}: the service did not start: {str(exc)[:600]}")
                continue
            family.count("2xx")
            status, body = ready(server)
            family.count(f"{status // 100}xx")
            predicted = attacks.post(server.port, "/predict", b.record)
            family.count(predicted.kind)
            time.sleep(1)
            alive = server.alive()
            reason = body.get("detail") or body.get("registry_error") or ""
            family.expect(
                status == 503, f"{label}: /ready answered {status}, not 503: {json.dumps(body)[:300]}"
            )
            family.expect(bool(reason), f"{label}: /ready gives no reason: {json.dumps(body)[:300]}")
            family.expect(
                predicted.status == 503,
                f"{label}: /predict answered {predicted.status}: {predicted.body[:200]!r}",
            )
            family.expect(alive, f"{label}: the service exited after answering")
            tracebacks, _ = log_problems(log_since(server, 0))
            family.tracebacks += tracebacks
            family.expect(tracebacks == 0, f"{label}: {tracebacks} traceback(s) in its log ({server.log})")
            family.notes.append(
                f"{label}: up in {started_s:.1f} s, /health 200, /ready {status}: {str(reason)[:200]}; "
                f"/predict {predicted.status}"
            )
            family.details[label] = {
                "ready": body,
                "ready_status": status,
                "predict_status": predicted.status,
            }
        finally:
            b.procs.stop(server)
    family.notes.append("(its 5xx are those two services' /ready and /predict 503s: expected, no model)")


def shutdown(b: Battery, family: Family) -> None:
    """SIGTERM with a partial-body request in flight: how long until the client has its answer (or close)
    and the process has exited."""
    limits = b.limits
    sock = attacks.partial_body_client(b.port)
    sock.setblocking(False)
    time.sleep(0.5)
    rss = service_rss_mb(b.server)
    signalled = time.perf_counter()
    b.server.process.send_signal(signal.SIGTERM)
    answered_s: float | None = None
    status: int | None = None
    closed_header = False
    client_closed_s: float | None = None
    exited_s: float | None = None
    limit = limits.graceful_shutdown_timeout_s + 25
    try:
        while time.perf_counter() - signalled < limit:
            now = time.perf_counter() - signalled
            if client_closed_s is None:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data:
                    if answered_s is None:
                        answered_s = now
                        match = attacks._STATUS.match(data)
                        status = int(match.group(1)) if match else None
                        closed_header = b"\r\nconnection: close\r\n" in data.lower()
                elif data == b"":
                    client_closed_s = now
            if exited_s is None and b.server.process.poll() is not None:
                exited_s = now
            if exited_s is not None and client_closed_s is not None:
                break
            time.sleep(0.05)
    finally:
        sock.close()
        b.procs.stop(b.server)
    family.rss_before_mb = rss
    family.count(
        "hang"
        if answered_s is None and client_closed_s is None
        else (f"{status // 100}xx" if status else "no answer")
    )
    allowed = limits.graceful_shutdown_timeout_s + 5
    family.expect(
        exited_s is not None and exited_s <= allowed, f"exit after SIGTERM: {exited_s} s (limit {allowed} s)"
    )
    family.notes.append(
        "SIGTERM with a partial body in flight: client "
        + (f"answered {status} after {answered_s:.2f} s, " if answered_s is not None else "got no answer, ")
        + (
            f"connection closed after {client_closed_s:.2f} s, "
            if client_closed_s is not None
            else "never closed, "
        )
        + (f"process exited after {exited_s:.2f} s" if exited_s is not None else "process still running")
        + f" (graceful shutdown timeout {limits.graceful_shutdown_timeout_s} s; limit {allowed} s)"
    )
    family.expect(
        status == 503, f"the request cut off by the shutdown timeout was answered {status}, not 503"
    )
    family.expect(closed_header, "its answer did not say Connection: close")
    family.expect(client_closed_s is not None, "the connection was not closed after the answer")
    if status is not None:
        family.notes.append(
            f"the request cut off by the shutdown (its client never finished sending the body) was answered "
            f"{status}{' with Connection: close' if closed_header else ''}"
        )
    family.details |= {
        "answered_s": answered_s,
        "status": status,
        "client_closed_s": client_closed_s,
        "exited_s": exited_s,
        "limit_s": allowed,
    }


FAMILIES: list[tuple[str, Callable[[Battery, Family], None]]] = [
    ("bad input", bad_input),
    ("1 GB chunked body", chunked),
    ("amplification", amplification),
    ("slow clients", slow_clients),
    ("profiler kill", profiler_kill),
    ("profiler hang", profiler_hang),
    ("registry faults", registry_faults),
    ("shutdown, slow client", shutdown),
]


def run_family(b: Battery, name: str, fn: Callable[[Battery, Family], None]) -> Family:
    """One family against the main service: RSS and log around it; an error in it is a FAIL, not a crash."""
    family = Family(name)
    if not b.server.alive():
        family.ran = False
        family.notes.append("not run: the service is down")
        return family
    print(f"{name} ...", flush=True)
    offset = log_size(b.server)
    family.rss_before_mb = service_rss_mb(b.server)
    started = time.perf_counter()
    try:
        fn(b, family)
    except Exception as exc:  # the battery goes on; the family says what broke
        family.failures.append(f"the family itself failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    family.details["seconds"] = time.perf_counter() - started
    if b.server.alive():
        family.rss_after_mb = service_rss_mb(b.server)
    elif name != "shutdown, slow client":
        family.failures.append(
            f"the service died (exit {b.server.process.returncode}): {b.server.log_tail(15)}"
        )
    tracebacks, errors = log_problems(log_since(b.server, offset))
    family.tracebacks += tracebacks
    family.expect(tracebacks == 0, f"{tracebacks} traceback(s) in the service log ({b.server.log})")
    if errors:
        family.details["log_errors"] = errors
    print(f"  {family.verdict} in {family.details['seconds']:.1f} s", flush=True)
    for line in family.notes:
        print(f"    {line[:400]}", flush=True)
    return family


def _train(plan: Plan, home: Path) -> tuple[Any, str, str]:
    from mlflow import MlflowClient

    from benchmarks import serving_setup as setup
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack

    configure_mlflow(load_stack("local"))
    print("training the champion ...", flush=True)
    trained = setup.train_model(plan.train_rows, plan.rounds, plan.max_depth, seed=42)
    registered = setup.register_model(trained, promote=True, reason="hardening benchmark champion")
    name = trained.spec.model_name
    champion = str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    if champion != registered.version:
        raise RuntimeError(f"v{registered.version} was not promoted (champion is v{champion})")
    print(
        f"  v{champion}: {trained.sample_rows:,} flights, {trained.booster.num_boosted_rounds()} trees, "
        f"{len(trained.dataset.schema.columns)} features, trained in {trained.seconds:.1f} s",
        flush=True,
    )
    return trained, name, champion


def _battery(plan: Plan, home: Path, procs: Processes, wrk: Wrk) -> dict[str, Any]:
    from benchmarks import serving_setup as setup

    trained, name, champion = _train(plan, home)
    test_x = trained.parts.test.X
    records = setup.json_records(test_x, 1000)
    record = setup.complete_record(test_x)
    bodies = {
        "single": wrk.body_file("single", record),
        "batch1000": wrk.body_file("batch1000", {"records": records}),
        "empty1000": wrk.body_file("empty1000", {"records": [{}] * 1000}),
        "many_keys": home / "many-keys.json",
    }
    bodies["many_keys"].write_bytes(attacks.many_keys())
    bodies["batch_same_size"] = home / "batch-same-size.json"
    bodies["batch_same_size"].write_bytes(
        padded(bodies["batch1000"].read_bytes(), len(bodies["many_keys"].read_bytes()))
    )
    stack = write_stack(home / "hardening-bench.yaml", "hardening-bench", free_port(), BENCH_LIMITS)
    print(f"starting the service (profiling on, stack {stack.name}: server {BENCH_LIMITS}) ...", flush=True)
    server, limits = start_service(
        procs,
        "flywheel-hardening",
        stack,
        home,
        name,
        FLYWHEEL_PROFILING="on",
        FLYWHEEL_WATCH_INTERVAL_S="1",
        FLYWHEEL_PROFILE_QUEUE_ROWS=str(PROFILE_QUEUE_ROWS),
        FLYWHEEL_PROFILE_STALL_S=str(PROFILER_STALL_S),
    )
    startup = wait_ready(server, "/ready", 180)
    time.sleep(2)  # the profiling process imports whylogs after the app is up: let it settle, not count it
    print(f"  ready in {startup:.1f} s: {' '.join(server.process.args)}", flush=True)  # type: ignore[arg-type]
    battery = Battery(
        plan, home, procs, wrk, server, limits, name, champion, trained, record, records, bodies
    )
    families = [run_family(battery, fam, fn) for fam, fn in FAMILIES]
    return {
        "model": {"name": name, "version": champion, "train_rows": trained.sample_rows},
        "service_command": list(server.process.args),  # type: ignore[arg-type]
        "server_limits": limits.model_dump(),
        "startup_s": startup,
        "families": [
            {**f.row(), "failures": f.failures, "notes": f.notes, "details": f.details} for f in families
        ],
        "bodies": {k: str(v) for k, v in bodies.items()},
    }


# ---------------------------------------------------------------------------------------- before / after


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _comparison_command(port: int, limits: list[str]) -> list[str]:
    """The local deployer's command line (before the hardening it had no limit flags)."""
    return [
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
        "--no-access-log",
        *limits,
    ]


def compare(
    plan: Plan,
    home: Path,
    procs: Processes,
    wrk: Wrk,
    ref: str,
    model: str,
    single: Path,
    check_identity: bool = True,
    same_flags: bool = False,
) -> dict[str, Any]:
    """Baseline (a worktree of ``ref``) and current service, same home and model, profiling off; wrk phases
    interleaved: baseline then current, at c=1 then c=16, ``plan.reps`` times. ``check_identity`` asks
    each side whether it runs the code expected of it (only the hardened service refuses text/plain);
    ``same_flags`` starts the baseline with the current server flags too (a baseline that has them)."""
    from stacks.components.deployers.server_options import server_limits, uvicorn_flags
    from stacks.loader import load_stack

    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    folder = Path(tempfile.mkdtemp(prefix="flywheel-baseline-"))
    tree = folder / "tree"
    print(f"\nbefore / after: a worktree of {ref} ({commit[:10]}) in {tree} ...", flush=True)
    _git("worktree", "add", "--detach", str(tree), commit)
    sides: dict[str, Server] = {}
    try:
        env = {
            **_inherited_env(),
            "FLYWHEEL_HOME": str(home),
            "FLYWHEEL_STACK": "local",
            "FLYWHEEL_MODEL": model,
            "FLYWHEEL_PROFILING": "off",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "WHYLOGS_NO_ANALYTICS": "True",
        }
        limits = uvicorn_flags(server_limits(load_stack("local")))
        # a baseline from before the hardening has no protocol class to name: it runs uvicorn's own
        has_protocol = (tree / "serving" / "server_protocol.py").exists()
        baseline_flags = limits if same_flags and has_protocol else []
        if same_flags and not has_protocol:
            print(f"  {ref} has no serving/server_protocol.py: its service runs without the limit flags")
        commands = {"baseline": (tree, baseline_flags), "current": (ROOT, limits)}
        phases: list[dict[str, Any]] = []
        identity: dict[str, int | None] = {}
        for rep in range(plan.reps):
            # fresh processes every repeat: one process's hash seed and memory layout moved its CPU per
            # request by up to 5% for all of its life (measured), which one process per side would take
            # for the difference between the two
            for side, (cwd, flags) in commands.items():
                port = free_port()
                command = _comparison_command(port, flags)
                sides[side] = procs.start(f"compare-{side}-{rep + 1}", command, env, port, cwd=cwd)
            for server in sides.values():
                wait_ready(server, "/ready", 180)
            # which code each one runs: only the current service refuses a text/plain body
            for side, server in sides.items():
                raw = attacks.request_bytes(
                    server.port, "POST", "/predict", single.read_bytes(), "text/plain"
                )
                identity[side] = attacks.send(server.port, raw).status
            if check_identity and (identity["current"] != 415 or identity["baseline"] == 415):
                raise RuntimeError(
                    f"the services do not run the expected code (text/plain answers: {identity})"
                )
            for server in sides.values():
                wrk.run(server.url + "/predict", single, 16, plan.warmup_s)
            for conns in (1, 16):
                for side, server in sides.items():
                    r = wrk.run(
                        server.url + "/predict", single, conns, plan.phase_s, group=server.process.pid
                    )
                    phases.append(
                        {
                            "rep": rep + 1,
                            "side": side,
                            "conns": conns,
                            "requests": r.requests,
                            "req_per_s": r.rps,
                            "p50_ms": r.p50_ms,
                            "p99_ms": r.p99_ms,
                            "failed": r.failed,
                            "srv_cpu_ms/req": r.server_top_cpu_s * 1000 / r.requests if r.requests else 0.0,
                            "other_cores": r.other_cpu_s / r.seconds if r.seconds else 0.0,
                        }
                    )
                    print(
                        f"  rep {rep + 1} {side:<8} c={conns:<2}: {r.rps:,.0f} req/s p50 {r.p50_ms:.3f} ms "
                        f"failed {r.failed}",
                        flush=True,
                    )
            for server in list(sides.values()):
                procs.stop(server)
            sides.clear()
    finally:
        for server in sides.values():  # before their code goes away
            procs.stop(server)
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _git("worktree", "prune")

    def median(side: str, conns: int, key: str) -> float:
        return statistics.median(p[key] for p in phases if p["side"] == side and p["conns"] == conns)

    summary = {
        side: {
            "p50_c1_ms": median(side, 1, "p50_ms"),
            "rps_c16": median(side, 16, "req_per_s"),
            "rps_c1": median(side, 1, "req_per_s"),
            "p99_c16_ms": median(side, 16, "p99_ms"),
            "cpu_ms_c1": median(side, 1, "srv_cpu_ms/req"),
            "cpu_ms_c16": median(side, 16, "srv_cpu_ms/req"),
        }
        for side in ("baseline", "current")
    }
    return {
        "ref": ref,
        "commit": commit,
        "identity_text_plain": identity,
        "phases": phases,
        "summary": summary,
        "p50_ratio": summary["current"]["p50_c1_ms"] / summary["baseline"]["p50_c1_ms"],
        "rps_ratio": summary["current"]["rps_c16"] / summary["baseline"]["rps_c16"],
        "cpu_ratio_c1": summary["current"]["cpu_ms_c1"] / summary["baseline"]["cpu_ms_c1"],
        "cpu_ratio_c16": summary["current"]["cpu_ms_c16"] / summary["baseline"]["cpu_ms_c16"],
        "current_limit_flags": limits,
        "baseline_flags": baseline_flags,
    }


# ------------------------------------------------------------------------------------------------ report


def _report(p: dict[str, Any]) -> None:
    print()
    print(
        table(
            "Hardening battery: the service under attack (RSS: the uvicorn process and its children, MB; "
            f"hangs: no answer within {attacks.HANG_S:g} s)",
            [
                {k: v for k, v in f.items() if k not in ("failures", "notes", "details")}
                for f in p["families"]
            ],
        )
    )
    for f in p["families"]:
        print(f"\n{f['family']}: {f['verdict']}")
        for line in f["notes"]:
            print(f"  {line}")
        for why in f["failures"][:25]:
            print(f"  FAIL: {why[:600]}")
        if len(f["failures"]) > 25:
            print(f"  ... and {len(f['failures']) - 25} more (see the JSON copy)")
    amp = next((f for f in p["families"] if f["family"] == "amplification"), None)
    lines = []
    if amp and "ratio" in amp["details"]:
        d = amp["details"]
        same = d["control_ratio"] * SAME_COST
        lines += [
            (
                "amplification, empty-record flood: normal req/s / alone",
                d["ratio"],
                f">= {SAME_COST} x {d['control_ratio']:.2f}",
                d["ratio"] >= same,
            ),
            (
                "  (the same beside 8 clients of valid rows; reported)",
                d["control_ratio"],
                f"{AMPLIFICATION_TARGET}x solo",
                d["control_ratio"] >= AMPLIFICATION_TARGET,
            ),
            (
                "amplification, 100,000-key flood: normal req/s / alone",
                d["keys_ratio"],
                f"{AMPLIFICATION_TARGET}x solo",
                d["keys_ratio"] >= AMPLIFICATION_TARGET,
            ),
            (
                "server CPU of a 422 (1,000 empty) / of scoring 1,000 rows",
                d["server_cpu_ms_per_422"] / max(d["server_cpu_ms_per_1000_row_batch"], 1e-9),
                "<= 1",
                d["server_cpu_ms_per_422"] <= d["server_cpu_ms_per_1000_row_batch"],
            ),
            (
                "server CPU of a 422 (100,000 keys) / of scoring 1,000 rows",
                d["server_cpu_ms_per_keys_422"] / max(d["server_cpu_ms_per_1000_row_batch"], 1e-9),
                "<= 1",
                d["server_cpu_ms_per_keys_422"] <= d["server_cpu_ms_per_1000_row_batch"],
            ),
            (
                "server CPU of a 422 (100,000 keys) / of scoring the same bytes",
                d["server_cpu_ms_per_keys_422"] / max(d["server_cpu_ms_per_same_size_valid_batch"], 1e-9),
                "<= 1",
                d["server_cpu_ms_per_keys_422"] <= d["server_cpu_ms_per_same_size_valid_batch"],
            ),
            (
                "  the same, each less its JSON decoding",
                beyond_decoding(d),
                "<= 1",
                beyond_decoding(d) <= 1,
            ),
        ]
    c = p.get("comparison")
    if c and "summary" in c:
        lines += comparison_lines(c)
    elif c:
        print(f"\nbefore / after: not measured: {c.get('error')}")
    if lines:
        print("\nRatios (this run):")
        for name, value, target, ok in lines:
            print(ratio_line(name, value, target, ok))
    if c and "summary" in c:
        print(
            "  context: the serving process's CPU per request, current / baseline: "
            f"{c['cpu_ratio_c1']:.3f} at c=1, {c['cpu_ratio_c16']:.3f} at c=16; other processes used up to "
            f"{max(x['other_cores'] for x in c['phases']):.2f} cores during a phase"
        )
    p["ratios"] = [{"name": n, "value": v, "target": t, "met": ok} for n, v, t, ok in lines]
    failed = [f["family"] for f in p["families"] if f["verdict"] != "PASS"]
    print(f"\nfamilies not passed: {', '.join(failed) if failed else 'none'}")
    print(f"load average: start {p['load_average_start']}, end {p['load_average_end']}")


def comparison_lines(c: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """Print the before / after tables of :func:`compare`'s result; its ratio lines against the target."""
    s = c["summary"]
    rows = [
        {
            "service": f"{side} ({c['commit'][:10]})" if side == "baseline" else "current (working tree)",
            "p50_c1_ms": s[side]["p50_c1_ms"],
            "req_per_s_c1": s[side]["rps_c1"],
            "req_per_s_c16": s[side]["rps_c16"],
            "p99_c16_ms": s[side]["p99_c16_ms"],
            "srv_cpu_ms/req_c1": s[side]["cpu_ms_c1"],
            "srv_cpu_ms/req_c16": s[side]["cpu_ms_c16"],
        }
        for side in ("baseline", "current")
    ]
    print()
    print(
        table(
            f"Before / after: single-row /predict, profiling off, medians of the repeats ({c['ref']})", rows
        )
    )
    print(table("   every phase, in the order run", c["phases"]))
    return [
        (
            "current / baseline: single-row p50 at c=1",
            c["p50_ratio"],
            f"<= {1 + WITHIN:.2f}",
            c["p50_ratio"] <= 1 + WITHIN,
        ),
        (
            "current / baseline: requests/s at c=16",
            c["rps_ratio"],
            f">= {1 - WITHIN:.2f}",
            c["rps_ratio"] >= 1 - WITHIN,
        ),
    ]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")[:300]
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def main(quick: bool = False, baseline: str = BASELINE_REF, keep_home: bool = False) -> dict[str, Any]:
    import logging

    plan = Plan.make(quick)
    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-hardening-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    os.environ["FLYWHEEL_STACK"] = "local"
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # the slow-client family holds 600 sockets at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    from flows.runtime import prepare_prefect

    prepare_prefect("local")
    wrk = Wrk(home)
    print(
        f"Hardening benchmark{' (quick)' if quick else ''}: {plan.train_rows:,} training flights, phases "
        f"{plan.phase_s:g} s, {plan.reps} comparison repeat(s); baseline {baseline}; home {home}\n"
        f"{os.cpu_count()} cores, load average {_loadavg()}; {' '.join(wrk.version)}\n",
        flush=True,
    )
    payload: dict[str, Any] = {"plan": asdict(plan), "quick": quick, "load_average_start": _loadavg()}
    ok = False
    try:
        with Processes(home / "logs") as procs:
            payload |= _battery(plan, home, procs, wrk)
            if baseline.lower() not in ("", "none"):
                try:
                    payload["comparison"] = compare(
                        plan,
                        home,
                        procs,
                        wrk,
                        baseline,
                        payload["model"]["name"],
                        Path(payload["bodies"]["single"]),
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    payload["comparison"] = {"ref": baseline, "error": f"{type(exc).__name__}: {exc}"}
                    traceback.print_exc()
            ports = list(procs.ports)
        left = listening(ports)
        payload["ports_still_listening"] = left
        print(f"\nservers stopped; ports listening after the run: {left or 'none'}")
        payload["load_average_end"] = _loadavg()
        _report(payload)
        ok = not left
    finally:
        if ok and not keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"\nkept {home} (server logs under logs/)", file=sys.stderr)
    name = "hardening-quick" if quick else "hardening"
    saved = save(name, json.loads(json.dumps(payload, default=_jsonable)), Path.cwd() / ".flywheel")
    print(f"\nsaved {saved}")
    return payload
