"""The prediction endpoints called straight from the ASGI stack, past FastAPI's routing and dependency layer.

For a one-record prediction FastAPI's own per-request work (route matching over every route, solving the
endpoint's dependencies, its request and response wrappers) cost about as much CPU as the whole model: ~120
of ~380 us in-process. The prediction endpoints take nothing but the request (their query, body and headers
are read by the endpoint itself, against the served model's request model), so this middleware hands the
request to the very same endpoint function; FastAPI still routes everything else and still documents these
endpoints in its OpenAPI schema. It sits inside Starlette's error middleware, so an unexpected exception is
still a logged 500, as on any other route.

The paths are those the routes declare (:func:`hot_endpoints`), so a renamed route cannot leave its old path
served here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def hot_endpoints(routes: Sequence[BaseRoute], hot: Iterable[Endpoint]) -> dict[str, Endpoint]:
    """Path to endpoint for each of ``hot``, as the app's ``routes`` serve it (included routers too: FastAPI
    keeps an included router as one nested route, whose routes only it can list). An endpoint not found is
    an error at start-up: an empty hot path would serve every prediction, only slower."""
    wanted = list(hot)
    found: dict[str, Endpoint] = {}
    for context in iter_route_contexts(routes):
        if context.endpoint in wanted and context.path is not None:
            found[context.path] = context.endpoint
    missing = [e.__name__ for e in wanted if e not in found.values()]
    if missing:
        raise RuntimeError(f"hot path: no route serves {', '.join(missing)}")
    return found


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
