"""Discarding a profiling process's queue: a feeder thread that can finish exits by itself (the queue's
reader is never closed under it), and one stuck writing into a full pipe nobody reads is unblocked, in
bounded time, with nothing raised in either thread."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from serving.profiling import _Inbox


@pytest.fixture
def thread_errors() -> Iterator[list[Any]]:
    seen: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = seen.append
    yield seen
    threading.excepthook = previous


def test_a_feeder_thread_that_can_finish_exits_by_itself(thread_errors: list[Any]) -> None:
    ctx = multiprocessing.get_context("spawn")
    for _ in range(50):  # the double close of the reader was a race: one run in many
        inbox = _Inbox(ctx)
        inbox.put_nowait(("rows", 1))
        assert inbox.get(timeout=5) == ("rows", 1)
        inbox.discard()
        assert inbox._thread is not None and not inbox._thread.is_alive()  # type: ignore[attr-defined]
    assert thread_errors == []


def test_a_feeder_stuck_on_a_full_pipe_is_unblocked(thread_errors: list[Any]) -> None:
    inbox = _Inbox(multiprocessing.get_context("spawn"))
    inbox.put_nowait(b"x" * (4 << 20))  # far more than a pipe holds, and nobody reads it
    time.sleep(0.2)
    started = time.monotonic()
    inbox.discard(wait_s=0.3)
    feeder = inbox._thread  # type: ignore[attr-defined]
    assert feeder is not None
    feeder.join(5)
    assert not feeder.is_alive() and time.monotonic() - started < 5
    assert thread_errors == []


def test_a_queue_never_used_is_discarded_at_once() -> None:
    inbox = _Inbox(multiprocessing.get_context("spawn"))
    started = time.monotonic()
    inbox.discard()
    assert time.monotonic() - started < 0.5
