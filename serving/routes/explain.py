"""``POST /explain``: the TreeSHAP contributions of one record, computed apart from the answer built from
them (:func:`contributions`, :func:`explanation_body`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from serving.deps import ServiceDep
from serving.errors import json_response
from serving.holder import Served
from serving.routes.docs import ERRORS, body_schema
from serving.schemas import Explanation

router = APIRouter(tags=["predict"])


def contributions(served: Served, matrix: np.ndarray) -> np.ndarray:
    """Each feature's contribution to the margin of the first row of ``matrix``, then the base value (a
    row of them per class for a multiclass model)."""
    import xgboost as xgb

    dmatrix = xgb.DMatrix(
        matrix,
        feature_names=served.encoder.names,
        feature_types=served.encoder.feature_types,
        enable_categorical=True,
    )
    contrib: np.ndarray = served.model.booster.predict(dmatrix, pred_contribs=True, validate_features=False)[
        0
    ]
    return contrib


def explanation_body(
    served: Served,
    values: dict[str, Any],
    contrib: np.ndarray,
    prediction: Any,
    request_id: str,
    top_k: int,
) -> dict[str, Any]:
    """The answer: the prediction, the base value, the ``top_k`` features by magnitude, and all of them.

    For a multiclass model (``contrib`` of shape classes x features+1) these are towards the predicted
    class, and ``class_contributions`` gives every class's, bias included.
    """
    names = served.encoder.names
    extra: dict[str, Any] = {}
    if contrib.ndim == 2:
        best = int(np.argmax(prediction))
        extra = {
            "predicted_class": served.classes[best],
            "class_contributions": {
                cls: {**{n: float(c) for n, c in zip(names, row[:-1], strict=True)}, "bias": float(row[-1])}
                for cls, row in zip(served.classes, contrib, strict=True)
            },
        }
        contrib, prediction = contrib[best], prediction[best]
    order = np.argsort(-np.abs(contrib[:-1]))[:top_k]
    return {
        "request_id": request_id,
        "model_version": served.version,
        "prediction": float(prediction),
        "base_value": float(contrib[-1]),
        "top": [
            {"feature": names[i], "value": values.get(names[i]), "contribution": float(contrib[i])}
            for i in order
        ],
        "contributions": {n: float(c) for n, c in zip(names, contrib[:-1], strict=True)},
        **extra,
    }


@router.post("/explain", response_model=Explanation, openapi_extra=body_schema("Record"), responses=ERRORS)
async def explain(request: Request, service: ServiceDep, top_k: int = Query(5, ge=1, le=100)) -> Response:
    """TreeSHAP contributions of one record (margin units), with the top-k features by magnitude."""
    started = time.perf_counter()
    outcome = await service.parsed(request, "record")
    if isinstance(outcome, Response):
        return service.finish("explain", started, outcome)
    served, record = outcome
    values = record.__dict__
    matrix = served.encoder.encode([values])
    contrib = contributions(served, matrix)
    rid = service.request_id()
    prediction = served.predict(matrix)[0]
    body = explanation_body(served, values, contrib, prediction, rid, top_k)
    return service.finish("explain", started, json_response(body))
