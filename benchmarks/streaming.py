"""The serving benchmark's streaming part: ``flywheel stream serve`` on a real redis-server, profiling on.

Records go into the request stream at steady rates (a producer in this process, one pipelined ``XADD``
batch every 10 ms), then as one burst as fast as Redis takes them (the consumer's capacity). End-to-end
latency is a prediction entry's id minus its request entry's id: both are Redis server times in ms, so it
counts the wait in the stream, the read, validation, scoring and the committed write, at 1 ms resolution.
Redis is Debian's ``redis-server`` (installed by scripts/apt-install.sh when missing), on a free port,
stopped with the rest of the benchmark's processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from benchmarks.serving_procs import Processes, free_port, group_cpu, processes, wait_ready
from flywheel.contracts.stream import MODEL_VERSION_FIELD, RECORD_FIELD, SOURCE_ID_FIELD
from stacks.config import RedisStreamConfig
from stacks.loader import load_stack

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.01


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "apt-install.sh"), "redis-server", "redis-server"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return out.stdout.strip().splitlines()[-1]


def _ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _produce(r: Any, stream: str, records: list[bytes], rate: float | None, seconds: float) -> list[bytes]:
    """Send at ``rate`` records/s for ``seconds`` (cycling through ``records``), or all of ``records`` at
    once when ``rate`` is None; the ids sent."""
    ids: list[bytes] = []
    if rate is None:
        for start in range(0, len(records), 1000):
            pipe = r.pipeline(transaction=False)
            for body in records[start : start + 1000]:
                pipe.xadd(stream, {RECORD_FIELD: body})
            ids += pipe.execute()
        return ids
    total = int(rate * seconds)
    started = time.monotonic()
    i = 0
    while i < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        if due > i:
            pipe = r.pipeline(transaction=False)
            for k in range(i, due):
                pipe.xadd(stream, {RECORD_FIELD: records[k % len(records)]})
            ids += pipe.execute()
            i = due
        time.sleep(TICK_S)
    return ids


def _await(r: Any, stream: str, after: bytes, count: int, limit_s: float) -> list[tuple[bytes, dict]]:
    """The ``count`` prediction entries after id ``after`` (waiting up to ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if r.xlen(stream) and len(got := r.xrange(stream, min=b"(" + after)) >= count:
            return list(got)
        time.sleep(0.05)
    return list(r.xrange(stream, min=b"(" + after))


SOURCE = SOURCE_ID_FIELD.encode()


def _row(case: str, sent: list[bytes], out: list[tuple[bytes, dict]], cpu_s: float) -> dict[str, Any]:
    sent_at = {i: _ms(i) for i in sent}
    latency = np.array([_ms(i) - sent_at[f[SOURCE]] for i, f in out if f[SOURCE] in sent_at])
    span_s = max(1e-3, (_ms(out[-1][0]) - _ms(sent[0])) / 1000) if out and sent else float("nan")
    return {
        "input": case,
        "sent": len(sent),
        "predicted": len({f[SOURCE] for _, f in out}),
        "records_per_s": len(out) / span_s,
        "p50_ms": float(np.percentile(latency, 50)) if latency.size else float("nan"),
        "p95_ms": float(np.percentile(latency, 95)) if latency.size else float("nan"),
        "p99_ms": float(np.percentile(latency, 99)) if latency.size else float("nan"),
        "max_ms": float(latency.max()) if latency.size else float("nan"),
        "consumer_cores": cpu_s / span_s,
    }


def measure(
    home: Path, procs: Processes, env: dict[str, str], model: str, records: list[dict[str, Any]], quick: bool
) -> dict[str, Any]:
    """Steady rates then a burst through one consumer (batch 100, profiling on); the table's rows."""
    import redis

    port = free_port()
    data = home / "redis"
    data.mkdir(exist_ok=True)
    command = [_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
    redis_server = procs.start("redis", [*command, "--appendonly", "no"], env, port)
    url = f"redis://127.0.0.1:{port}/0"
    r: Any = redis.Redis.from_url(url)
    for _ in range(300):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    metrics_port = free_port()
    doc = load_stack("local").to_dict()
    doc["components"]["stream"] = {
        "name": "redis-bench",
        "flavor": "redis",
        "configuration": {"url": url, "metrics_port": metrics_port},
    }
    stack = home / "stream-stack.yaml"
    stack.write_text(yaml.safe_dump(doc))
    flywheel = str(Path(sys.executable).parent / "flywheel")
    consumer = procs.start(
        "stream-consumer",
        [flywheel, "stream", "serve", "--stack", str(stack), "--model", model, "--name", "bench"],
        {**env, "FLYWHEEL_PROFILING": "on"},
        metrics_port,
    )
    startup = wait_ready(consumer, "/metrics", 180)
    requests, predictions, dead = RedisStreamConfig(url=url).stream_names(model)
    bodies = [orjson.dumps(rec) for rec in records]
    rates = (500.0,) if quick else (500.0, 1000.0, 2000.0, 4000.0)
    seconds = 3.0 if quick else 10.0
    rows = []
    _produce(r, requests, bodies[:200], None, 0)  # warm-up: the profiler process starts, caches fill
    time.sleep(2)
    for rate in (*rates, None):
        last = r.xrevrange(predictions, count=1)
        after: bytes = last[0][0] if last else b"0-0"
        before = sum(group_cpu(consumer.process.pid, processes()).values())
        burst = bodies * 2
        sent = _produce(r, requests, bodies, rate, seconds) if rate else _produce(r, requests, burst, None, 0)
        out = _await(r, predictions, after, len(sent), 120)
        cpu = sum(group_cpu(consumer.process.pid, processes()).values()) - before
        case = f"steady {rate:,.0f}/s for {seconds:g} s" if rate else f"burst of {len(sent):,}"
        rows.append(_row(case, sent, out, cpu))
        versions = {f[MODEL_VERSION_FIELD.encode()].decode() for _, f in out}
        print(
            f"  stream {case}: {rows[-1]['records_per_s']:,.0f} records/s, p50 {rows[-1]['p50_ms']:.0f} ms "
            f"p99 {rows[-1]['p99_ms']:.0f} ms (versions {sorted(versions)})",
            flush=True,
        )
        time.sleep(1)
    dead_letters = r.xlen(dead)
    r.close()
    procs.stop(consumer)
    summary = consumer.log.read_text().strip().splitlines()[-1:] if consumer.log.exists() else []
    procs.stop(redis_server)
    return {
        "rows": rows,
        "startup_s": startup,
        "dead_letters": dead_letters,
        "consumer_summary": summary[0] if summary else "",
    }
