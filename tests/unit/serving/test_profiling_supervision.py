"""The profiling process under failure: killed, failing writes, stalled; each against a real process.

Every row the recorder is given is either in a written window profile or counted as dropped, whatever
happens to the process: that identity is what these tests check, with the process's own files.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest

from serving.metrics import ServiceMetrics
from serving.profiling import ProfilerConfig, TrafficRecorder
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from tests.unit.serving.conftest import wait_for

MODEL = "probe"
CATEGORIES = {"carrier": ["AA", "DL", "UA"]}


def columns(width: int) -> list[str]:
    return ["carrier", *[f"x{i}" for i in range(width - 1)]]


def batch(rows: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encoded rows as the service hands them over: float32, the first column a category code."""
    rng = np.random.default_rng(seed)
    features = rng.random((rows, width), dtype=np.float32)
    features[:, 0] = rng.integers(0, len(CATEGORIES["carrier"]), rows)
    return features, rng.random(rows)


@pytest.fixture
def start(home: Path) -> Iterator[Callable[..., tuple[TrafficRecorder, ServiceMetrics]]]:
    """A recorder on the local stack of a fresh home, its profiling process loaded; closed afterwards."""
    started: list[TrafficRecorder] = []

    def make(
        queue_rows: int = 200_000, batch_rows: int = 100, stall_s: float = 60.0
    ) -> tuple[TrafficRecorder, ServiceMetrics]:
        config = ProfilerConfig(
            stack=None,
            home=str(home),
            model_name=MODEL,
            batch_rows=batch_rows,
            window_s=2,
            queue_rows=queue_rows,
            stall_s=stall_s,
        )
        metrics = ServiceMetrics()
        recorder = TrafficRecorder(config, metrics)
        started.append(recorder)
        assert wait_for(lambda: recorder.health()["ready"], 60), recorder.health()
        return recorder, metrics

    yield make
    for recorder in started:
        pid = recorder.pid
        if pid is not None:  # a test that failed with its process stopped must not hang the close
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        recorder.close(timeout=20)


def profiled_rows(home: Path) -> int:
    """Rows in the window profiles written under the model (0 when none was)."""
    store = ArtifactStore(str(home / "artifacts"))
    paths = [p for p in store.list(f"serving/{MODEL}/v1/profiles") if p.endswith(".bin")]
    if not paths:
        return 0
    merged = WhylogsValidator.merge([WhylogsValidator.from_bytes(store.read_bytes(p)) for p in paths])
    return int(merged.to_pandas()["counts/n"]["prediction"])


def logged_ids(home: Path) -> set[str]:
    store = ArtifactStore(str(home / "artifacts"))
    paths = [p for p in store.list(f"serving/{MODEL}/v1/predictions") if p.endswith(".parquet")]
    if not paths:
        return set()
    return set(pd.concat([pd.read_parquet(store.uri(p)) for p in paths])["request_id"])


def dropped(metrics: ServiceMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("flywheel_profile_dropped_rows_total", {"reason": reason})
    return float(value or 0.0)


@pytest.mark.slow
def test_a_killed_process_is_restarted_and_every_row_it_lost_is_counted(start: Any, home: Path) -> None:
    recorder, metrics = start()
    width = 6
    names = columns(width)
    sent = 0

    def record(prefix: str, count: int, rows: int = 50, pause: float = 0.0) -> None:
        nonlocal sent
        for i in range(count):
            features, predictions = batch(rows, width, seed=sent)
            recorder.record("1", f"{prefix}-{i}", features, predictions, names, CATEGORIES)
            sent += len(predictions)
            time.sleep(pause)

    record("before", 8, rows=128)  # the recorder hands over every 256 rows: nothing left in its buffer
    assert wait_for(lambda: recorder.depth() == 0, 10)  # taken: now held in the process's memory
    first = recorder.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    record("during", 10, pause=0.05)  # into the dead process's queue, then refused while it is down

    assert wait_for(lambda: recorder.pid not in (None, first) and recorder.health()["ready"], 30)
    health = recorder.health()
    assert health["alive"] and health["restarts"] == 1, health
    assert "SIGKILL" in (health["last_error"] or ""), health
    assert metrics.registry.get_sample_value("flywheel_profiler_up") == 1
    assert metrics.registry.get_sample_value("flywheel_profiler_restarts_total") == 1
    died = dropped(metrics, "worker_died")
    assert died >= 1024, health  # at least the rows the killed process had taken
    assert health["dropped_by_reason"]["worker_died"] == died

    record("after", 10)
    recorder.close()
    assert metrics.registry.get_sample_value("flywheel_profiler_up") == 0
    ids = logged_ids(home)
    assert {f"after-{i}:49" for i in range(10)} <= ids  # the restarted process writes
    lost = sum(dropped(metrics, r) for r in ("queue_full", "worker_died", "write_failed", "shutdown"))
    assert dropped(metrics, "shutdown") == 0
    assert profiled_rows(home) + lost == sent


def test_b_a_failing_write_costs_its_rows_not_the_process(start: Any, home: Path) -> None:
    # a file where the store needs a folder: a real write failure that holds for root too (permissions
    # do not stop root, and these tests may run as root)
    blocker = home / "artifacts" / "serving" / MODEL / "v1" / "predictions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    recorder, metrics = start()
    width = 4
    names = columns(width)
    pid = recorder.pid
    for i in range(3):
        features, predictions = batch(100, width, seed=i)
        recorder.record("1", f"failed-{i}", features, predictions, names, CATEGORIES)
    assert wait_for(lambda: recorder.health()["dropped_by_reason"]["write_failed"] == 300, 20)
    health = recorder.health()
    assert health["alive"] and health["restarts"] == 0 and recorder.pid == pid, health
    assert "prediction log" in (health["last_error"] or ""), health
    assert dropped(metrics, "write_failed") == 300

    blocker.unlink()  # the store recovers: the same process writes again
    features, predictions = batch(100, width, seed=9)
    recorder.record("1", "later", features, predictions, names, CATEGORIES)
    recorder.close()
    assert recorder.health()["restarts"] == 0
    assert logged_ids(home) == {f"later:{i}" for i in range(100)}
    assert profiled_rows(home) == 400  # profiling itself never failed: only the logs of 300 rows were lost
    assert dropped(metrics, "write_failed") == 300 and dropped(metrics, "worker_died") == 0


def test_c_a_stalled_process_bounds_rows_in_flight_and_the_servers_memory(start: Any, home: Path) -> None:
    limit = 10_000
    width = 50
    recorder, metrics = start(queue_rows=limit, batch_rows=5_000)
    names = columns(width)
    features, predictions = batch(1000, width)
    pid = recorder.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive, but takes nothing
    try:
        time.sleep(0.2)
        gc.collect()
        me = psutil.Process()
        before = me.memory_info().rss
        peak = 0
        requests = 600
        for i in range(requests):
            recorder.record("1", f"req-{i:06d}", features.copy(), predictions.copy(), names, CATEGORIES)
            peak = max(peak, recorder.depth())
        grown = me.memory_info().rss - before
        health = recorder.health()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert peak <= limit and health["queued_rows"] == peak, health
    assert health["queue_limit_rows"] == limit
    assert health["dropped_by_reason"]["queue_full"] == requests * 1000 - peak, health
    assert dropped(metrics, "queue_full") == requests * 1000 - peak
    assert health["alive"] and health["restarts"] == 0  # stalled is not dead
    # what the bound allows in memory: the features (4 bytes a value), the prediction, the time stamp's
    # slot and a request id string per row; everything past it must have been dropped, not buffered
    per_row = width * 4 + 8 + 8 + 100
    assert grown < limit * per_row + 50 * 2**20, (grown, limit * per_row)
    recorder.close()
    assert profiled_rows(home) == peak  # once running again, it profiles what it was handed


@pytest.mark.slow
def test_e_a_hung_process_is_killed_and_restarted_and_its_rows_counted(start: Any, home: Path) -> None:
    """SIGSTOP: alive, taking nothing. Once rows have waited ``stall_s`` with none taken, the supervisor
    kills it and starts another, as for one that died; a stop shorter than that is left alone."""
    stall_s = 1.0  # under a restarted process's start-up (2-5 s): that must not count as a stall
    recorder, metrics = start(stall_s=stall_s, batch_rows=100)
    width = 4
    names = columns(width)
    sent = 0

    def record(prefix: str, count: int, rows: int = 64) -> None:
        nonlocal sent
        for i in range(count):
            features, predictions = batch(rows, width, seed=sent)
            recorder.record("1", f"{prefix}-{i}", features, predictions, names, CATEGORIES)
            sent += len(predictions)

    first = recorder.pid
    assert first is not None
    # a short stop with rows waiting (under the bound): the same process carries on
    os.kill(first, signal.SIGSTOP)
    record("short", 4)  # 256 rows: one hand-over
    time.sleep(stall_s / 4)
    os.kill(first, signal.SIGCONT)
    assert wait_for(lambda: recorder.depth() == 0, 10), recorder.health()
    assert recorder.pid == first and recorder.health()["restarts"] == 0

    os.kill(first, signal.SIGSTOP)
    stopped = time.monotonic()
    record("stopped", 8)  # 512 rows waiting for it
    assert wait_for(lambda: recorder.pid not in (None, first), 60)
    took = time.monotonic() - stopped
    # rows keep coming while its replacement starts up (taking none, by design, for seconds): not a hang
    deadline = time.monotonic() + 60
    while not recorder.health()["ready"] and time.monotonic() < deadline:
        record("starting", 1)
        time.sleep(0.1)
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    health = recorder.health()
    assert stall_s <= took, took
    assert health["alive"] and health["restarts"] == 1 and health["hung_killed"] == 1, health
    assert "hung" in (health["last_error"] or ""), health
    assert metrics.registry.get_sample_value("flywheel_profiler_restarts_total") == 1
    assert dropped(metrics, "worker_died") >= 512, health  # what it had waiting, at least

    record("after", 4)
    recorder.close()
    ids = logged_ids(home)
    assert {f"after-{i}:63" for i in range(4)} <= ids  # the new process writes
    lost = sum(dropped(metrics, r) for r in ("queue_full", "worker_died", "write_failed", "shutdown"))
    assert profiled_rows(home) + lost == sent


@pytest.mark.slow
def test_d_a_crash_loop_backs_off_and_says_why(home: Path) -> None:
    # a process that cannot start (its stack does not exist) dies each time: restarts after 0.5 s, 1 s, ...
    config = ProfilerConfig(
        stack="no-such-stack", home=str(home), model_name=MODEL, batch_rows=100, window_s=2, queue_rows=1000
    )
    metrics = ServiceMetrics()
    recorder = TrafficRecorder(config, metrics)
    delays: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 25
        while len(delays) < 3 and time.monotonic() < deadline:
            health = recorder.health()
            if health["restart_in_s"] is not None:
                delays[health["restarts"]] = max(delays.get(health["restarts"], 0.0), health["restart_in_s"])
            features, predictions = batch(10, 4)
            recorder.record("1", "while-down", features, predictions, columns(4), CATEGORIES)
            time.sleep(0.02)
        health = recorder.health()
    finally:
        recorder.close(timeout=10)
    assert sorted(delays) == [0, 1, 2], delays
    for restarts, delay in zip((0, 1, 2), (0.5, 1.0, 2.0), strict=True):
        assert delay - 0.2 <= delays[restarts] <= delay, delays
    assert "before it was ready" in health["last_error"] and "no-such-stack" in health["last_error"], health
    assert metrics.registry.get_sample_value("flywheel_profiler_restarts_total") == health["restarts"] >= 2
    assert health["dropped_by_reason"]["worker_died"] > 0  # rows recorded meanwhile: refused, counted
