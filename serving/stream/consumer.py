"""The stream consumer: the champion scores records from a Redis stream, at least once, with the REST
service's profiling and hot swap.

Records are read through a consumer group (``XREADGROUP``), so consumers share the work and each record
goes to one of them. A read's predictions and dead letters are written, and its records acknowledged, in
one ``MULTI``/``EXEC`` transaction: a consumer killed before it commits leaves its records pending, and
another consumer (or the same one restarted) claims them once they sat ``claim_idle_ms`` with nobody
(``XAUTOCLAIM``). A record may thus be scored twice (a consumer that was only slow, or killed between
the commit and its reply): readers deduplicate on ``source_id``; the claims are counted
(``flywheel_stream_claimed_total``). A record taken ``max_deliveries`` times without an outcome (it killed
every consumer that took it) goes to the dead letters instead of killing the next one.

The model is the REST service's :class:`serving.holder.ModelHolder` (the champion, swapped when the alias
moves: a read is scored by one version, the next by the new one, nothing in between is lost), and the
traffic goes to the same profiler, so monitoring and feedback treat streamed predictions like served ones.
In a rollout's shadow step the candidate scores a copy of each read as the REST service's shadow does
(counted by version and role, logged beside the champion's). In a canary step the candidate answers the
records whose key hashes under the step's fraction (the spec's ``rollout_key`` field, as the REST service
hashes it, else the entry's id), judged by its own request model; each prediction names the version that
answered, and records the candidate fails to score are answered by the champion (counted against the
candidate). A Redis that goes away is waited for (the loop backs off and retries), never a crash.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from prometheus_client import Counter, Histogram

from flywheel.contracts.stream import POISON_STATUS, SOURCE_ID_FIELD
from serving.holder import ModelHolder, Served
from serving.metrics import ServiceMetrics
from serving.profiling import TrafficRecorder
from serving.request_ids import RequestIds
from serving.rollout import CANARY, CHAMPION, SHADOW, Rollout, ShadowScorer
from serving.stream.records import DeadLetter, Entry, Outcome, score, split_canary, stream_order
from stacks.config import RedisStreamConfig

log = logging.getLogger("flywheel.stream")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between attempts while Redis cannot be reached (the last one repeats)."""


class StreamMetrics(ServiceMetrics):
    """The service's metrics (model, loads, profiling) and the stream's own."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_records = Counter(
            "flywheel_stream_records_total",
            "Stream records by outcome: predicted, or dead_letter (refused as the API refuses it, or taken "
            "too often without an outcome)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("predicted", "dead_letter"):
            self.stream_records.labels(outcome=outcome)
        self.stream_claimed = Counter(
            "flywheel_stream_claimed_total",
            "Records claimed from a consumer that held them claim_idle_ms without acknowledging (stopped, "
            "killed or slow): each may be predicted twice",
            registry=self.registry,
        )
        self.stream_errors = Counter(
            "flywheel_stream_errors_total",
            "Redis commands that failed (connection lost, timeout); the loop waits and retries",
            registry=self.registry,
        )
        self.stream_batch = Histogram(
            "flywheel_stream_batch_seconds",
            "From a read's records in hand to their predictions written and acknowledged",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=self.registry,
        )


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per process, so a restarted consumer's predecessor's records are claimed
    from it (a name given by hand may be reused; its own pending records are then read first)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Counts:
    """What the consumer did since it started (``flywheel stream serve`` prints it when it stops)."""

    predicted: int = 0
    dead_letters: int = 0
    claimed: int = 0
    reads: int = 0


class Scored(NamedTuple):
    """One version's share of a read: what it gave, who answered in which role, and its scoring time."""

    outcome: Outcome
    served: Served
    role: str
    seconds: float


class StreamConsumer:
    """One consumer of a model's request stream; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        config: RedisStreamConfig,
        url: str,
        model_name: str,
        holder: ModelHolder,
        ids: RequestIds,
        metrics: StreamMetrics,
        recorder: TrafficRecorder | None = None,
        consumer_name: str | None = None,
    ) -> None:
        self.config = config
        self.input, self.output, self.dead_letters = config.stream_names(model_name)
        self.name = consumer_name or default_consumer_name()
        self.holder = holder
        self.ids = ids
        self.metrics = metrics
        self.recorder = recorder
        self.counts = Counts()
        self.shadow = ShadowScorer(metrics, recorder)
        self.redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=config.timeout_s,
            socket_timeout=config.timeout_s + config.block_ms / 1000,
            health_check_interval=30,
        )
        self._group_ready = False
        self._own_pending = True  # a reused name: its records from before are read first
        self._next_claim = 0.0
        self._claim_cursor = "0-0"

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> Counts:
        failures = 0
        waiting_for_model = False
        while not stop.is_set():
            served = self.holder.current
            if served is None:
                if not waiting_for_model:
                    why = self.holder.last_error or "no champion"
                    log.warning("no model to serve yet (%s): waiting", why)
                    waiting_for_model = True
                stop.wait(1.0)
                continue
            waiting_for_model = False
            try:
                self.step(served)
                failures = 0
            except redis.RedisError as exc:
                self.metrics.stream_errors.inc()
                wait = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                if "NOGROUP" in str(exc):
                    self._group_ready = False  # the stream or the group was deleted: made again
                log.warning("Redis: %s; retrying in %.1f s", exc, wait)
                stop.wait(wait)
        return self.counts

    def step(self, served: Served) -> int:
        """One read (claimed records first, then new ones) scored and committed; the records handled."""
        self._ensure_group()
        entries = self._pending_of_mine() or self._claimed()
        recovered = bool(entries)  # taken before: how often is asked (a new record's count is 1)
        entries = entries or self._read()
        if not entries:
            return 0
        started = time.perf_counter()
        poison: list[DeadLetter] = []
        if recovered:
            poison, entries = self._split_poison(entries)
        rollout = self.holder.rollout
        limit = self.config.max_record_bytes
        theirs: list[Entry] = []
        if rollout is not None and rollout.state.stage == CANARY:
            entries, theirs = split_canary(entries, rollout.state, limit)
        t0 = time.perf_counter()
        outcome = score(entries, served, limit, self.ids.issue)
        scored = [Scored(outcome, served, CHAMPION, time.perf_counter() - t0)]
        outcome.dead.extend(poison)
        if theirs and rollout is not None:
            scored.append(self._score_canary(theirs, rollout, served))
        handled = [e[0] for e in entries + theirs] + [d.source_id.encode() for d in poison]
        self._commit([s.outcome for s in scored], handled)
        self.metrics.stream_batch.observe(time.perf_counter() - started)
        self.counts.reads += 1
        for share in scored:
            self._account(share)
        return len(handled)

    def _score_canary(self, entries: list[Entry], rollout: Rollout, champion: Served) -> Scored:
        """The candidate's share of a read, or the champion's answers to it when the candidate fails to score
        it (counted against the candidate: the records are answered either way)."""
        candidate = rollout.candidate
        limit = self.config.max_record_bytes
        t0 = time.perf_counter()
        try:
            outcome = score(entries, candidate, limit, self.ids.issue)
            return Scored(outcome, candidate, CANARY, time.perf_counter() - t0)
        except Exception as exc:  # a broken candidate is what a canary finds out: never a lost record
            # one failed scoring, as a failed batch request is one: the guardrail's error rate is failed
            # scorings over scorings, and a read is one scoring
            self.metrics.version_series(candidate.version, CANARY)[1].inc()
            log.warning("canary scoring of v%s failed (the champion answers): %s", candidate.version, exc)
        t0 = time.perf_counter()
        outcome = score(entries, champion, limit, self.ids.issue)
        return Scored(outcome, champion, CHAMPION, time.perf_counter() - t0)

    # ------------------------------------------------------------------ reading

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:  # from the stream's start: records sent before the first consumer ran are served too
            self.redis.xgroup_create(self.input, self.config.group, id="0", mkstream=True)
            log.info("consumer group %r created on %r", self.config.group, self.input)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _pending_of_mine(self) -> list[Entry]:
        if not self._own_pending:
            return []
        found = self._entries(
            self.redis.xreadgroup(
                self.config.group, self.name, {self.input: "0"}, count=self.config.batch_size
            )
        )
        self._own_pending = bool(found)
        return found

    def _claimed(self) -> list[Entry]:
        """Records another consumer held ``claim_idle_ms`` without acknowledging, checked at most every half
        of that: the cursor walks the pending list, and starts over once it reached the end."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        reply = self.redis.xautoclaim(
            self.input,
            self.config.group,
            self.name,
            min_idle_time=self.config.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.config.batch_size,
        )
        cursor, claimed = reply[0], reply[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":
            self._next_claim = now + self.config.claim_idle_ms / 2000
        entries = [(i, f) for i, f in claimed if f is not None]
        if entries:
            self.counts.claimed += len(entries)
            self.metrics.stream_claimed.inc(len(entries))
            log.info("claimed %d records another consumer held without acknowledging", len(entries))
        return entries

    def _read(self) -> list[Entry]:
        return self._entries(
            self.redis.xreadgroup(
                self.config.group,
                self.name,
                {self.input: ">"},
                count=self.config.batch_size,
                block=self.config.block_ms,
            )
        )

    @staticmethod
    def _entries(reply: Any) -> list[Entry]:
        if not reply:
            return []
        (_, entries), *_ = reply  # one stream asked for
        return [(i, f) for i, f in entries if f is not None]

    def _split_poison(self, entries: list[Entry]) -> tuple[list[DeadLetter], list[Entry]]:
        """Records delivered more than ``max_deliveries`` times: dead letters, not scored again."""
        pending = self.redis.xpending_range(
            self.input,
            self.config.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries),
            consumername=self.name,
        )
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        limit = self.config.max_deliveries
        poison: list[DeadLetter] = []
        kept: list[Entry] = []
        for entry in entries:
            times: int = delivered.get(entry[0], 1)
            if times > limit:
                message = (
                    f"taken {times} times without an outcome (max_deliveries {limit}): the record "
                    "stopped every consumer that took it"
                )
                poison.append(DeadLetter(entry[0].decode(), POISON_STATUS, {"detail": message}, None))
            else:
                kept.append(entry)
        return poison, kept

    # ------------------------------------------------------------------ writing

    def _commit(self, outcomes: list[Outcome], handled: list[bytes]) -> None:
        """Predictions and dead letters written (in the order read) and the records acknowledged, all or
        nothing."""
        pipe = self.redis.pipeline(transaction=True)
        trim = {"maxlen": self.config.max_len, "approximate": True}
        predictions = [fields for o in outcomes for fields in o.prediction_fields()]
        dead = [d for o in outcomes for d in o.dead]
        if len(outcomes) > 1:  # a canary's read: two versions' answers, merged back into the read's order
            predictions.sort(key=lambda fields: stream_order(str(fields[SOURCE_ID_FIELD])))
            dead.sort(key=lambda d: stream_order(d.source_id))
        for fields in predictions:
            pipe.xadd(self.output, fields, **trim)  # type: ignore[arg-type]
        for letter in dead:
            pipe.xadd(self.dead_letters, letter.fields(), **trim)  # type: ignore[arg-type]
        pipe.xack(self.input, self.config.group, *handled)
        pipe.execute()

    def _account(self, share: Scored) -> None:
        outcome, served, role, scored_s = share
        self.counts.predicted += len(outcome.bodies)
        self.counts.dead_letters += len(outcome.dead)
        self.metrics.stream_records.labels(outcome="predicted").inc(len(outcome.bodies))
        self.metrics.stream_records.labels(outcome="dead_letter").inc(len(outcome.dead))
        if outcome.predictions is None or outcome.matrix is None or outcome.request_id is None:
            return
        self.metrics.rows.inc(len(outcome.predictions))
        self.metrics.observe_predictions(outcome.predictions)
        if self.recorder is not None:
            self.recorder.record(
                served.version,
                outcome.request_id,
                outcome.matrix,
                served.logged(outcome.predictions),
                served.encoder.names,
                served.categories,
            )
        rollout = self.holder.rollout
        if rollout is not None:  # each version's figures, as the service keeps them for the guardrails
            self.metrics.observe_version(served.version, role, outcome.predictions, scored_s)
            if rollout.state.stage == SHADOW and role == CHAMPION:
                self.shadow.offer(rollout, served, outcome.matrix, outcome.predictions, outcome.request_id)

    def close(self) -> None:
        self.shadow.close()
        self.redis.close()
