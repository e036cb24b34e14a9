"""``GET /predictions/{key}`` and ``POST /predictions/lookup``: precomputed predictions, by key.

Batch inference upserts its predictions into the stack's prediction store (a SQL table, keyed by the
problem spec's ``key_columns``: :mod:`stacks.components.prediction_store`); these endpoints answer from it,
saying which version made each answer and how old it is. A key the table lacks is a 404 naming the key,
unless the stack's store says ``fallback: live`` and the request carries the record's features (a lookup
item's ``features``): then the served model scores it now, as ``POST /predict`` would.

Every database call runs in the thread pool (``run_in_threadpool``), never on the event loop, on the
reader's connection pool. Client input is bounded (key length, lookup size, the body limit) and never
reaches a 5xx: a key that does not fit the key columns is a 422 saying what they are; a database that
cannot be reached is a 503 naming it, password masked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.auth import authorized
from serving.body import JSON
from serving.deps import ServiceContext, ServiceDep
from serving.errors import MAX_ERRORS, error, field_error, json_response, quoted, unprocessable
from serving.request_ids import ROW_SEPARATOR
from serving.routes.predict import prediction_body
from serving.settings import ServiceSettings
from serving.validation import Invalid, validate
from stacks.components.prediction_store import (
    MAX_KEY_CHARS,
    BadKey,
    KeyColumn,
    PredictionReader,
    PredictionStoreUnavailable,
    StoredPrediction,
    canonical_key,
)

log = logging.getLogger("flywheel.serving")
router = APIRouter(tags=["predictions"])


@dataclass(frozen=True)
class PredictionsState:
    """``app.state.predictions``: the stack's prediction store as a reader, or why there is none."""

    reader: PredictionReader | None
    why_not: str = ""
    status: int = 404  # without a reader: 404 (the stack names no store), 503 (it cannot be set up)


def attach(app: FastAPI, settings: ServiceSettings) -> None:
    """Give ``app`` the reader of its stack's prediction store; a store that cannot be set up (a secret
    that does not resolve) leaves the endpoints answering 503 with the reason, not a service that fails
    to start: predictions by features still work."""
    from stacks.loader import load_stack, selected_stack_name

    try:
        stack = load_stack(selected_stack_name(settings.stack))
        reader = PredictionReader.from_stack(stack)
        state = PredictionsState(
            reader, "" if reader else f"the stack '{stack.name}' names no prediction_store"
        )
    except Exception as exc:  # the rest of the service must still start
        log.error("prediction store not available: %s", exc)
        state = PredictionsState(None, f"the prediction store is not available: {exc}", 503)
    app.state.predictions = state


class KeyColumnInfo(BaseModel):
    name: str
    kind: str = Field(description="number or text")


class StoreInfo(BaseModel):
    model_name: str
    key_columns: list[KeyColumnInfo] | None = Field(
        description="the order of a key's path segments; null until a batch run stored predictions"
    )
    table: str
    fallback: str
    max_lookup_keys: int


class StoredAnswer(BaseModel):
    key: dict[str, Any]
    found: bool = Field(description="true: from the table; false: scored live (source) or missing")
    source: str | None = Field(description="table, live, or null for a key with no answer")
    model_version: str | None = None
    scored_at: str | None = Field(default=None, description="when it was scored (UTC, ISO 8601)")
    age_s: float | None = Field(default=None, description="seconds since it was scored")
    prediction: float | None = None
    decision: bool | None = None
    predicted_class: str | None = None
    probabilities: dict[str, float] | None = None
    request_id: str | None = Field(default=None, description="a live answer's id, for POST /feedback")
    detail: str | None = Field(default=None, description="why a key has no answer")


class LookupAnswer(BaseModel):
    model_name: str
    predictions: list[StoredAnswer]
    found: int
    live: int
    missing: int


LOOKUP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["items"],
                    "additionalProperties": False,
                    "properties": {
                        "items": {
                            "type": "array",
                            "description": "up to the store's max_lookup_keys keys, answered in order",
                            "items": {
                                "type": "object",
                                "required": ["key"],
                                "additionalProperties": False,
                                "properties": {
                                    "key": {
                                        "description": "the key columns' values in order (GET /predictions "
                                        "lists them), or an object by column name",
                                        "oneOf": [
                                            {"type": "array", "items": {"type": ["string", "number"]}},
                                            {"type": "object"},
                                        ],
                                    },
                                    "features": {
                                        "type": "object",
                                        "description": "the record (as POST /predict takes it): scored "
                                        "live when the key is not stored and the stack's fallback is live",
                                    },
                                },
                            },
                        }
                    },
                },
                "example": {"items": [{"key": [2013, 1, 1, "UA", 1545, "EWR"]}]},
            }
        },
    }
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token"},
    404: {"description": "no prediction stored for the key (the detail names it), or no prediction store"},
    413: {"description": "body or lookup too large"},
    422: {"description": "a key that does not fit the key columns, or features that do not fit the model"},
    503: {"description": "the prediction store's database cannot be reached, or no model to score live"},
}


def _state(request: Request) -> PredictionsState:
    state: PredictionsState | None = getattr(request.app.state, "predictions", None)
    return state or PredictionsState(None, "this service was built without the predictions endpoints")


def _stored_body(found: StoredPrediction, now: float) -> dict[str, Any]:
    return {
        "key": found.key,
        "found": True,
        "source": "table",
        "model_version": found.model_version,
        "scored_at": found.scored_at.isoformat(),
        "age_s": round(found.age_s(now), 3),
        "prediction": found.prediction,
        "decision": found.decision,
        "predicted_class": found.predicted_class,
        "probabilities": found.probabilities,
    }


def _missing_body(key: dict[str, Any], model_name: str, reader: PredictionReader) -> dict[str, Any]:
    return {"key": key, "found": False, "source": None, "detail": _missing_text(key, model_name, reader)}


def _missing_text(key: dict[str, Any], model_name: str, reader: PredictionReader) -> str:
    shown = ", ".join(f"{k}={quoted(v)}" for k, v in key.items())
    return f"no precomputed prediction of {model_name} for key {shown} in {reader.describe()}"


async def _columns(service: ServiceContext, reader: PredictionReader) -> list[KeyColumn] | Response:
    try:
        columns = await run_in_threadpool(reader.key_columns, service.settings.model_name)
    except PredictionStoreUnavailable as exc:
        return error(503, str(exc))
    if columns is None:
        return error(
            404,
            f"no precomputed predictions of {service.settings.model_name} in {reader.describe()} yet: "
            "run batch inference on a stack with this prediction_store and a spec with key_columns",
        )
    return columns


def _reader_or_error(request: Request, service: ServiceContext) -> PredictionReader | Response:
    if not authorized(request, service.token):
        return error(401, "missing or wrong bearer token")
    state = _state(request)
    if state.reader is None:
        return error(state.status, state.why_not)
    return state.reader


@router.get("/predictions", response_model=StoreInfo, responses=RESPONSES)
async def store_info(request: Request, service: ServiceDep) -> Response:
    """The prediction store this service answers from, and the key columns a key is made of, in order."""
    started = time.perf_counter()
    reader = _reader_or_error(request, service)
    if isinstance(reader, Response):
        return service.finish("predictions", started, reader)
    try:
        columns = await run_in_threadpool(reader.key_columns, service.settings.model_name)
    except PredictionStoreUnavailable as exc:
        return service.finish("predictions", started, error(503, str(exc)))
    body = {
        "model_name": service.settings.model_name,
        "key_columns": None if columns is None else [{"name": c.name, "kind": c.kind} for c in columns],
        "table": reader.table,
        "fallback": reader.fallback,
        "max_lookup_keys": reader.max_lookup_keys,
    }
    return service.finish("predictions", started, json_response(body))


@router.get("/predictions/{key:path}", response_model=StoredAnswer, responses=RESPONSES)
async def prediction_by_key(
    request: Request,
    service: ServiceDep,
    key: str = Path(
        description="the key columns' values as path segments, in the order GET /predictions lists them: "
        "/predictions/2013/1/1/UA/1545/EWR for year, month, day, carrier, flight, origin. A value that "
        "holds '/' can only be looked up with POST /predictions/lookup",
        max_length=MAX_KEY_CHARS,
    ),
) -> Response:
    """The stored prediction for one key: the answer, the version that made it and how old it is."""
    started = time.perf_counter()
    reader = _reader_or_error(request, service)
    if isinstance(reader, Response):
        return service.finish("prediction_by_key", started, reader)
    columns = await _columns(service, reader)
    if isinstance(columns, Response):
        return service.finish("prediction_by_key", started, columns)
    segments = key.split("/")
    try:
        canonical = canonical_key(columns, segments)
    except BadKey as exc:
        order = "/".join(f"{{{c.name}}}" for c in columns)
        errors = [field_error(["key"], f"{exc}; the path is /predictions/{order}", "key")]
        return service.finish("prediction_by_key", started, unprocessable(errors, 1))
    try:
        found = await run_in_threadpool(reader.lookup, service.settings.model_name, [canonical])
    except PredictionStoreUnavailable as exc:
        return service.finish("prediction_by_key", started, error(503, str(exc)))
    stored = found.get(canonical)
    if stored is None:
        shown = dict(zip([c.name for c in columns], segments, strict=True))
        missing = error(404, _missing_text(shown, service.settings.model_name, reader), key=shown)
        return service.finish("prediction_by_key", started, missing)
    return service.finish("prediction_by_key", started, json_response(_stored_body(stored, time.time())))


@dataclass
class _Item:
    key: str
    shown: dict[str, Any]
    features: Any


def _parse_item(item: Any, i: int, columns: list[KeyColumn]) -> _Item | tuple[list[str | int], str]:
    """One lookup item, or (where, what is wrong)."""
    if not isinstance(item, dict) or "key" not in item or set(item) - {"key", "features"}:
        return ["items", i], "an item is {'key': [...] or {...}, 'features': {...} (optional)}"
    if not isinstance(item["key"], list | dict):
        return ["items", i, "key"], "a key is a list of the key columns' values or an object"
    features = item.get("features")
    if features is not None and not isinstance(features, dict):
        return ["items", i, "features"], "features are an object, the record as POST /predict takes it"
    try:
        canonical = canonical_key(columns, item["key"])
    except BadKey as exc:
        return ["items", i, "key"], str(exc)
    shown = {c.name: v for c, v in zip(columns, _ordered(columns, item["key"]), strict=True)}
    return _Item(canonical, shown, features)


def _parse_items(payload: Any, columns: list[KeyColumn], limit: int) -> list[_Item] | Response:
    """The lookup's items, or the 4xx naming what is wrong (at most ``MAX_ERRORS`` errors)."""
    if not isinstance(payload, dict) or set(payload) != {"items"} or not isinstance(payload["items"], list):
        shape = [field_error([], 'the body is {"items": [{"key": [...], "features": {...}}, ...]}', "shape")]
        return unprocessable(shape, 1)
    raw = payload["items"]
    if len(raw) > limit:
        return error(413, f"a lookup holds at most {limit} keys (the prediction store's max_lookup_keys)")
    items: list[_Item] = []
    errors: list[dict[str, Any]] = []
    total = 0
    for i, item in enumerate(raw):
        parsed = _parse_item(item, i, columns)
        if isinstance(parsed, _Item):
            items.append(parsed)
            continue
        total += 1
        if len(errors) < MAX_ERRORS:
            errors.append(field_error(parsed[0], parsed[1], "key"))
    return unprocessable(errors, total) if errors else items


def _ordered(columns: list[KeyColumn], key: list[Any] | dict[str, Any]) -> list[Any]:
    return [key[c.name] for c in columns] if isinstance(key, dict) else key


def _live(service: ServiceContext, items: list[tuple[int, _Item]]) -> dict[int, dict[str, Any]] | Response:
    """Score the records of ``items`` (position, item) with the served model: answers by position, or the
    503 (no model) or 422 (features that do not fit it)."""
    served = service.served_or_error()
    if isinstance(served, Response):
        return served
    records: list[Any] = []
    errors: list[dict[str, Any]] = []
    total = 0
    for i, item in items:
        try:
            records.append(validate(served.record, item.features, ("items", i, "features")))
        except Invalid as exc:
            total += exc.total
            errors.extend(exc.errors[: MAX_ERRORS - len(errors)])
    if errors:
        return unprocessable(errors, total)
    rid = service.request_id(len(records))
    predictions = service.score(served, served.encoder.encode([r.__dict__ for r in records]), rid)
    now = time.time()
    answers: dict[int, dict[str, Any]] = {}
    for row, ((i, item), p) in enumerate(zip(items, predictions, strict=True)):
        row_id = rid if len(records) == 1 else f"{rid}{ROW_SEPARATOR}{row}"
        body = prediction_body(served, p, row_id)
        answers[i] = {
            "key": item.shown,
            "found": False,
            "source": "live",
            "model_version": served.version,
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
            "age_s": 0.0,
            "prediction": body.get("prediction"),
            "decision": body.get("decision"),
            "predicted_class": body.get("predicted_class"),
            "probabilities": body.get("probabilities"),
            "request_id": row_id,
        }
    return answers


@router.post(
    "/predictions/lookup", response_model=LookupAnswer, openapi_extra=LOOKUP_BODY, responses=RESPONSES
)
async def lookup(request: Request, service: ServiceDep) -> Response:
    """Stored predictions for a batch of keys, in order; a key the table lacks is scored live from its
    ``features`` when the stack's prediction store says ``fallback: live``, and is reported missing
    otherwise (``found: false`` with the reason: the request as a whole still answers 200)."""
    started = time.perf_counter()
    reader = _reader_or_error(request, service)
    if isinstance(reader, Response):
        return service.finish("predictions_lookup", started, reader)
    payload = await service.read_json(request)
    if isinstance(payload, Response):
        return service.finish("predictions_lookup", started, payload)
    columns = await _columns(service, reader)
    if isinstance(columns, Response):
        return service.finish("predictions_lookup", started, columns)
    items = _parse_items(payload, columns, reader.max_lookup_keys)
    if isinstance(items, Response):
        return service.finish("predictions_lookup", started, items)
    model_name = service.settings.model_name
    try:
        found = await run_in_threadpool(reader.lookup, model_name, [item.key for item in items])
    except PredictionStoreUnavailable as exc:
        return service.finish("predictions_lookup", started, error(503, str(exc)))
    now = time.time()
    answers: list[dict[str, Any] | None] = []
    to_score: list[tuple[int, _Item]] = []
    for i, item in enumerate(items):
        stored = found.get(item.key)
        if stored is not None:
            answers.append(_stored_body(stored, now))
            continue
        answers.append(None)
        if reader.fallback == "live" and item.features is not None:
            to_score.append((i, item))
    live: dict[int, dict[str, Any]] = {}
    if to_score:
        scored = _live(service, to_score)
        if isinstance(scored, Response):
            return service.finish("predictions_lookup", started, scored)
        live = scored
    out = [
        answer or live.get(i) or _missing_body(items[i].shown, model_name, reader)
        for i, answer in enumerate(answers)
    ]
    body = {
        "model_name": model_name,
        "predictions": out,
        "found": sum(1 for a in out if a["found"]),
        "live": len(live),
        "missing": sum(1 for a in out if a["source"] is None),
    }
    return service.finish("predictions_lookup", started, json_response(body))
