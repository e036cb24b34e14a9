"""Waiting until the serving windows that hold replayed traffic are written (``flywheel replay --wait``).

Monitoring judges written windows only, and the service's profiling process writes a window some time
after it ends: it waits a grace period for rows still in flight (``serving/profiling_worker.py``,
``close_windows``: ``max(5 s, window / 2)``) and checks every few seconds. A monitoring run started right
after replay would judge none of the replayed traffic; ``--wait`` makes the README's commands, run in
order, see it. The condition is the window files themselves in the artifact store (one per window and
writer), not a clock: the grace only sets how long to expect to wait, and when to give up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from flywheel.contracts import layout
from stacks.components.artifact_store import ArtifactStore

__all__ = [
    "FLUSH_S",
    "WindowWait",
    "expected_windows",
    "grace_s",
    "missing_windows",
    "wait_for_windows",
    "window_seconds",
]

FLUSH_S = 6.0  # the profiling process checks its windows every 5 s, after at most 1 s waiting for rows


def grace_s(window_s: int) -> float:
    """How long after its end the service writes a window (``serving/profiling_worker.py``)."""
    return max(5.0, window_s / 2)


def window_seconds(stack_window_s: int, environ: Mapping[str, str]) -> int:
    """The window length the service uses: ``FLYWHEEL_PROFILE_WINDOW_S`` when set (the service's override),
    else the stack's ``data_validator.configuration.profile_window_seconds``."""
    text = environ.get("FLYWHEEL_PROFILE_WINDOW_S", "").strip()
    try:
        override = int(float(text)) if text else 0
    except ValueError:
        override = 0
    return override if override > 0 else stack_window_s


def expected_windows(answered: Mapping[str, set[int]], window_s: int) -> dict[str, list[int]]:
    """Per version, the starts (epoch seconds) of the windows its answered requests fell in."""
    return {
        version: sorted({second // window_s * window_s for second in seconds})
        for version, seconds in answered.items()
        if seconds
    }


def missing_windows(
    store: ArtifactStore, model_name: str, expected: Mapping[str, list[int]]
) -> dict[str, list[int]]:
    """The expected windows with no profile file yet, per version (versions with none missing left out)."""
    missing: dict[str, list[int]] = {}
    for version, starts in expected.items():
        written = set()
        for path in store.list(layout.serving_profiles(model_name, version)):
            if path.endswith(".bin"):
                try:
                    written.add(int(layout.parse_window_profile(path).start.timestamp()))
                except (ValueError, layout.LayoutError):
                    continue  # not a window file: not ours to judge
        left = [s for s in starts if s not in written]
        if left:
            missing[version] = left
    return missing


def describe(windows: Mapping[str, list[int]]) -> str:
    """``v3: 16:05, 16:06 UTC`` (window starts), for the messages."""
    return "; ".join(
        f"v{version}: " + ", ".join(f"{datetime.fromtimestamp(s, UTC):%H:%M:%S}" for s in starts) + " UTC"
        for version, starts in windows.items()
    )


@dataclass
class WindowWait:
    """Where a wait stands: what is still missing, when it is expected by, how long it has waited."""

    missing: dict[str, list[int]]
    expected_by: float  # epoch seconds
    waited: float

    @property
    def done(self) -> bool:
        return not self.missing


def wait_for_windows(
    store: ArtifactStore,
    model_name: str,
    expected: Mapping[str, list[int]],
    window_s: int,
    *,
    margin_s: float = 90.0,
    poll_s: float = 2.0,
    on_poll: Callable[[WindowWait], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> WindowWait:
    """Poll the store until every expected window has a file, or ``margin_s`` past when the last should
    have been written (its end, the grace, a flush). Returns where it stood at the end."""
    last = max((s for starts in expected.values() for s in starts), default=None)
    started = clock()
    expected_by = started if last is None else last + window_s + grace_s(window_s) + FLUSH_S
    give_up = max(expected_by, started) + margin_s
    while True:
        state = WindowWait(missing_windows(store, model_name, expected), expected_by, clock() - started)
        if on_poll is not None:
            on_poll(state)
        if state.done or clock() >= give_up:
            return state
        sleep(poll_s)
