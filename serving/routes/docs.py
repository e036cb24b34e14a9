"""The OpenAPI document: the error responses the endpoints share, and the request bodies, which are the
served model's own request models (so the document follows a swap to a version with other features)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from serving.body import JSON
from serving.deps import ServiceContext
from serving.feedback import feedback_schema

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


def openapi(app: FastAPI, ctx: ServiceContext) -> dict[str, Any]:
    """FastAPI's document plus the request models of the model being served."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    served = ctx.holder.current
    feedback, definitions = feedback_schema(
        served.model.task if served is not None else "regression",
        ctx.holder.max_batch_size,
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
    app.openapi_schema = schema
    return schema
