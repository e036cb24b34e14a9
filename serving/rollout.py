"""The service's side of a rollout: the candidate beside the champion, who answers a request, and the
shadow scorer.

Each replica reads the rollout state (:class:`flywheel.contracts.rollout.RolloutState`) at its watch tick
and loads the candidate once (:meth:`serving.holder.ModelHolder.refresh_rollout`). In ``canary`` the
candidate answers the requests whose key hashes under the step's fraction, and a candidate scoring that
fails is answered by the champion (counted against the candidate, never a failed request). In ``shadow``
the champion answers everything and :class:`ShadowScorer` scores a copy of each request's matrix on its own
thread, off the request path: a full queue drops the copy (counted), never delays the answer. Its
predictions go to the candidate's shadow log beside the champion's, under the answer's request id
(``flywheel.contracts.layout.shadow_logs``), so they meet the labels that come back through ``/feedback``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.contracts.rollout import RolloutState
from serving.holder import Served
from serving.metrics import ServiceMetrics
from serving.request_ids import row_ids

if TYPE_CHECKING:
    from serving.profiling import TrafficRecorder

log = logging.getLogger("flywheel.serving.rollout")

SHADOW_QUEUE = 10_000
"""Requests waiting for the shadow scorer at most; past it the copy is dropped."""
SHADOW_BATCH = 512
"""Requests the shadow scorer takes at once (one booster call)."""
SHADOW_GATHER_S = 0.02
"""How long the shadow scorer lets copies gather between two scorings: woken per copy, its GIL hand-overs
cost the champion 22% of its throughput at 3,000 requests/s; every 20 ms, one booster call takes ~60."""
CANARY, SHADOW, CHAMPION = "canary", "shadow", "champion"


@dataclass(frozen=True)
class Rollout:
    """A rollout as this replica serves it: the state and the candidate, loaded."""

    state: RolloutState
    candidate: Served
    to_candidate: Callable[[np.ndarray], np.ndarray] | None = None
    """The champion's matrix as the candidate encodes it (None: other features, nothing to shadow)."""

    @classmethod
    def of(cls, state: RolloutState, champion: Served, candidate: Served) -> Rollout:
        return cls(state, candidate, translation(champion, candidate))

    @property
    def same_features(self) -> bool:
        """The candidate encodes requests as the champion does: the champion's matrix is the candidate's
        as it is (a failed canary scoring can be answered by the champion from it)."""
        return self.to_candidate is unchanged


def unchanged(matrix: np.ndarray) -> np.ndarray:
    """The translation between two versions that encode alike."""
    return matrix


def translation(champion: Served, candidate: Served) -> Callable[[np.ndarray], np.ndarray] | None:
    """How a matrix the champion encoded becomes the one the candidate would have encoded from the same
    request: the same features in the same order, a categorical's codes mapped through the names (a value
    the candidate never saw is missing to it, as its own encoder makes it). A candidate retrained on newer
    data usually knows more categories, so this keeps its shadow step meaningful. None when the features
    differ (names, order, or a numeric column that became categorical)."""
    a, b = champion.model.schema, candidate.model.schema
    if a.names != b.names:
        return None
    tables: dict[int, np.ndarray] = {}
    for j, (ours, theirs) in enumerate(zip(a.columns, b.columns, strict=True)):
        if ours.categories == theirs.categories:
            continue
        if ours.categories is None or theirs.categories is None:
            return None
        index = {name: float(i) for i, name in enumerate(theirs.categories)}
        tables[j] = np.array([index.get(name, np.nan) for name in ours.categories], dtype=np.float32)
    if not tables:
        return unchanged

    def translate(matrix: np.ndarray) -> np.ndarray:
        out = matrix.copy()
        for j, table in tables.items():
            codes = matrix[:, j]
            known = ~np.isnan(codes)
            out[known, j] = table[codes[known].astype(np.int64)]
        return out

    return translate


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
    """Scores copies of the champion's requests with the candidate on one thread: counted in the metrics and
    written to the shadow log (through the traffic recorder, when profiling is on).

    The request path only appends to a deque (~0.1 us); every ``SHADOW_GATHER_S`` the thread takes what
    has gathered, up to ``SHADOW_BATCH`` requests, and scores it as one matrix, so its share of the GIL
    stays small however many requests arrive."""

    def __init__(self, metrics: ServiceMetrics, recorder: TrafficRecorder | None = None) -> None:
        self.metrics = metrics
        self.recorder = recorder
        self._pending: deque[tuple[Rollout, Served, np.ndarray, np.ndarray, str]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None  # started by the first copy: most services never shadow
        self._start = threading.Lock()
        self._agree = metrics.shadow_agreement.labels(agree="true")
        self._disagree = metrics.shadow_agreement.labels(agree="false")
        self._full = metrics.shadow_dropped.labels(reason="queue_full")
        self._other = metrics.shadow_dropped.labels(reason="other_features")

    def offer(
        self,
        rollout: Rollout,
        champion: Served,
        matrix: np.ndarray,
        predictions: np.ndarray,
        request_id: str,
    ) -> None:
        if rollout.to_candidate is None:
            self._other.inc()
            return
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
                    self._thread.start()
        pending = self._pending
        if len(pending) >= SHADOW_QUEUE:
            self._full.inc()
            return
        pending.append((rollout, champion, matrix, predictions, request_id))

    def _run(self) -> None:
        pending = self._pending
        while not self._closed:
            self._wake.wait(SHADOW_GATHER_S)  # what arrives meanwhile is scored together
            if not pending:
                continue
            taken = [pending.popleft() for _ in range(min(len(pending), SHADOW_BATCH))]
            groups: dict[tuple[int, int], list[Any]] = {}  # one group unless a swap came in between
            for item in taken:
                groups.setdefault((id(item[0].candidate), id(item[1])), []).append(item)
            for group in groups.values():
                self._score(group[0][0], group[0][1], group)

    def _score(self, rollout: Rollout, champion: Served, taken: list[Any]) -> None:
        candidate = rollout.candidate
        theirs = np.concatenate([t[3] for t in taken])
        started = time.perf_counter()
        try:
            matrix = np.concatenate([t[2] for t in taken])
            if rollout.to_candidate is not None:
                matrix = rollout.to_candidate(matrix)
            ours = candidate.predict(matrix)
        except Exception as exc:  # a broken candidate is what shadow is for: counted, never raised
            self.metrics.version_series(candidate.version, SHADOW)[1].inc(len(taken))
            log.warning("shadow scoring of v%s failed: %s", candidate.version, exc)
            return
        rows, _, latency, mean = self.metrics.version_series(candidate.version, SHADOW)
        rows.inc(len(ours))
        latency.observe((time.perf_counter() - started) / len(taken))  # per request, as the champion's
        values = ours if ours.ndim == 1 else ours.max(axis=1)
        sizes = np.array([len(t[2]) for t in taken])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for request_mean in (
            np.add.reduceat(values, starts) / sizes
        ).tolist():  # as the champion's: per request
            mean.observe(request_mean)
        agree = int((decisions(candidate, ours) == decisions(champion, theirs)).sum())
        self._agree.inc(agree)
        self._disagree.inc(len(ours) - agree)
        if self.recorder is not None:
            ids = [i for t in taken for i in row_ids(t[4], len(t[2]))]
            self.recorder.record_shadow(
                candidate.version, champion.version, ids, candidate.logged(ours), champion.logged(theirs)
            )

    def close(self) -> None:
        self._closed = True
        self._wake.set()  # the wait ends at once
        if self._thread is not None:
            self._thread.join(timeout=5)
