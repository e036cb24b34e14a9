"""``GET /requests/{request_id}``: a prediction this service served, as its prediction log recorded it,
explained after the fact (:mod:`flywheel.audit`, the same record ``flywheel explain-request`` prints).

Only ids this service issued are looked up (their signature is checked as ``/feedback`` checks it), so the
endpoint cannot be used to probe the log for guessed ids. The log is written by the profiling process in
batches (a row waits up to a few seconds in the queue and the process before it is on the store): an id
issued moments ago that is not there yet is a 404 saying so and when to retry (``Retry-After``), not an
error. The store is read and the version that served the row is loaded (when it is not the one served now)
in the thread pool; everything a client can send ends in a 2xx or a 4xx.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.auth import authorized
from serving.deps import ServiceContext, ServiceDep
from serving.errors import error, json_response, quoted
from serving.holder import Served
from serving.request_ids import ROW_SEPARATOR

router = APIRouter(tags=["monitor"])

WRITE_DELAY_S = 10.0
"""How long a served row can take to reach the prediction log: the recorder hands rows over every 0.5 s,
the profiling process writes every 5 s (or per full batch), plus the write."""
VERSIONS_KEPT = 2
"""Versions other than the served one kept loaded for explanations (a swap leaves recent ids on the old)."""


@router.get(
    "/requests/{request_id}",
    responses={
        401: {"description": "missing or wrong bearer token"},
        404: {"description": "not an id this service issued, not in the prediction log, or not written yet"},
    },
)
async def request_record(
    request: Request, request_id: str, service: ServiceDep, top_k: int = Query(5, ge=1, le=100)
) -> Response:
    """A prediction this service served, by its request id (``<id>:<row>`` for a row of a batch): the model
    version, the time, the inputs as served, the prediction (recomputed and compared with the logged one),
    the explanation as ``/explain`` gives it and the label if feedback came back."""
    started = time.perf_counter()
    if not authorized(request, service.token):
        return service.finish("requests", started, error(401, "missing or wrong bearer token"))
    key = _log_key(service, request_id)
    if isinstance(key, Response):
        return service.finish("requests", started, key)
    log_id, issued_at = key
    response = await run_in_threadpool(_lookup, request, service, log_id, issued_at, top_k)
    return service.finish("requests", started, response)


def _log_key(service: ServiceContext, given: str) -> tuple[str, float] | Response:
    """The id as the prediction log keeps it and when it was issued, or the 404 of an id not ours."""
    base, _, row = given.partition(ROW_SEPARATOR)
    issued = service.ids.check(base)
    if isinstance(issued, str):
        return error(404, f"request id {quoted(given)}: {issued}")
    rid, rows = issued.request_id, issued.rows
    if row:
        if not row.isdigit() or int(row) >= rows:
            return error(404, f"request {rid} had {rows} row(s): no row {quoted(row)}")
        return (rid if rows == 1 else f"{rid}{ROW_SEPARATOR}{int(row)}"), issued.issued_at
    if rows > 1:
        return error(
            404, f"request {rid} was a batch of {rows} rows: ask for one as {rid}{ROW_SEPARATOR}<row>"
        )
    return rid, issued.issued_at


def _lookup(request: Request, service: ServiceContext, log_id: str, issued_at: float, top_k: int) -> Response:
    from flywheel import audit

    model = service.settings.model_name
    try:
        store = _store(request, service)
        since = (datetime.fromtimestamp(issued_at, UTC) - timedelta(days=1)).date()
        search = audit.find_prediction(store, model, log_id, since=since)
    except Exception as exc:  # the store is down or unreadable: not the client's doing, and said so
        return error(503, f"the prediction log cannot be read: {type(exc).__name__}: {exc}")
    if search.found is None:
        return _not_found(service, log_id, issued_at)
    logged = search.found
    try:
        label = audit.find_label(store, model, log_id, datetime.fromtimestamp(logged.ts, UTC).date())
    except Exception:  # labels are a detail of the record: an unreadable feedback folder leaves it out
        label = None
    try:
        served = _served(request, service, logged.version)
        return json_response(audit.audit_record(logged, served, label, top_k))
    except Exception as exc:  # the version is gone from the registry, or its schema no longer fits the row
        return json_response(
            {
                "request_id": log_id,
                "model_name": model,
                "model_version": logged.version,
                "ts": logged.ts,
                "inputs": logged.inputs,
                "logged_prediction": logged.prediction,
                "label": label,
                "log_part": logged.part,
                "explanation_error": f"v{logged.version} cannot explain it: {type(exc).__name__}: {exc}",
            }
        )


def _not_found(service: ServiceContext, log_id: str, issued_at: float) -> Response:
    age = time.time() - issued_at
    if age < WRITE_DELAY_S:
        wait = max(1, math.ceil(WRITE_DELAY_S - age))
        return error(
            404,
            f"request {log_id} is not in the prediction log: not written yet, retry in {wait} s",
            headers={"retry-after": str(wait)},
            retry_after_s=wait,
        )
    why = (
        "this service does not log its predictions (profiling is off)"
        if service.recorder is None
        else "its row was dropped by profiling (see /ready), or logged to a store this service does not read"
    )
    return error(404, f"request {log_id} is not in the prediction log: {why}")


def _store(request: Request, service: ServiceContext) -> Any:
    """The stack's artifact store, opened once per app."""
    store = getattr(request.app.state, "audit_store", None)
    if store is None:
        from stacks.components.artifact_store import ArtifactStore
        from stacks.loader import load_stack, selected_stack_name

        store = ArtifactStore.from_stack(load_stack(selected_stack_name(service.settings.stack)))
        request.app.state.audit_store = store
    return store


def _served(request: Request, service: ServiceContext, version: str) -> Served:
    """The served model when it is ``version``, else that version loaded (the last few kept, per app)."""
    current = service.holder.current
    if current is not None and current.version == version:
        return current
    kept: dict[str, Served] | None = getattr(request.app.state, "audit_versions", None)
    if kept is None:
        kept = request.app.state.audit_versions = {}
    if version not in kept:
        from serving.holder import prepare
        from stacks.components.model_registry import load_model

        kept[version] = prepare(
            load_model(service.settings.model_name, version), service.holder.max_batch_size
        )
        while len(kept) > VERSIONS_KEPT:
            kept.pop(next(iter(kept)))
    return kept[version]
