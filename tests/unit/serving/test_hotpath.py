"""The hot path (serving.hotpath) finds the prediction endpoints where the app's routers put them, and calls
them past FastAPI's routing: an empty or stale mapping would still answer every prediction, only slower, so
these check what the endpoint is reached through, not just its answer."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse, Response

from serving.hotpath import HotPathMiddleware, hot_endpoints
from serving.routes import ROUTERS
from serving.routes.predict import HOT_PATH, predict, predict_batch, predict_columns


def test_the_service_routers_put_the_prediction_endpoints_at_their_paths() -> None:
    app = FastAPI()
    for router in ROUTERS:
        app.include_router(router)
    assert hot_endpoints(app.routes, HOT_PATH) == {
        "/predict": predict,
        "/predict/batch": predict_batch,
        "/predict/columns": predict_columns,
    }


def test_the_paths_are_those_the_app_serves_under_a_prefix() -> None:
    outer = APIRouter()
    outer.include_router(ROUTERS[0], prefix="/v1")
    app = FastAPI()
    app.include_router(outer, prefix="/api")
    assert sorted(hot_endpoints(app.routes, HOT_PATH)) == [
        "/api/v1/predict",
        "/api/v1/predict/batch",
        "/api/v1/predict/columns",
    ]


def test_a_hot_endpoint_no_route_serves_stops_start_up() -> None:
    app = FastAPI()
    app.include_router(ROUTERS[1])  # explain only
    with pytest.raises(RuntimeError, match="predict, predict_batch, predict_columns"):
        hot_endpoints(app.routes, HOT_PATH)


async def _reached_how(request: Request) -> Response:
    """Says whether FastAPI's routing chose this endpoint (it records the route in the scope)."""
    return JSONResponse({"routed": "route" in request.scope})


def test_a_hot_endpoint_is_called_past_routing_and_only_for_post() -> None:
    router = APIRouter()
    router.post("/hot")(_reached_how)
    router.get("/hot")(_reached_how)
    router.post("/cold")(_reached_how)
    app = FastAPI()
    app.include_router(router)
    endpoints = hot_endpoints(app.routes, [_reached_how])
    assert endpoints == {"/hot": _reached_how, "/cold": _reached_how}
    app.add_middleware(HotPathMiddleware, endpoints={"/hot": endpoints["/hot"]})
    with TestClient(app) as client:
        assert client.post("/hot").json() == {"routed": False}
        assert client.get("/hot").json() == {"routed": True}
        assert client.post("/cold").json() == {"routed": True}
