"""The service's side of a rollout: the candidate beside the champion, who answers a request, and the
shadow scorer.

Each replica reads the rollout state (:class:`flywheel.contracts.rollout.RolloutState`) at its watch tick
and loads the candidate once (:meth:`serving.holder.ModelHolder.refresh_rollout`). In ``canary`` the
candidate answers the requests whose key hashes under the step's fraction, and a candidate scoring that
fails is answered by the champion (counted against the candidate, never a failed request). In ``shadow``
the champion answers everything and :class:`ShadowScorer` scores a copy of each request's matrix on its own
thread, off the request path: a full queue drops the copy (counted), never delays the answer.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.contracts.rollout import RolloutState
from serving.holder import Served
from serving.metrics import ServiceMetrics

log = logging.getLogger("flywheel.serving.rollout")

SHADOW_QUEUE = 10_000
"""Requests waiting for the shadow scorer at most; past it the copy is dropped."""
CANARY, SHADOW, CHAMPION = "canary", "shadow", "champion"


@dataclass(frozen=True)
class Rollout:
    """A rollout as this replica serves it: the state and the candidate, loaded."""

    state: RolloutState
    candidate: Served
    same_features: bool
    """The candidate encodes requests as the champion does: a copy of the champion's matrix can be scored."""


def same_features(champion: Served, candidate: Served) -> bool:
    a, b = champion.model.schema, candidate.model.schema
    return a.names == b.names and [c.categories for c in a.columns] == [c.categories for c in b.columns]


def rollout_key(payload: Any, key: str | None) -> object:
    """What a canary hashes for this request: the spec's ``rollout_key`` field of the record (of a batch's
    first record), else a random draw (each request independently)."""
    if key is not None and isinstance(payload, dict):
        if key in payload:
            return payload[key]
        records = payload.get("records")
        if isinstance(records, list) and records and isinstance(records[0], dict) and key in records[0]:
            return records[0][key]
        columns = payload.get("columns")
        if isinstance(columns, dict) and isinstance(columns.get(key), list) and columns[key]:
            return columns[key][0]
    return random.random()


def decisions(served: Served, predictions: np.ndarray) -> np.ndarray:
    """What the model decides for each row: the class (multiclass), the side of the threshold (binary), the
    value (regression)."""
    if predictions.ndim == 2:
        return predictions.argmax(axis=1)
    if served.model.task == "binary":
        return predictions >= served.model.threshold
    return predictions


class ShadowScorer:
    """Scores copies of the champion's requests with the candidate on one thread; metrics only."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self._queue: queue.Queue[tuple[Rollout, Served, np.ndarray, np.ndarray] | None] = queue.Queue(
            SHADOW_QUEUE
        )
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def offer(self, rollout: Rollout, champion: Served, matrix: np.ndarray, predictions: np.ndarray) -> None:
        if not rollout.same_features:
            self.metrics.shadow_dropped.labels(reason="other_features").inc()
            return
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait((rollout, champion, matrix, predictions))
        except queue.Full:
            self.metrics.shadow_dropped.labels(reason="queue_full").inc()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rollout, champion, matrix, theirs = item
            candidate = rollout.candidate
            started = time.perf_counter()
            try:
                ours = candidate.predict(matrix)
            except Exception as exc:  # a broken candidate is what shadow is for: counted, never raised
                self.metrics.version_series(candidate.version, SHADOW)[1].inc()
                log.warning("shadow scoring of v%s failed: %s", candidate.version, exc)
                continue
            self.metrics.observe_version(candidate.version, SHADOW, ours, time.perf_counter() - started)
            agree = int((decisions(candidate, ours) == decisions(champion, theirs)).sum())
            self.metrics.shadow_agreement.labels(agree="true").inc(agree)
            self.metrics.shadow_agreement.labels(agree="false").inc(len(ours) - agree)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
