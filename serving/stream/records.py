"""One read of stream entries to predictions and dead letters, judged exactly as ``POST /predict`` judges
a body: the same size limit, JSON decoding, the served model's own request model, and the same error text.

Pure (no Redis, no clock): :mod:`serving.stream.consumer` reads the entries, hands them here with the model
being served and writes what comes back. Valid records of one read are scored as one matrix (one booster
call), under one request id whose rows ``/feedback`` accepts (``serving.request_ids.row_ids``). In a canary
step :func:`split_canary` first sets aside the records the candidate answers, by the same stable hash as
the REST service's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from flywheel.contracts.rollout import RolloutState
from flywheel.contracts.stream import (
    ERROR_FIELD,
    MODEL_VERSION_FIELD,
    PREDICTION_FIELD,
    RECORD_FIELD,
    SOURCE_ID_FIELD,
    STATUS_FIELD,
)
from serving.errors import unprocessable_body
from serving.holder import Served
from serving.request_ids import row_ids
from serving.rollout import rollout_key
from serving.routes.predict import prediction_body
from serving.validation import Invalid, validate

Entry = tuple[bytes, Mapping[bytes, bytes]]
"""A stream entry as redis-py returns it (bytes, no decoding): its id and its fields."""
_RECORD = RECORD_FIELD.encode()


@dataclass(frozen=True)
class DeadLetter:
    """A record the API would refuse, with the status and the body of that refusal."""

    source_id: str
    status: int
    error: dict[str, Any]
    record: bytes | None

    def fields(self) -> dict[str, bytes | str | int]:
        out: dict[str, bytes | str | int] = {
            SOURCE_ID_FIELD: self.source_id,
            STATUS_FIELD: self.status,
            ERROR_FIELD: orjson.dumps(self.error),
        }
        if self.record is not None:
            out[RECORD_FIELD] = self.record
        return out


@dataclass
class Outcome:
    """What one read gives: predictions (in the order read) and dead letters."""

    version: str | None = None
    source_ids: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    request_id: str | None = None
    matrix: np.ndarray | None = None
    predictions: np.ndarray | None = None

    def prediction_fields(self) -> list[dict[str, bytes | str]]:
        version = str(self.version)
        return [
            {SOURCE_ID_FIELD: sid, MODEL_VERSION_FIELD: version, PREDICTION_FIELD: orjson.dumps(body)}
            for sid, body in zip(self.source_ids, self.bodies, strict=True)
        ]


def _refusal(message: str) -> dict[str, Any]:
    return {"detail": message}


def judge(entry: Entry, served: Served, max_record_bytes: int) -> dict[str, Any] | DeadLetter:
    """The record's fields as the request model validated them, or the dead letter the API's answer is."""
    entry_id, fields = entry
    source_id = entry_id.decode()
    raw = fields.get(_RECORD)
    if raw is None:
        named = ", ".join(sorted(k.decode(errors="replace") for k in fields)[:10]) or "none"
        message = f"the entry has no {RECORD_FIELD!r} field (a record as a JSON object); its fields: {named}"
        return DeadLetter(source_id, 400, _refusal(message), None)
    if len(raw) > max_record_bytes:
        return DeadLetter(source_id, 413, _refusal(f"request body over {max_record_bytes} bytes"), None)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(source_id, 400, _refusal(f"malformed JSON: {exc}"), raw)
    try:
        return validate(served.record, payload).__dict__
    except Invalid as exc:
        return DeadLetter(source_id, 422, unprocessable_body(exc.errors, exc.total), raw)


def score(
    entries: Sequence[Entry], served: Served, max_record_bytes: int, issue_id: Callable[[int], str]
) -> Outcome:
    """Predictions for the valid records of ``entries`` (one booster call) and a dead letter for the rest;
    ``issue_id(rows)`` gives the request id of the valid rows (a signed one, as the service issues)."""
    outcome = Outcome(version=served.version)
    records: list[dict[str, Any]] = []
    for entry in entries:
        judged = judge(entry, served, max_record_bytes)
        if isinstance(judged, DeadLetter):
            outcome.dead.append(judged)
        else:
            records.append(judged)
            outcome.source_ids.append(entry[0].decode())
    if not records:
        return outcome
    matrix = served.encoder.encode(records)
    predictions = served.predict(matrix)
    rid = issue_id(len(records))
    outcome.request_id, outcome.matrix, outcome.predictions = rid, matrix, predictions
    rows = row_ids(rid, len(records))
    outcome.bodies = [prediction_body(served, p, row) for p, row in zip(predictions, rows, strict=True)]
    return outcome


def canary_key(entry: Entry, key: str | None, max_record_bytes: int) -> object:
    """What a canary step hashes for a stream record: the spec's ``rollout_key`` field of the record, as the
    REST service hashes it (the same key gets the same version on both), else the entry's id, so a record
    delivered again is answered by the same version."""
    raw = entry[1].get(_RECORD)
    if key is not None and raw is not None and len(raw) <= max_record_bytes:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and key in payload:
            return rollout_key(payload, key)
    return entry[0].decode()


def split_canary(
    entries: Sequence[Entry], state: RolloutState, max_record_bytes: int
) -> tuple[list[Entry], list[Entry]]:
    """(the champion's records, the candidate's) of a read in a canary step."""
    champion: list[Entry] = []
    candidate: list[Entry] = []
    for entry in entries:
        answers = state.answers(canary_key(entry, state.key, max_record_bytes))
        (candidate if answers else champion).append(entry)
    return champion, candidate


def stream_order(source_id: str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``) as a sortable pair: outputs of a read are written in the order read."""
    ms, _, seq = source_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)
