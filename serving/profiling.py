"""Traffic profiling off the request path: a bounded queue into a separate, supervised process.

A request only enqueues its encoded rows and predictions (microseconds). A profiling process decodes them,
profiles micro-batches with whylogs, merges them per time window and writes each window to the artifact
store under the model version, with the predictions log and the feedback labels that monitoring joins for
realized performance. A process, not a thread: whylogs holds the GIL, which raised p99 from 17 to 47 ms in
a thread. A full queue drops profiling (counted), never a request.

The queue is bounded by rows in flight (handed over, not yet taken by the process), not by messages: a
message carries 1 row or 1,000, and a bound by messages let a stalled process grow the server by
gigabytes. The process is supervised: a thread of the recorder notices within a fraction of a second that
it is gone (killed, out of memory, a bug), counts what it held as dropped and starts a fresh one on a fresh
queue, backing off from 0.5 s to 30 s while it keeps dying. A process that is alive but hung (stopped,
stuck in a write to a store that never answers) takes no rows: when rows have waited for it and none was
taken for ``ProfilerConfig.stall_s`` once it was ready (or it is not ready ``STARTUP_LIMIT_S`` after its
start), the supervisor kills it and restarts it the same way (counted as a restart, its rows as
``worker_died``, ``last_error`` saying it hung). A failed write in the process (a full disk, a permission)
costs the rows of that write, counted, not the process: a transient error must not become a crash loop.
Every lost row is counted by reason (``flywheel_profile_dropped_rows_total``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.queues as mpq
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.metrics import PROFILE_DROP_REASONS, ServiceMetrics
from serving.profiling_worker import (
    _FAILED,
    _HELD,
    _READY,
    _TAKEN,
    STOP,
    ProfilerConfig,
    _worker,
)
from serving.request_ids import row_ids
from serving.settings import ServiceSettings

log = logging.getLogger("flywheel.serving.profiling")

# restart delays: doubling from the first to the last while the process keeps dying; a process that stayed
# up STABLE_S before it died restarts after the first delay again
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0
SUPERVISE_EVERY_S = 0.2
# a profiling process not ready this long after it was started is hung in its start-up: killed, restarted
STARTUP_LIMIT_S = 180.0


DISCARD_WAIT_S = 0.25
"""How long a discarded queue's feeder thread may take to exit by itself before its pipe is broken: one
with nothing left to write exits in microseconds; one with more than the pipe holds never does (our copy
of the reader keeps the pipe open), and the restart waits no longer than this for it."""


class _Inbox(mpq.Queue):  # type: ignore[type-arg]
    """A profiling process's queue. Once that process is gone, the feeder thread's broken pipes are
    expected (what it still holds is counted as dropped), not worth a traceback per message."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(0, ctx=ctx)
        self.discarded = False

    def _on_queue_feeder_error(self, e: Exception, obj: Any) -> None:
        if not getattr(self, "discarded", False):
            log.warning("profiling: a message could not be handed to the profiling process (%s)", e)

    def discard(self, wait_s: float = DISCARD_WAIT_S) -> None:
        """Abandon the queue without blocking for long: the feeder thread may be stuck writing into a full
        pipe whose reader died. It is given ``wait_s`` to finish by itself (it closes the reader as it
        exits); only a thread still stuck then has the pipe broken under it by closing our copy of the
        reader (the stdlib has no public way), so it drops what it buffers and exits, and the memory goes
        with it. Closing the reader while the thread closes it too raced: a second close of a descriptor
        number that may already be another file's (seen as "Bad file descriptor" in the feeder thread)."""
        self.discarded = True
        self.cancel_join_thread()
        self.close()
        feeder = getattr(self, "_thread", None)  # private; without it, the reader is closed at once
        if feeder is not None:
            feeder.join(wait_s)
            if not feeder.is_alive():
                return
        with contextlib.suppress(Exception):
            self._reader.close()  # type: ignore[attr-defined]


@dataclass
class _Process:
    """One profiling process and what it shares with the recorder; a restart makes a new one."""

    process: Any
    inbox: _Inbox
    state: Any  # the int64s above
    error: Any  # the process's last error, as bytes
    started: float
    sent: int = 0  # rows put into inbox (request side, under the recorder's lock)
    failed_seen: int = 0  # state[_FAILED] already counted as write_failed
    error_seen: bytes = b""
    taken_seen: int = 0  # state[_TAKEN] when the supervisor last saw it move
    progress_at: float = 0.0  # when it last moved, or rows in flight were none (monotonic)

    def stalled_for(self, now: float) -> float:
        """Seconds this process has taken no row while rows were waiting for it (0 when none wait). Its
        start-up (imports, whylogs warmed up: seconds, more on a busy machine) takes no rows by design, so
        the clock starts when it is ready; a start-up that never ends is caught by STARTUP_LIMIT_S."""
        taken = int(self.state[_TAKEN])
        if taken != self.taken_seen or self.sent - taken <= 0 or not self.state[_READY]:
            self.taken_seen, self.progress_at = taken, now
        return now - self.progress_at

    def starting_for(self, now: float) -> float:
        """Seconds since it was started, while it is not ready yet (0 once it is)."""
        return 0.0 if self.state[_READY] else now - self.started

    def in_flight(self) -> int:
        return self.sent - int(self.state[_TAKEN])

    def lost(self) -> int:
        """Rows that never reach the store if the process ends now: queued, and held in its memory."""
        return self.in_flight() + int(self.state[_HELD])


class TrafficRecorder:
    """The request side: rows are buffered in memory and handed over in batches, never blocking.

    One queue message per request would pickle per request in the queue's feeder thread, which holds the
    GIL; batching a few hundred rows per message keeps that cost off the request path. The schema (column
    names, category vocabularies) is sent once per model version, not with every batch (and again to a
    restarted process). A request costs a list append under a lock; the bound on rows in flight is checked
    once per batch, reading a counter the profiling process writes (no cross-process lock).
    """

    def __init__(
        self, config: ProfilerConfig, metrics: ServiceMetrics, batch_rows: int = 256, flush_s: float = 0.5
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.batch_rows = batch_rows
        self.queue_rows = config.queue_rows
        self.restarts = 0
        self.hung = 0  # processes killed for taking no rows for stall_s while rows waited
        self.last_error: str | None = None
        self._ctx = mp.get_context("spawn")
        self._dropped = dict.fromkeys(PROFILE_DROP_REASONS, 0)
        self._dropped_series = {r: metrics.profile_dropped.labels(reason=r) for r in PROFILE_DROP_REASONS}
        self._lock = threading.Lock()
        self._rows: list[tuple[str, float, np.ndarray, np.ndarray]] = []
        self._count = 0
        self._version: str | None = None
        self._schema: tuple[Any, ...] | None = None
        self._closing = False
        self._delay = RESTART_FIRST_S
        self._restart_at: float | None = None
        self._worker: _Process | None = self._spawn()
        metrics.profiler_up.set(1)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, args=(flush_s,), daemon=True)
        self._flusher.start()
        self._supervisor = threading.Thread(target=self._supervise, name="flywheel-profiler-supervisor")
        self._supervisor.daemon = True
        self._supervisor.start()

    def record(
        self,
        version: str,
        request_id: str,
        features: np.ndarray,
        predictions: np.ndarray,
        columns: list[str],
        categories: dict[str, list[str]],
    ) -> None:
        with self._lock:
            if version != self._version:
                self._flush_locked()
                self._schema = ("schema", version, columns, categories)
                self._send(self._schema, 0)
                self._version = version
            self._rows.append((request_id, time.time(), features, predictions))
            self._count += len(predictions)
            if self._count >= self.batch_rows:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._rows or self._version is None:
            return
        refused = self._refusal(self._count)
        if refused is not None:  # decided before the batch is built: an overload costs no more CPU
            self._drop(self._count, refused)
            self._rows, self._count = [], 0
            return
        ids: list[str] = []
        stamps: list[float] = []
        for request_id, ts, _, predictions in self._rows:
            n = len(predictions)
            ids.extend(row_ids(request_id, n))
            stamps.extend([ts] * n)
        features = np.concatenate([r[2] for r in self._rows])
        predictions = np.concatenate([r[3] for r in self._rows])
        self._rows, self._count = [], 0
        self._send(("rows", self._version, ids, stamps, features, predictions), len(predictions))

    def _refusal(self, rows: int) -> str | None:
        """Why ``rows`` more cannot be handed over now (the reason they are dropped), or None."""
        worker = self._worker
        if worker is None:
            return "shutdown" if self._closing else "worker_died"
        if rows and worker.sent - worker.state[_TAKEN] + rows > self.queue_rows:
            return "shutdown" if self._closing else "queue_full"
        return None

    def _send(self, message: tuple[Any, ...], rows: int) -> None:
        """Hand a message over, or drop its rows (counted): no process, or the bound on rows in flight."""
        refused = self._refusal(rows)
        worker = self._worker
        if refused is not None or worker is None:
            self._drop(rows, refused or "worker_died")
            return
        worker.sent += rows  # before the put: the process can never have taken more than was sent
        worker.inbox.put_nowait(message)

    def _drop(self, rows: int, reason: str) -> None:
        if rows > 0:
            self._dropped[reason] += rows
            self._dropped_series[reason].inc(rows)

    def _flush_periodically(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                self._flush_locked()

    def record_shadow(
        self,
        version: str,
        champion: str,
        ids: list[str],
        predictions: np.ndarray,
        champion_predictions: np.ndarray,
    ) -> None:
        """A shadow scoring's rows (``layout.SHADOW_LOG_COLUMNS``): the candidate's predictions beside the
        champion's, by row id. Called by the shadow scorer's thread, once per scoring (every 20 ms at
        most), so it is handed over at once; bounded and counted like traffic rows."""
        with self._lock:
            message = ("shadow", version, champion, ids, time.time(), predictions, champion_predictions)
            self._send(message, len(ids))

    def feedback(self, request_id: str, labels: list[float]) -> None:
        with self._lock:
            self._send(("feedback", request_id, time.time(), labels), len(labels))

    def depth(self) -> int:
        """Rows in flight: handed to the profiling process and not yet taken by it."""
        worker = self._worker
        return 0 if worker is None else max(0, worker.in_flight())

    @property
    def pid(self) -> int | None:
        """The profiling process's pid; None while it is down."""
        worker = self._worker
        return None if worker is None else int(worker.process.pid)

    def health(self) -> dict[str, Any]:
        """Liveness of the profiling process and what profiling lost, for a readiness probe's detail."""
        with self._lock:
            worker = self._worker
            if worker is not None:
                self._collect(worker)
            restart_in = None
            if worker is None and self._restart_at is not None:
                restart_in = round(max(0.0, self._restart_at - time.monotonic()), 1)
            return {
                "alive": worker is not None and bool(worker.process.is_alive()),
                "ready": worker is not None and bool(worker.state[_READY]),
                "pid": None if worker is None else worker.process.pid,
                "restarts": self.restarts,
                "hung_killed": self.hung,
                "stall_limit_s": self.config.stall_s,
                "restart_in_s": restart_in,
                "queued_rows": 0 if worker is None else worker.in_flight(),
                "queue_limit_rows": self.queue_rows,
                "dropped_rows": sum(self._dropped.values()),
                "dropped_by_reason": dict(self._dropped),
                "last_error": self.last_error,
            }

    def _spawn(self) -> _Process:
        inbox = _Inbox(self._ctx)
        state = self._ctx.Array("q", 4, lock=False)
        error = self._ctx.Array("c", 512, lock=False)
        process = self._ctx.Process(
            target=_worker, args=(self.config, inbox, state, error), name="flywheel-profiler", daemon=True
        )
        process.start()
        now = time.monotonic()
        return _Process(process, inbox, state, error, now, progress_at=now)

    def _collect(self, worker: _Process) -> None:
        """Count the rows the process lost to failed writes, and take its last error (under the lock)."""
        failed = int(worker.state[_FAILED])
        if failed > worker.failed_seen:
            self._drop(failed - worker.failed_seen, "write_failed")
            worker.failed_seen = failed
        text = bytes(worker.error.value)
        if text and text != worker.error_seen:
            worker.error_seen = text
            self.last_error = text.decode("utf-8", "replace")

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_EVERY_S):
            worker = self._worker
            if worker is not None:
                alive = worker.process.is_alive()
                now = time.monotonic()
                with self._lock:
                    self._collect(worker)
                    stalled = worker.stalled_for(now)
                    waiting = worker.in_flight()
                if alive and stalled >= self.config.stall_s:
                    self._kill_hung(worker, f"no row taken for {stalled:.1f} s with {waiting} rows waiting")
                elif alive and worker.starting_for(now) >= STARTUP_LIMIT_S:
                    self._kill_hung(worker, f"not ready {worker.starting_for(now):.0f} s after it started")
                elif not alive:
                    self._bury(worker)
            elif self._restart_at is not None and time.monotonic() >= self._restart_at:
                self._restart()

    def _kill_hung(self, worker: _Process, why: str) -> None:
        """A live process that takes nothing: killed (SIGKILL: it ignores SIGTERM, and a stopped process
        acts on nothing else), then buried and restarted like one that died."""
        self.hung += 1
        log.error(
            "profiling process %s hung (%s; stall limit %g s): killing it",
            worker.process.pid,
            why,
            self.config.stall_s,
        )
        with contextlib.suppress(ProcessLookupError, OSError):
            worker.process.kill()
        worker.process.join(timeout=5.0)
        self._bury(worker, f"hung ({why}) and was killed")

    def _bury(self, worker: _Process, how: str | None = None) -> None:
        """A dead process: what it queued or held is lost; a restart is scheduled after the backoff. ``how``
        it ended, when not by itself (default: from its exit code)."""
        worker.process.join(timeout=1.0)
        uptime = time.monotonic() - worker.started
        if uptime >= STABLE_S:
            self._delay = RESTART_FIRST_S
        code = worker.process.exitcode
        if how is None:
            how = (
                f"died (killed by {signal.Signals(-code).name})"
                if code is not None and code < 0
                else f"died (exit code {code})"
            )
        with self._lock:
            self._collect(worker)
            lost = worker.lost()
            self._drop(lost, "worker_died")
            self._worker = None
            self._restart_at = time.monotonic() + self._delay
            what = f"profiling process {how} after {uptime:.1f} s"
            if not worker.state[_READY]:
                what += ", before it was ready"
            if worker.error_seen:
                what += f"; its last error: {worker.error_seen.decode('utf-8', 'replace')}"
            self.last_error = what
        self.metrics.profiler_up.set(0)
        log.error("%s; %d rows lost; restart %d in %.1f s", what, lost, self.restarts + 1, self._delay)
        worker.inbox.discard()
        self._delay = min(self._delay * 2, RESTART_MAX_S)

    def _restart(self) -> None:
        try:
            worker = self._spawn()
        except Exception as exc:  # e.g. out of file descriptors: try again after the next delay
            self.last_error = f"starting the profiling process failed: {type(exc).__name__}: {exc}"
            log.error("%s; next try in %.1f s", self.last_error, self._delay)
            self._restart_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, RESTART_MAX_S)
            return
        with self._lock:
            if self._schema is not None:
                worker.inbox.put_nowait(self._schema)
            self._worker = worker
            self._restart_at = None
            self.restarts += 1
        self.metrics.profiler_restarts.inc()
        self.metrics.profiler_up.set(1)
        log.warning("profiling process restarted (pid %s, restart %d)", worker.process.pid, self.restarts)

    def close(self, timeout: float = 30.0) -> None:
        """Flush: buffered rows go out, and the worker writes its open windows before it exits.

        Every row that could not be handed over or written (no process, the bound reached, a process killed
        at the timeout) is counted as dropped (shutdown)."""
        self._stop.set()
        self._flusher.join(timeout=5.0)
        self._supervisor.join(timeout=10.0)
        with self._lock:
            self._closing = True
            self._flush_locked()
            worker, self._worker = self._worker, None
        self.metrics.profiler_up.set(0)
        if worker is None:
            return
        worker.inbox.put_nowait(STOP)
        worker.process.join(timeout=timeout)
        if worker.process.is_alive():
            worker.process.kill()  # it ignores SIGTERM (see _worker)
            worker.process.join(timeout=5.0)
        with self._lock:
            self._collect(worker)
            self._drop(worker.lost(), "shutdown")
        worker.inbox.discard()  # empty after a clean exit; never blocks after a kill


def start_recorder(settings: ServiceSettings, metrics: ServiceMetrics) -> TrafficRecorder:
    """The traffic recorder of a process serving ``settings.model_name`` (the REST service, the stream
    consumer): windows and batches from the stack's data validator unless the settings override them."""
    import os

    from stacks.loader import load_stack, selected_stack_name

    stack = load_stack(selected_stack_name(settings.stack))
    validator = stack.data_validator.configuration if stack.data_validator else None
    config = ProfilerConfig(
        stack=settings.stack,
        home=os.environ.get("FLYWHEEL_HOME"),
        model_name=settings.model_name,
        batch_rows=validator.profile_batch_size if validator else settings.profile_batch_rows,
        window_s=settings.profile_window_s or (validator.profile_window_seconds if validator else 300),
        queue_rows=settings.profile_queue_rows,
        stall_s=settings.profile_stall_s,
    )
    return TrafficRecorder(config, metrics)
