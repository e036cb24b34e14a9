"""``POST /predict``, ``/predict/batch``, ``/predict/columns``: scoring one record or a batch.

These three are the hot path: :mod:`serving.hotpath` calls them straight from the ASGI stack, so they take the
request only (no FastAPI dependencies: none would be resolved there) and find the service with
:func:`serving.deps.get_service`. FastAPI still routes them where the hot path does not apply (a root path)
and documents them. What a response says is built in one function per shape (:func:`prediction_body`,
:func:`batch_body`), apart from parsing and scoring.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from serving.deps import get_service
from serving.errors import json_response
from serving.holder import Served
from serving.routes.docs import ERRORS, body_schema
from serving.schemas import BatchPrediction, Prediction

router = APIRouter(tags=["predict"])


def prediction_body(served: Served, p: np.ndarray, request_id: str) -> dict[str, Any]:
    """The answer for one record: ``p`` is the model's output for it: the positive-class probability
    (binary), the value (regression), or the class probabilities (multiclass)."""
    if p.ndim:  # multiclass: the predicted class, its probability, and every class's
        return {
            "request_id": request_id,
            "model_name": served.model.name,
            "model_version": served.version,
            "threshold": None,
            **_class_item(served.classes, p.tolist()),
        }
    value = float(p)
    binary = served.model.task == "binary"
    threshold = served.model.threshold
    return {
        "request_id": request_id,
        "model_name": served.model.name,
        "model_version": served.version,
        "prediction": value,
        "decision": bool(value >= threshold) if binary else None,
        "threshold": threshold if binary else None,
    }


def batch_body(served: Served, predictions: np.ndarray, request_id: str) -> dict[str, Any]:
    """The answer for a batch, one entry per row in row order."""
    binary = served.model.task == "binary"
    threshold = served.model.threshold
    if predictions.ndim == 2:
        items = [_class_item(served.classes, row) for row in predictions.tolist()]
    else:
        values = predictions.tolist()
        decisions = (predictions >= threshold).tolist() if binary else [None] * len(values)
        items = [{"prediction": p, "decision": d} for p, d in zip(values, decisions, strict=True)]
    return {
        "request_id": request_id,
        "model_name": served.model.name,
        "model_version": served.version,
        "threshold": threshold if binary else None,
        "predictions": items,
    }


def _class_item(classes: list[str], probabilities: list[float]) -> dict[str, Any]:
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "prediction": probabilities[best],
        "decision": None,
        "predicted_class": classes[best],
        "probabilities": dict(zip(classes, probabilities, strict=True)),
    }


@router.post("/predict", response_model=Prediction, openapi_extra=body_schema("Record"), responses=ERRORS)
async def predict(request: Request) -> Response:
    """Score one record: probability (or value), decision at the threshold, version, request id."""
    started = time.perf_counter()
    service = get_service(request)
    outcome = await service.parsed(request, "record")
    if isinstance(outcome, Response):
        return service.finish("predict", started, outcome)
    served, record = outcome
    rid = service.request_id()
    served, predictions = service.score_as(served, served.encoder.encode([record.__dict__]), rid)
    return service.finish("predict", started, json_response(prediction_body(served, predictions[0], rid)))


async def _scored_batch(request: Request, kind: str, endpoint: str) -> Response:
    """Both batch shapes (``records``, ``columns``): parse and check, score, answer in row order."""
    started = time.perf_counter()
    service = get_service(request)
    outcome = await service.parsed_batch(request, kind)
    if isinstance(outcome, Response):
        return service.finish(endpoint, started, outcome)
    served, matrix = outcome
    rid = service.request_id(len(matrix))
    served, predictions = service.score_as(served, matrix, rid)
    body = batch_body(served, predictions, rid)
    return service.finish(endpoint, started, json_response(body))


@router.post(
    "/predict/batch", response_model=BatchPrediction, openapi_extra=body_schema("Batch"), responses=ERRORS
)
async def predict_batch(request: Request) -> Response:
    """Score up to the configured maximum of records in one request, in order."""
    return await _scored_batch(request, "records", "predict_batch")


@router.post(
    "/predict/columns",
    response_model=BatchPrediction,
    openapi_extra=body_schema("ColumnBatch"),
    responses=ERRORS,
)
async def predict_columns(request: Request) -> Response:
    """Score a batch given as one array per feature (all the same length, up to the configured maximum);
    predictions in row order. The cheapest way to send many rows: a third of the JSON of ``records``."""
    return await _scored_batch(request, "columns", "predict_columns")


HOT_PATH = (predict, predict_batch, predict_columns)
"""The endpoints :mod:`serving.hotpath` calls directly, at the paths their routes declare."""
