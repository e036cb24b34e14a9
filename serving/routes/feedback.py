"""``POST /feedback``: ground truth for an earlier prediction, checked (:mod:`serving.feedback`) before
monitoring can see it."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from serving.deps import ServiceDep
from serving.errors import json_response
from serving.routes.docs import ERRORS, body_schema

router = APIRouter(tags=["monitor"])


@router.post(
    "/feedback",
    status_code=202,
    responses={
        **ERRORS,
        404: {"description": "not a request id this service issued, or past the feedback window"},
        409: {"description": "this request (or row) was labelled before"},
    },
    openapi_extra=body_schema("Feedback"),
)
async def feedback(request: Request, service: ServiceDep) -> Response:
    """Ground truth for an earlier prediction, by the request id the service returned with it: ``label``
    for a one-row request (or one row of a batch, as ``<request_id>:<row>``), or ``labels`` for every row
    of a batch, in order. Labels must fit the model's task (binary: 0 or 1; multiclass: a class name or
    its index; regression: a finite number); each request or row is labelled once (a repeat is 409)."""
    started = time.perf_counter()
    payload = await service.read_json(request)
    if isinstance(payload, Response):
        return service.finish("feedback", started, payload)
    served = service.served_or_error()
    if isinstance(served, Response):
        return service.finish("feedback", started, served)
    accepted = service.feedback.check(payload, served.model.task, served.reader.max_batch, served.classes)
    if isinstance(accepted, Response):
        return service.finish("feedback", started, accepted)
    service.metrics.feedback.inc(len(accepted.labels))
    if service.recorder is not None:
        service.recorder.feedback(accepted.request_id, accepted.labels)
    body = {"accepted": len(accepted.labels), "request_id": accepted.request_id}
    return service.finish("feedback", started, json_response(body, 202))
