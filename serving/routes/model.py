"""``GET /model``: what the service is serving (behind the bearer token, like the predictions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from flywheel.contracts.model_version import VersionTags
from serving.auth import authorized
from serving.deps import ServiceDep
from serving.errors import error, json_response

router = APIRouter(tags=["ops"])


@router.get("/model", responses={401: {"description": "missing or wrong bearer token"}})
async def model_info(request: Request, service: ServiceDep) -> Response:
    """Version, run id, training data digest and test metrics of the model being served, and its model
    card's artifact URI (``model_card``: ``runs:/<run>/model_card/model_card.html``; null for a version
    trained before cards, or whose card was logged after this service loaded it)."""
    if not authorized(request, service.token):
        return error(401, "missing or wrong bearer token")
    served = service.holder.current
    card = VersionTags(served.model.tags).model_card if served is not None else ""
    return json_response({**service.holder.info(), "model_card": card or None})
