"""Wrapping steps as Prefect tasks, timed, without letting Prefect hash or persist DataFrames.

Tasks are coarse (one step each): Prefect costs a few milliseconds per task, so an Optuna trial is never a
task. Inputs are frames and boosters, so caching by input hash is off and results stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE

T = TypeVar("T")


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry IO that may recover (a connection), not data that is wrong (a missing or corrupt file)."""
    try:
        state.result()
    except Exception as exc:
        return bool(getattr(exc, "transient", not isinstance(exc, ValueError)))
    return False


class StepTimer:
    """Collects the wall time of each step, measured inside the task (Prefect's own overhead excluded)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, step: Callable[..., T], name: str, *args: Any, retries: int = 0, **kwargs: Any) -> T:
        def timed(*a: Any, **kw: Any) -> tuple[T, float]:
            started = time.perf_counter()
            value = step(*a, **kw)
            return value, time.perf_counter() - started

        wrapped = task(  # type: ignore[call-overload]  # prefect's overloads miss this valid call form
            timed,
            name=name,
            retries=retries,
            retry_delay_seconds=2,
            retry_condition_fn=_worth_retrying,
            cache_policy=NONE,
            persist_result=False,
        )
        value, seconds = wrapped(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        return value

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
