"""``GET /metrics``: the service's Prometheus metrics (:mod:`serving.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from serving.deps import ServiceDep

router = APIRouter(tags=["ops"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: requests, latency, predictions, model version, profiling queue."""
    if service.recorder is not None:
        service.metrics.queue_depth.set(max(0, service.recorder.depth()))
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
