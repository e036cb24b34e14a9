"""The served model and its hot swap.

``current`` is one reference, replaced in a single assignment once a new version is loaded and warmed up,
so a request sees either the old model or the new one, never half of each. A version that fails to load
leaves the old one serving; the failure is counted on /metrics and logged, and retried after a back-off.
Every swap is one INFO line (``hot swap of flight-delay: v3 -> v4 (the champion alias moved from v3 to v4),
loaded in 0.4 s``) and every failed one a WARNING line with the error, each saying why it was tried: start-up,
the alias moved, a retry after a failed load, or the registry answering again after an error.

Every check of the registry is recorded: which version the champion alias names, when it was looked at, and
why the check failed (``registry_error``: the registry cannot be read, or has no such model or alias) or why
the version it names is not the one served (``load_error``). The two are kept apart and each is cleared as
soon as it no longer holds, so ``/ready`` never reports a problem that is over, nor hides one that is not.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter

from serving.columns import BatchReader
from serving.encoding import RowEncoder
from serving.metrics import ServiceMetrics
from serving.predictor import InplacePredictor
from serving.schemas import batch_model, column_adapters, columns_model, record_bytes_bound, record_model
from stacks.components.model_registry import LoadedModel, load_model
from stacks.components.model_versions import AliasNotSet, alias_target
from stacks.components.registry_health import RegistryUnavailable, describe_error

log = logging.getLogger("flywheel.serving")
RETRY_AFTER_S = 60.0
"""How long the watcher waits before it tries again to load a version that failed to load."""


@dataclass
class Served:
    """A loaded model plus what a request needs from it, built once per version."""

    model: LoadedModel
    encoder: RowEncoder
    record: type[BaseModel]
    batch: type[BaseModel]
    columns: type[BaseModel]
    reader: BatchReader
    predictor: InplacePredictor

    @property
    def version(self) -> str:
        return self.model.version

    @cached_property
    def classes(self) -> list[str]:
        """The class names in the model's output order (multiclass: one per probability column)."""
        return list(self.model.schema.classes or [])

    @cached_property
    def categories(self) -> dict[str, list[str]]:
        """Vocabulary of each categorical feature, for the traffic profiles (decoded off the request path)."""
        return {c.name: c.categories or [] for c in self.model.schema.columns if c.kind == "categorical"}

    @cached_property
    def column_checks(self) -> tuple[dict[str, TypeAdapter[Any]], frozenset[str]]:
        """Per-column validators and the required columns, for a column batch the reader could not vouch
        for (built on the first one: most versions never need them)."""
        schema = self.model.schema
        required = frozenset(c.name for c in schema.columns if not c.nullable)
        return column_adapters(schema, self.reader.max_batch), required

    @cached_property
    def record_max_bytes(self) -> int:
        """The largest body a valid record of this version can be (serving.schemas.record_bytes_bound)."""
        return record_bytes_bound(self.model.schema)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.predictor(matrix)

    def logged(self, predictions: np.ndarray) -> np.ndarray:
        """What the prediction log keeps of ``predictions``: as they are, but a multiclass row's predicted
        class (what monitoring compares with the training reference) instead of its probabilities."""
        return predictions if predictions.ndim == 1 else self.model.schema.monitored(predictions)


def prepare(model: LoadedModel, max_batch_size: int) -> Served:
    """Build encoder and request models, and warm the booster up so the first request is not slow."""
    model.booster.set_param({"nthread": 1})  # one row at a time: threads cost more than they give
    record = record_model(model.schema)
    served = Served(
        model,
        RowEncoder(model.schema),
        record,
        batch_model(record, max_batch_size),
        columns_model(model.schema, max_batch_size),
        BatchReader(model.schema, max_batch_size),
        InplacePredictor(model.booster),
    )
    warm = np.zeros((8, len(model.schema.columns)), dtype=np.float32)
    for _ in range(3):
        served.predict(warm[:1])
        served.predict(warm)
    return served


CANDIDATE_RETRY_FIRST_S = 5.0
"""A rollout's candidate that failed to load is tried again after this, doubling up to the maximum: every
replica downloading a broken version at every watch tick would load the registry for nothing."""
CANDIDATE_RETRY_MAX_S = 300.0


class ModelHolder:
    """The served model, the champion alias as last seen, and why the two differ when they do."""

    def __init__(self, model_name: str, metrics: ServiceMetrics, max_batch_size: int) -> None:
        self.model_name = model_name
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.current: Served | None = None
        # the version the alias named at the last check that could read the registry: a registry outage
        # says nothing about where the alias is, so it does not make the served version "not the champion"
        self.champion_version: str | None = None
        self.checked_at: float | None = None  # epoch seconds of the last check, successful or not
        self.registry_error: str | None = None
        self._load_failure: tuple[str, str] | None = None  # (version, why) of the champion, when it failed
        self._failed: dict[str, tuple[float, str]] = {}  # version -> (monotonic time, why), for the back-off
        self.rollout: Any = None  # serving.rollout.Rollout while one runs (read on every request)
        # (version, retry after (monotonic), delay) of a candidate that failed to load
        self._candidate_failure: tuple[str, float, float] | None = None
        self._lock = threading.Lock()  # the watcher writes the state that /ready reads as one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def load_error(self) -> str | None:
        """Why the version the alias names is not served (``v4: OSError: ...``), or None."""
        failure = self._load_failure
        return None if failure is None else f"v{failure[0]}: {failure[1]}"

    @property
    def last_error(self) -> str | None:
        """The registry error, else the load error: what ``/model`` and a 503 name."""
        return self.registry_error or self.load_error

    def load(self, version: str, reason: str = "asked to load it") -> Served:
        """Load, warm up and swap in ``version``; one INFO line says from which version, why and how long."""
        started = time.monotonic()
        previous = self.current
        served = prepare(load_model(self.model_name, version), self.max_batch_size)
        with self._lock:
            self.current = served  # the swap: one reference assignment
            self._load_failure = None
        self.metrics.serving(self.model_name, served.version, served.model.created_at)
        self.metrics.model_loads.labels(outcome="loaded").inc()
        log.info(
            "hot swap of %s: %s -> v%s (%s), loaded in %.1f s",
            self.model_name,
            _named(previous),
            served.version,
            reason,
            time.monotonic() - started,
        )
        return served

    def refresh(self, retry_after_s: float = RETRY_AFTER_S) -> bool:
        """Check the champion alias and load its version if it moved; True when a new version is now served.

        Never raises: a registry that cannot be read, or has no champion, is recorded as ``registry_error``
        and a version that fails to load as ``load_error``, and the next check tries again."""
        try:
            version = alias_target(self.model_name)
        except (RegistryUnavailable, AliasNotSet) as exc:
            self._check_failed(str(exc), alias_unset=isinstance(exc, AliasNotSet))
            return False
        except Exception as exc:  # anything else the client raises is the same state, named by its type
            self._check_failed(f"the registry check failed: {describe_error(exc)}", alias_unset=False)
            return False
        # what the last check left, for the reason the swap log line gives (this check overwrites it)
        first_check = self.checked_at is None
        champion_before, error_before = self.champion_version, self.registry_error
        self._checked(version)
        if self.current is not None and version == self.current.version:
            return False
        failed = self._failed.get(version)
        if failed is not None and time.monotonic() - failed[0] < retry_after_s:
            return False
        reason = self._swap_reason(version, first_check, champion_before, error_before)
        try:
            self.load(version, reason)
        except Exception as exc:  # any failure must keep the old model serving
            why = describe_error(exc)
            self._failed[version] = (time.monotonic(), why)
            with self._lock:
                self._load_failure = (version, why)
            self.metrics.model_loads.labels(outcome="failed").inc()
            log.warning(
                "hot swap of %s: %s -> v%s failed (%s): %s; %s, retried after %.0f s",
                self.model_name,
                _named(self.current),
                version,
                reason,
                why,
                "nothing is served" if self.current is None else f"v{self.current.version} keeps serving",
                RETRY_AFTER_S,
            )
            return False
        finally:
            self._update_gauge()
        self._failed.pop(version, None)
        return True

    def _swap_reason(
        self, version: str, first_check: bool, champion_before: str | None, error_before: str | None
    ) -> str:
        """Why ``version`` is loaded now, from the state before this check: what the swap log lines say."""
        failed = self._failed.get(version)
        if failed is not None:
            return f"retry: its load failed {time.monotonic() - failed[0]:.0f} s ago: {failed[1]}"
        if first_check:
            return "start-up"
        if error_before is not None:
            return f"the registry check succeeded again after: {error_before}"
        served = self.current
        if champion_before is not None and champion_before != version:
            moved = f"the champion alias moved from v{champion_before} to v{version}"
            if served is not None and champion_before != served.version:
                moved += f" (v{champion_before} had failed to load)"
            return moved
        return f"the champion alias names v{version}"

    def _checked(self, version: str) -> None:
        """The registry answered: the alias names ``version``; a load error of any other version is over."""
        if self.registry_error is not None:
            log.info(
                "registry check of %s succeeded again: the champion alias names v%s", self.model_name, version
            )
        with self._lock:
            self.checked_at = time.time()
            self.registry_error = None
            self.champion_version = version
            failed = self._failed.get(version)
            served = self.current is not None and self.current.version == version
            self._load_failure = None if served or failed is None else (version, failed[1])
        self._update_gauge()

    def _check_failed(self, why: str, *, alias_unset: bool) -> None:
        if why != self.registry_error:  # one line per new problem, not one per check
            log.error("champion check of %s failed: %s", self.model_name, why)
        with self._lock:
            self.checked_at = time.time()
            self.registry_error = why
            if alias_unset:  # the registry answered: there is no champion, and so no load error of one
                self.champion_version = None
                self._load_failure = None
        self._update_gauge()

    def _update_gauge(self) -> None:
        served = self.current
        is_champion = served is not None and served.version == self.champion_version
        self.metrics.model_is_champion.set(1 if is_champion else 0)

    def readiness(self) -> dict[str, Any]:
        """What ``/ready`` answers: ready when a model is served, even one that is no longer the champion
        (its replacement failed to load): taking every replica out of rotation would turn a bad release
        into an outage, so the detail says it plainly instead."""
        with self._lock:
            served = self.current
            champion = self.champion_version
            checked_at = self.checked_at
            registry_error = self.registry_error
            failure = self._load_failure
        version = None if served is None else served.version
        return {
            "ready": served is not None,
            "model_name": self.model_name,
            "served_version": version,
            "model_version": version,  # the key deployers and older clients read
            "champion_version": champion,
            "checked_at": None
            if checked_at is None
            else datetime.fromtimestamp(checked_at, UTC).isoformat(timespec="seconds"),
            "registry_error": registry_error,
            "load_error": None if failure is None else f"v{failure[0]}: {failure[1]}",
            "detail": _detail(version, champion, checked_at is not None, registry_error, failure),
        }

    def refresh_rollout(self) -> None:
        """Follow the rollout state: load the candidate it names (once), or drop it when the rollout ended.
        Never raises; a registry or load failure keeps the champion answering alone."""
        from serving.rollout import Rollout
        from stacks.components.model_versions import rollout_state

        if self.registry_error is not None or self.current is None:
            return  # the registry check failed (this call could create a database) or nothing is served
        try:
            state = rollout_state(self.model_name)
        except Exception as exc:  # the champion check reports registry trouble; this one stays quiet
            log.debug("rollout check of %s failed: %s", self.model_name, describe_error(exc))
            return
        current, champion = self.rollout, self.current
        if state is None or champion is None or state.candidate == champion.version:
            if current is not None:
                log.info("rollout of %s v%s ended here", self.model_name, current.candidate.version)
            self.rollout = None
            return
        if current is not None and current.candidate.version == state.candidate:
            if current.state != state:
                log.info(
                    "rollout of %s v%s: step %d/%d, %s %.0f%%",
                    self.model_name,
                    state.candidate,
                    state.step,
                    state.steps,
                    state.stage,
                    100 * state.fraction,
                )
                self.rollout = Rollout.of(state, champion, current.candidate)
            return
        failed = self._candidate_failure
        if failed is not None and failed[0] == state.candidate and time.monotonic() < failed[1]:
            return  # it failed to load a moment ago: tried again after the back-off, not at every tick
        try:
            candidate = prepare(load_model(self.model_name, state.candidate), self.max_batch_size)
        except Exception as exc:  # a candidate that cannot load takes no traffic
            delay = CANDIDATE_RETRY_FIRST_S
            if failed is not None and failed[0] == state.candidate:
                delay = min(failed[2] * 2, CANDIDATE_RETRY_MAX_S)
            self._candidate_failure = (state.candidate, time.monotonic() + delay, delay)
            log.warning(
                "rollout of %s: v%s failed to load (tried again in %.0f s): %s",
                self.model_name,
                state.candidate,
                delay,
                describe_error(exc),
            )
            self.rollout = None
            return
        self._candidate_failure = None
        log.info(
            "rollout of %s: v%s loaded beside v%s (%s, step %d/%d)",
            self.model_name,
            state.candidate,
            champion.version,
            state.stage,
            state.step,
            state.steps,
        )
        self.rollout = Rollout.of(state, champion, candidate)

    def start_watching(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                    self.refresh_rollout()
                except Exception as exc:  # refresh reports what it expects; this keeps the watcher alive
                    log.warning("champion check failed: %s", describe_error(exc))

        self._thread = threading.Thread(target=loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def info(self) -> dict[str, Any]:
        errors = {
            "last_error": self.last_error,
            "registry_error": self.registry_error,
            "load_error": self.load_error,
            "champion_version": self.champion_version,
        }
        if self.current is None:
            return {"name": self.model_name, "version": None, **errors}
        return {**self.current.model.info(), **errors}


def _named(served: Served | None) -> str:
    return "nothing" if served is None else f"v{served.version}"


def _detail(
    served: str | None,
    champion: str | None,
    checked: bool,
    registry_error: str | None,
    failure: tuple[str, str] | None,
) -> str:
    """One sentence: what is served, and each reason it is not the champion or nothing is served."""
    problems = []
    if failure is not None:
        problems.append(f"the champion alias names v{failure[0]}, which failed to load: {failure[1]}")
    if registry_error is not None:
        problems.append(registry_error)
    if served is None:
        return "no model served: " + ("; ".join(problems) if problems else "the registry was not checked yet")
    if problems:
        return f"serving v{served}; " + "; ".join(problems) + f"; v{served} keeps serving"
    if champion is not None and champion != served:
        return f"serving v{served}; the champion alias names v{champion}"
    return f"serving v{served}, the version the champion alias names" if checked else f"serving v{served}"
