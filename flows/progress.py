"""Tuning progress in the Prefect UI: a log line per trial and a progress artifact with the best so far.

Tuning is the long step of a training run; without this a deployed run shows only "Running" and then
"Finished in state Completed()". The tune step knows nothing of Prefect: it calls this reporter with a
``TrialProgress`` after each trial.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from steps.model.trial import TrialProgress


class TuningProgress:
    """The callback the flow gives the tune step.

    Prefect's API being slow or down must not fail a tuning that is fine: an artifact that cannot be
    written is reported once in the log, and the trials go on (their log lines still appear).
    """

    def __init__(self, key: str, n_trials: int, model_name: str) -> None:
        self.model_name = model_name
        self._artifact: UUID | None = None
        self._broken = False
        try:
            created = create_progress_artifact(
                0.0, key=key, description=f"Tuning {model_name}: {n_trials} trials to run"
            )
            self._artifact = cast(UUID, created)  # called from sync code: the id, not a coroutine
        except Exception as exc:  # see the class docstring
            self._give_up(exc)

    def __call__(self, progress: TrialProgress) -> None:
        _logger().info("tuning %s: %s", self.model_name, progress.describe())
        if self._artifact is None or self._broken:
            return
        try:
            update_progress_artifact(
                self._artifact,
                round(100.0 * progress.fraction, 1),
                description=describe(self.model_name, progress),
            )
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        self._broken = True
        _logger().warning("tuning progress artifact not written (%s); trials go on", exc)


def describe(model_name: str, progress: TrialProgress) -> str:
    """The artifact's text (Markdown): where the tuning stands and the best value so far."""
    best = "none completed yet" if progress.best is None else f"{progress.best:.4f}"
    last = "pruned" if progress.value is None else f"{progress.value:.4f}"
    return (
        f"Tuning {model_name}: trial {progress.done} of {progress.total}, "
        f"best validation {progress.metric} **{best}** (last trial #{progress.number}: {last}; "
        f"{progress.elapsed_s:.0f} s)"
    )


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # outside a run (a test, a notebook): the module's logger
        import logging

        return logging.getLogger(__name__)
