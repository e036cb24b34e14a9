"""``flywheel replay --wait``: which windows hold the replayed traffic, and waiting on a real artifact store
folder until the service's profiling process has written them (or saying which never came)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from flywheel.contracts import layout
from flywheel.replay import ReplayResult, progress_line
from flywheel.replay_wait import (
    FLUSH_S,
    describe,
    expected_windows,
    grace_s,
    missing_windows,
    wait_for_windows,
    window_seconds,
)
from stacks.components.artifact_store import ArtifactStore

MODEL = "flight-delay"
T0 = 1_796_000_400  # 2026-11-29 01:00:00 UTC, a multiple of 60


def write_window(store: ArtifactStore, version: str, start: int, writer: str = "123-abcdef-1") -> None:
    store.write_bytes(layout.window_profile(MODEL, version, start, writer), b"a whylogs profile")


def test_the_windows_of_the_answered_seconds() -> None:
    answered = {"3": {T0 + 1, T0 + 59, T0 + 60, T0 + 185}, "4": {T0 + 200}, "5": set()}
    assert expected_windows(answered, 60) == {"3": [T0, T0 + 60, T0 + 180], "4": [T0 + 180]}
    assert describe({"3": [T0, T0 + 60]}) == "v3: 01:00:00, 01:01:00 UTC"


def test_the_window_length_is_the_services() -> None:
    assert window_seconds(300, {}) == 300
    assert window_seconds(300, {"FLYWHEEL_PROFILE_WINDOW_S": "15"}) == 15  # the service's own override
    assert window_seconds(300, {"FLYWHEEL_PROFILE_WINDOW_S": "soon"}) == 300
    assert grace_s(300) == 150 and grace_s(4) == 5  # as serving/profiling_worker.py close_windows waits


def test_missing_windows_on_a_real_store(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    expected = {"3": [T0, T0 + 60, T0 + 120]}
    assert missing_windows(store, MODEL, expected) == expected  # no folder yet
    write_window(store, "3", T0)
    write_window(store, "3", T0 + 120, writer="999-fedcba-4")
    write_window(store, "4", T0 + 60)  # another version's window is not this one's
    store.write_bytes(f"serving/{MODEL}/v3/profiles/notes.txt", b"not a window")
    assert missing_windows(store, MODEL, expected) == {"3": [T0 + 60]}
    write_window(store, "3", T0 + 60)
    assert missing_windows(store, MODEL, expected) == {}


def test_wait_returns_once_the_profiler_writes_the_last_window(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    now = int(time.time())
    start = now // 2 * 2
    write_window(store, "3", start - 2)
    writer = threading.Timer(0.6, write_window, args=(store, "3", start))
    writer.start()
    polls = []
    try:
        state = wait_for_windows(
            store, MODEL, {"3": [start - 2, start]}, 2, poll_s=0.1, on_poll=lambda s: polls.append(s)
        )
    finally:
        writer.cancel()
    assert state.done and 0.5 < state.waited < 5
    assert polls[0].missing == {"3": [start]} and polls[-1].done
    assert state.expected_by == start + 2 + grace_s(2) + FLUSH_S


def test_wait_gives_up_and_says_what_is_missing(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    long_ago = int(time.time()) - 3600
    started = time.monotonic()
    state = wait_for_windows(store, MODEL, {"3": [long_ago]}, 60, margin_s=0.3, poll_s=0.05)
    assert not state.done and state.missing == {"3": [long_ago]}
    assert time.monotonic() - started < 3  # long overdue: only the margin is waited


def test_progress_reads_as_numbers() -> None:
    result = ReplayResult(sent=1250, feedback_sent=1180, seconds=25.0, total=5000)
    assert progress_line(result) == "sent 1,250 of 5,000 (50.0/s), 1,180 labels posted, 0 failed"
    result.failed, result.rejected = 2, 3
    assert progress_line(result).endswith("2 failed, 3 rejected")
