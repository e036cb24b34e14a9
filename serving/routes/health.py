"""``GET /health`` (liveness) and ``GET /ready`` (readiness): what an orchestrator polls."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from serving.deps import ServiceDep
from serving.errors import json_response

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(service: ServiceDep) -> Response:
    """A model is loaded and serving (readiness), with the version served, the one the champion alias
    names, and in one sentence (``detail``) why they differ or why nothing is served; and the traffic
    profiler's health (alive, restarts, rows queued and dropped). A profiler that is down does not make
    the service unready: predictions do not depend on it, and it is restarted on its own."""
    body = service.holder.readiness()
    body["profiler"] = service.recorder.health() if service.recorder is not None else {"enabled": False}
    return json_response(body, 200 if body["ready"] else 503)
