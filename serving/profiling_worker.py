"""The profiling process: what runs on the other side of the recorder's queue (serving.profiling).

It decodes the encoded rows a server hands over, profiles them in micro-batches with whylogs, merges the
profiles per model version and time window, and writes the windows, the prediction log and the feedback
labels to the artifact store. It shares a few counters with its recorder (rows taken, rows held, rows lost
to failed writes, ready), so the server can bound its queue by rows and account for every row when the
process dies. ``ProfilerConfig``, the message shapes and the shared slots are the contract of both sides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from flywheel.contracts import layout

log = logging.getLogger("flywheel.serving.profiling")
STOP = "stop"

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
    # a process that takes no row for this long while rows wait for it is hung (stopped, stuck in a write):
    # killed and restarted like a dead one. Longer than any one flush (a micro-batch profiled and written)
    stall_s: float = 60.0


class _Window:
    def __init__(self) -> None:
        self.view: Any = None
        self.rows = 0


def note(error: Any, text: str) -> None:
    error.value = text.encode("utf-8", "replace")[: len(error) - 1].replace(b"\0", b" ")


def rows_of(message: Any) -> int:
    if message[0] == "rows":
        return len(message[5])
    if message[0] == "feedback":
        return len(message[3])
    if message[0] == "shadow":
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
        note(error, f"{type(exc).__name__}: {exc}")
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
        if message == STOP or (message is None and os.getppid() != parent):
            profiler.flush(everything=True)
            return
        if message is not None:
            profiler.take(message)
        waiting = profiler.pending_rows + profiler.shadow_rows
        if waiting >= config.batch_rows or time.monotonic() - last_flush > 5.0:
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
        self.shadow: dict[tuple[str, int], list[Any]] = {}  # (version, window start) -> frames
        self.shadow_rows = 0
        self.schemas: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
        self.written = 0

    def held(self) -> int:
        """Rows taken and not yet in a written window profile (or, for labels, a written file)."""
        windows = sum(w.rows for w in self.windows.values())
        return self.pending_rows + self.shadow_rows + len(self.feedback) + windows

    def lost(self, rows: int, what: str, exc: BaseException) -> None:
        self.state[_FAILED] += rows
        text = f"{what} failed ({type(exc).__name__}: {exc}); {rows} rows lost"
        log.warning("%s", text)
        note(self.error, text)

    def take(self, message: Any) -> None:
        rows = rows_of(message)
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
        elif message[0] == "shadow":
            _, version, champion, ids, ts, predictions, theirs = message
            start = int(ts // self.config.window_s * self.config.window_s)
            frame = pd.DataFrame(
                {"request_id": ids, "ts": ts, "prediction": predictions, "champion": champion}
            ).assign(champion_prediction=theirs)[list(layout.SHADOW_LOG_COLUMNS)]
            self.shadow.setdefault((version, start), []).append(frame)
            self.shadow_rows += len(frame)
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
            path = layout.prediction_log_part(model, version, start, self.writer, uuid.uuid4().hex[:8])
            self.write_part(path, frame, "the prediction log")
        self.pending.clear()
        self.pending_rows = 0
        for (version, start), frames in self.shadow.items():
            frame = pd.concat(frames, ignore_index=True)
            path = layout.shadow_log_part(model, version, start, self.writer, uuid.uuid4().hex[:8])
            self.write_part(path, frame, "the shadow log")
        self.shadow.clear()
        self.shadow_rows = 0
        if self.feedback:
            day = datetime.now(UTC).date()
            path = layout.feedback_part(model, day, self.writer, uuid.uuid4().hex[:8])
            self.write_part(path, pd.DataFrame(self.feedback), "feedback labels")
            self.feedback.clear()

    def write_part(self, path: str, frame: Any, what: str) -> None:
        """One Parquet file of the store; a failed write loses (and counts) its rows, never the process."""
        try:
            with self.store.open(path, "wb") as handle:
                frame.to_parquet(handle, index=False)
        except Exception as exc:
            self.lost(len(frame), f"writing {what} {path}", exc)

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
                writer = f"{self.writer}-{self.written}"
                path = layout.window_profile(self.config.model_name, version, start, writer)
                try:
                    self.store.write_bytes(path, self.validator.to_bytes(window.view))
                except Exception as exc:
                    self.lost(window.rows, f"writing the window profile {path}", exc)
