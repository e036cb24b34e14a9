"""The prediction endpoints called straight from the ASGI stack, past FastAPI's routing and dependency layer.

For a one-record prediction FastAPI's own per-request work (route matching over every route, solving the
endpoint's dependencies, its request and response wrappers) cost about as much CPU as the whole model: ~120
of ~380 us in-process. The prediction endpoints take nothing but the request (their query, body and headers
are read by the endpoint itself, against the served model's request model), so this middleware hands the
request to the very same endpoint function; FastAPI still routes everything else and still documents these
endpoints in its OpenAPI schema. It sits inside Starlette's error middleware, so an unexpected exception is
still a logged 500, as on any other route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotPathMiddleware:
    """``POST`` to one of ``endpoints`` (exact path) runs that endpoint directly; anything else goes on."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
