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
queue, backing off from 0.5 s to 30 s while it keeps dying. A failed write in the process (a full disk, a
permission) costs the rows of that write, counted, not the process: a transient error must not become a
crash loop. Every lost row is counted by reason (``flywheel_profile_dropped_rows_total``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.queues as mpq
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving.metrics import PROFILE_DROP_REASONS, ServiceMetrics

log = logging.getLogger("flywheel.serving.profiling")
_STOP = "stop"

# restart delays: doubling from the first to the last while the process keeps dying; a process that stayed
# up STABLE_S before it died restarts after the first delay again
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0
SUPERVISE_EVERY_S = 0.2

# the int64s a profiling process shares with its recorder, each written by the process only: cumulative
# rows taken from its queue, rows it holds (taken, not yet written), cumulative rows lost to failed writes,
# and 1 once it is loaded and taking rows
_TAKEN, _HELD, _FAILED, _READY = range(4)


@dataclass(frozen=True)
class ProfilerConfig:
    stack: str | None
    home: str | None
    model_name: str
    batch_rows: int
    window_s: int
    queue_rows: int


def window_name(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")


def profile_path(model_name: str, version: str, start: int, writer: str) -> str:
    return f"serving/{model_name}/v{version}/profiles/{window_name(start)}-{writer}.bin"


class _Inbox(mpq.Queue):  # type: ignore[type-arg]
    """A profiling process's queue. Once that process is gone, the feeder thread's broken pipes are
    expected (what it still holds is counted as dropped), not worth a traceback per message."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(0, ctx=ctx)
        self.discarded = False

    def _on_queue_feeder_error(self, e: Exception, obj: Any) -> None:
        if not getattr(self, "discarded", False):
            log.warning("profiling: a message could not be handed to the profiling process (%s)", e)

    def discard(self) -> None:
        """Abandon the queue without blocking: the feeder thread may be stuck writing into a full pipe
        whose reader died. Closing our copy of the reader (the stdlib has no public way) breaks that
        pipe, so the thread drops what it buffers and exits, and the memory goes with it."""
        self.discarded = True
        self.cancel_join_thread()
        self.close()
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
            ids.extend([request_id] if n == 1 else [f"{request_id}:{i}" for i in range(n)])
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
        return _Process(process, inbox, state, error, time.monotonic())

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
                with self._lock:
                    self._collect(worker)
                if not alive:
                    self._bury(worker)
            elif self._restart_at is not None and time.monotonic() >= self._restart_at:
                self._restart()

    def _bury(self, worker: _Process) -> None:
        """A dead process: what it queued or held is lost; a restart is scheduled after the backoff."""
        worker.process.join(timeout=1.0)
        uptime = time.monotonic() - worker.started
        if uptime >= STABLE_S:
            self._delay = RESTART_FIRST_S
        code = worker.process.exitcode
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        with self._lock:
            self._collect(worker)
            lost = worker.lost()
            self._drop(lost, "worker_died")
            self._worker = None
            self._restart_at = time.monotonic() + self._delay
            what = f"profiling process died ({how}) after {uptime:.1f} s"
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
        worker.inbox.put_nowait(_STOP)
        worker.process.join(timeout=timeout)
        if worker.process.is_alive():
            worker.process.kill()  # it ignores SIGTERM (see _worker)
            worker.process.join(timeout=5.0)
        with self._lock:
            self._collect(worker)
            self._drop(worker.lost(), "shutdown")
        worker.inbox.discard()  # empty after a clean exit; never blocks after a kill


class _Window:
    def __init__(self) -> None:
        self.view: Any = None
        self.rows = 0


def _note(error: Any, text: str) -> None:
    error.value = text.encode("utf-8", "replace")[: len(error) - 1].replace(b"\0", b" ")


def _rows_of(message: Any) -> int:
    if message[0] == "rows":
        return len(message[5])
    if message[0] == "feedback":
        return len(message[3])
    return 0


def _worker(config: ProfilerConfig, inbox: Any, state: Any, error: Any) -> None:  # pragma: no cover
    """The profiling process. A fatal error is left in ``error`` for the supervisor's report."""
    # Ctrl-C or a SIGTERM to the whole process group must not kill the profiler before the server's
    # shutdown sends STOP (the open window would be lost); it exits on STOP, or when its parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"
    )
    try:
        _profile_traffic(config, inbox, state, error)
    except BaseException as exc:
        _note(error, f"{type(exc).__name__}: {exc}")
        raise


def _profile_traffic(config: ProfilerConfig, inbox: Any, state: Any, error: Any) -> None:  # pragma: no cover
    # background work: where cores are scarce the scheduler serves requests first; the queue absorbs the
    # lag, and a full queue drops rows (counted), never requests
    with contextlib.suppress(OSError):
        os.nice(10)
    parent = os.getppid()
    if config.home:
        os.environ["FLYWHEEL_HOME"] = config.home
    import pandas as pd

    from stacks.components.artifact_store import ArtifactStore
    from stacks.components.data_validator import WhylogsValidator
    from stacks.loader import load_stack, selected_stack_name

    stack = load_stack(selected_stack_name(config.stack))
    store = ArtifactStore.from_stack(stack)
    validator = WhylogsValidator.from_stack(stack)
    # whylogs (and what it imports) loads on first use: seconds of CPU that would otherwise land on the
    # first window of traffic, beside the server, instead of at start-up
    validator.profile(pd.DataFrame({"warm_up": [0.0, 1.0]}))
    profiler = _Profiler(config, store, validator, state, error)
    state[_READY] = 1
    last_flush = time.monotonic()
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            message = None
        if message == _STOP or (message is None and os.getppid() != parent):
            profiler.flush(everything=True)
            return
        if message is not None:
            profiler.take(message)
        if profiler.pending_rows >= config.batch_rows or time.monotonic() - last_flush > 5.0:
            profiler.flush(everything=False)
            last_flush = time.monotonic()


class _Profiler:  # pragma: no cover - runs in the child process
    """The profiling process's state: rows waiting for a micro-batch, open windows, feedback labels.

    A failed write (or a batch that fails to decode or profile) logs one line and counts its rows in
    ``state[_FAILED]``; the process carries on with the next batch."""

    def __init__(self, config: ProfilerConfig, store: Any, validator: Any, state: Any, error: Any) -> None:
        import pandas as pd

        self.pd = pd
        self.config = config
        self.store = store
        self.validator = validator
        self.state = state
        self.error = error
        self.writer = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pending: dict[tuple[str, int], list[Any]] = {}
        self.pending_rows = 0
        self.windows: dict[tuple[str, int], _Window] = {}
        self.feedback: list[dict[str, Any]] = []
        self.schemas: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
        self.written = 0

    def held(self) -> int:
        """Rows taken and not yet in a written window profile (or, for labels, a written file)."""
        return self.pending_rows + len(self.feedback) + sum(w.rows for w in self.windows.values())

    def lost(self, rows: int, what: str, exc: BaseException) -> None:
        self.state[_FAILED] += rows
        text = f"{what} failed ({type(exc).__name__}: {exc}); {rows} rows lost"
        log.warning("%s", text)
        _note(self.error, text)

    def take(self, message: Any) -> None:
        rows = _rows_of(message)
        # held before taken: a kill between the two counts these rows twice, never zero times
        self.state[_HELD] = self.held() + rows
        self.state[_TAKEN] += rows
        try:
            self._take(message)
        except Exception as exc:
            self.lost(rows, f"decoding a {message[0]} message", exc)
        self.state[_HELD] = self.held()

    def _take(self, message: Any) -> None:
        pd = self.pd
        if message[0] == "schema":
            _, version, columns, categories = message
            self.schemas[version] = (columns, categories)
        elif message[0] == "rows":
            _, version, ids, stamps, features, predictions = message
            columns, categories = self.schemas[version]
            frame = pd.DataFrame(features, columns=columns)
            for name, values in categories.items():
                codes = frame[name].to_numpy()
                decoded = np.full(len(codes), None, dtype=object)
                ok = ~np.isnan(codes)
                decoded[ok] = np.asarray(values, dtype=object)[codes[ok].astype(int)]
                frame[name] = decoded
            frame["prediction"] = predictions
            frame["request_id"] = ids
            frame["ts"] = stamps
            window_s = self.config.window_s
            starts = (np.asarray(stamps) // window_s * window_s).astype(int)
            for start in np.unique(starts):
                part = frame[starts == start]
                self.pending.setdefault((version, int(start)), []).append(part)
            self.pending_rows += len(frame)
        elif message[0] == "feedback":
            _, request_id, ts, labels = message
            ids = [request_id] if len(labels) == 1 else [f"{request_id}:{i}" for i in range(len(labels))]
            self.feedback.extend(
                {"request_id": i, "label": float(v), "ts": ts} for i, v in zip(ids, labels, strict=True)
            )

    def flush(self, everything: bool) -> None:
        self.flush_batches()
        self.close_windows(everything)
        self.state[_HELD] = self.held()

    def flush_batches(self) -> None:
        pd = self.pd
        model = self.config.model_name
        for key, frames in self.pending.items():
            frame = pd.concat(frames, ignore_index=True)
            version, start = key
            try:
                view = self.validator.profile(frame.drop(columns=["request_id", "ts"]))
                window = self.windows.setdefault(key, _Window())
                window.view = view if window.view is None else window.view.merge(view)
                window.rows += len(frame)
            except Exception as exc:
                self.lost(len(frame), f"profiling a batch of v{version}", exc)
            day = window_name(start)[:8]
            path = (
                f"serving/{model}/v{version}/predictions/{day}/{window_name(start)}-"
                f"{self.writer}-{uuid.uuid4().hex[:8]}.parquet"
            )
            try:
                with self.store.open(path, "wb") as handle:
                    frame.to_parquet(handle, index=False)
            except Exception as exc:
                self.lost(len(frame), f"writing the prediction log {path}", exc)
        self.pending.clear()
        self.pending_rows = 0
        if self.feedback:
            day = datetime.now(UTC).strftime("%Y%m%d")
            path = f"serving/{model}/feedback/{day}/{self.writer}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                with self.store.open(path, "wb") as handle:
                    pd.DataFrame(self.feedback).to_parquet(handle, index=False)
            except Exception as exc:
                self.lost(len(self.feedback), f"writing feedback labels {path}", exc)
            self.feedback.clear()

    def close_windows(self, everything: bool) -> None:
        # rows of a window can still be in flight when it ends (buffered, queued): wait a grace period, and
        # never overwrite a file if late rows reopen a window: readers merge every file of a window
        now = time.time()
        grace = max(5.0, self.config.window_s / 2)
        for key in list(self.windows):
            version, start = key
            if everything or start + self.config.window_s + grace <= now:
                window = self.windows.pop(key)
                if window.view is None:
                    continue
                self.written += 1
                path = profile_path(self.config.model_name, version, start, f"{self.writer}-{self.written}")
                try:
                    self.store.write_bytes(path, self.validator.to_bytes(window.view))
                except Exception as exc:
                    self.lost(window.rows, f"writing the window profile {path}", exc)
