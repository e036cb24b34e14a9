"""The OpenAPI document: the error responses the endpoints share, and the request bodies, which are the
served model's own request models.

The document is built once per served version (:class:`OpenAPIDocument`), not once per app as FastAPI's
``app.openapi_schema`` would keep it: after a hot swap to a version with other features, ``/openapi.json``
and the ``/docs`` page that reads it describe the version now served."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from serving.body import JSON
from serving.deps import ServiceContext
from serving.feedback import feedback_schema
from serving.holder import Served

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON, or the client went away before the body was complete"},
    401: {"description": "missing or wrong bearer token"},
    408: {"description": "the body did not arrive within the body timeout"},
    413: {"description": "body or batch too large"},
    415: {"description": "the body is not application/json"},
    422: {"description": "a field is missing, extra, mistyped, out of vocabulary or null where not allowed"},
    503: {"description": "no model loaded yet"},
}


def body_schema(name: str) -> dict[str, Any]:
    """An endpoint's request body, by the component name :func:`openapi` fills in: the endpoints read their
    bodies themselves, so FastAPI cannot infer one."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


class OpenAPIDocument:
    """``app.openapi``: the document of the version being served, rebuilt when the holder swaps.

    The cache is one (served version, document) pair, replaced in one assignment: a request that races a
    swap gets a document of the old model or of the new one, and the next request after the swap rebuilds.
    It is keyed by the version number, not the model object, so it keeps no swapped-out booster alive."""

    def __init__(self, app: FastAPI, ctx: ServiceContext) -> None:
        self.app = app
        self.ctx = ctx
        self._cached: tuple[str | None, dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        served = self.ctx.holder.current
        version = None if served is None else served.version
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        schema = openapi(self.app, served, self.ctx.holder.max_batch_size)
        self._cached = (version, schema)
        return schema


def openapi(app: FastAPI, served: Served | None, max_batch_size: int) -> dict[str, Any]:
    """FastAPI's document plus the request models of ``served`` (placeholders when nothing is served)."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    feedback, definitions = feedback_schema(
        served.model.task if served is not None else "regression",
        max_batch_size,
        served.classes if served is not None else None,
    )
    components.update(definitions)
    components["Feedback"] = feedback
    models: list[type[BaseModel]] = []
    if served is not None:
        models += [served.record, served.batch, served.columns]
    for model in models:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            components[name] = definition
        components[model.__name__] = body
    if served is None:
        components.setdefault("Record", {"type": "object"})
        components.setdefault("Batch", {"type": "object"})
        components.setdefault("ColumnBatch", {"type": "object"})
    return schema
