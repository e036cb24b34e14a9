"""The service's endpoints, one router per resource, in the order the OpenAPI document lists them.

The app includes each of :data:`ROUTERS` itself rather than one router of routers: FastAPI keeps an included
router as a nested route it matches through on every request, ~13 us a level. The prediction endpoints are
also called straight from the ASGI stack (:data:`serving.routes.predict.HOT_PATH`, :mod:`serving.hotpath`).
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.routes import explain, feedback, health, metrics, model, predict

ROUTERS: tuple[APIRouter, ...] = (
    predict.router,
    explain.router,
    feedback.router,
    health.router,
    model.router,
    metrics.router,
)
