"""The FastAPI app factory: ``uvicorn serving.app:create_app --factory``.

Requests are decoded with orjson and validated against the served model's own request model (built from its
feature schema), then encoded straight into the booster's input and scored in place; a batch is checked and
encoded column by column (``serving.columns``), with the request model as the judge of any body that check
cannot vouch for. Validation happens per request against the model being served, so a swap to a version with
other features needs no restart. Client errors are 4xx with the offending fields named; nothing a client
sends reaches a 5xx.

The heap left by start-up (MLflow, pandas, the first model: ~340k objects) is frozen out of the garbage
collector: a full collection over it stalled every request in flight for 250-300 ms, and batch requests,
which allocate thousands of short-lived objects, set one off every few hundred requests.
"""

from __future__ import annotations

import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from serving.auth import authorized, token_from_stack
from serving.batch_checks import check_columns, check_records
from serving.body import JSON, BodyRejected, read_body
from serving.errors import error as _error
from serving.errors import json_response as _json
from serving.errors import unprocessable
from serving.feedback import FeedbackChecker, feedback_schema
from serving.holder import ModelHolder, Served
from serving.hotpath import HotPathMiddleware
from serving.metrics import ServiceMetrics
from serving.profiling import ProfilerConfig, TrafficRecorder
from serving.request_ids import LabelledIds, RequestIds, load_key
from serving.schemas import BatchPrediction, Explanation, Prediction
from serving.settings import ServiceSettings
from serving.validation import Invalid, validate

log = logging.getLogger("flywheel.serving")
FEEDBACK_WINDOW_S = 90 * 86400
"""How long after a prediction its ground truth is accepted (labels of credit or churn take months)."""


class _Ctx:
    """Per-app state shared by the endpoints."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.holder = ModelHolder(settings.model_name, self.metrics, settings.max_batch_size)
        self.token: str | None = None
        self.recorder: TrafficRecorder | None = None
        # set by _startup, from the key the artifact store shares (serving.request_ids)
        self.ids: RequestIds
        self.feedback: FeedbackChecker


def _service_logging() -> None:
    """The service's own log lines (a model loaded, a client gone mid-body, a registry problem) to stderr.

    uvicorn configures its own loggers only: without a handler, Python shows nothing below WARNING, so a
    service under uvicorn said nothing of what it loaded. Where the host application already logs (a root
    handler, as under pytest or a user's config), its configuration is left alone."""
    logger = logging.getLogger("flywheel")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    _service_logging()
    settings = settings or ServiceSettings.from_env()
    ctx = _Ctx(settings)
    _startup(ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.holder.start_watching(settings.watch_interval_s)
        if settings.profiling:
            ctx.recorder = _start_recorder(ctx)
        gc.collect()
        gc.freeze()  # later collections skip the start-up heap (see the module docstring)
        yield
        ctx.holder.stop()
        if ctx.recorder is not None:
            ctx.recorder.close()

    app = FastAPI(
        title="Flywheel prediction service",
        version="1",
        lifespan=lifespan,
        description=f"Serves `models:/{settings.model_name}@champion`, hot-swapped when the alias moves.",
    )
    app.state.ctx = ctx

    async def read_json(request: Request) -> Any | Response:
        if not authorized(request, ctx.token):
            return _error(401, "missing or wrong bearer token")
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyRejected as exc:
            # the rest of the body is never read: the connection cannot carry another request
            return _error(exc.status, exc.message, headers={"connection": "close"})
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"malformed JSON: {exc}")

    def served_or_error() -> Served | Response:
        served = ctx.holder.current
        if served is None:
            return _error(503, "no model loaded yet", last_error=ctx.holder.last_error)
        return served

    def finish(endpoint: str, started: float, response: Response) -> Response:
        count, latency = ctx.metrics.request_series(endpoint, response.status_code)
        count.inc()
        latency.observe(time.perf_counter() - started)
        return response

    def score(served: Served, matrix: np.ndarray, request_id: str) -> np.ndarray:
        predictions = served.predict(matrix)
        ctx.metrics.rows.inc(len(predictions))
        for p in predictions[:100]:
            ctx.metrics.predictions.observe(float(p))
        if ctx.recorder is not None:
            ctx.recorder.record(
                served.version, request_id, matrix, predictions, served.encoder.names, served.categories
            )
        return predictions

    def request_id(rows: int = 1) -> str:
        """A fresh signed id (serving.request_ids): feedback is accepted for ids this service issued, so a
        client's own ``X-Request-ID`` is not used as the key."""
        return ctx.ids.issue(rows)

    def decision(served: Served, p: float) -> bool | None:
        return bool(p >= served.model.threshold) if served.model.task == "binary" else None

    async def parsed(request: Request, kind: str) -> tuple[Served, BaseModel] | Response:
        """Auth, size, JSON, a loaded model, then the served model's own request model (``record`` or
        ``batch``): the first failure is the response."""
        payload = await read_json(request)
        if isinstance(payload, Response):
            return payload
        served = served_or_error()
        if isinstance(served, Response):
            return served
        try:
            return served, validate(getattr(served, kind), payload)
        except Invalid as exc:
            return unprocessable(exc.errors, exc.total)

    async def parsed_batch(request: Request, kind: str) -> tuple[Served, np.ndarray] | Response:
        """As :func:`parsed` for a batch (``records`` or ``columns``), to the booster's matrix: checked column
        by column when the body is valid, and by the request model (which names each offending record or
        value and its field) when it is not."""
        payload = await read_json(request)
        if isinstance(payload, Response):
            return payload
        served = served_or_error()
        if isinstance(served, Response):
            return served
        records = kind == "records"
        matrix = served.reader.from_records(payload) if records else served.reader.from_columns(payload)
        if matrix is not None:
            return served, matrix
        limit = served.reader.max_batch
        if records:
            checked = check_records(served.record, served.encoder, payload, limit)
        else:
            adapters, required = served.column_checks
            checked = check_columns(adapters, required, served.encoder, payload, limit)
        return checked if isinstance(checked, Response) else (served, checked)

    def predictions_body(served: Served, predictions: np.ndarray, rid: str) -> dict[str, Any]:
        binary = served.model.task == "binary"
        threshold = served.model.threshold
        values = predictions.tolist()
        decisions = (predictions >= threshold).tolist() if binary else [None] * len(values)
        return {
            "request_id": rid,
            "model_name": served.model.name,
            "model_version": served.version,
            "threshold": threshold if binary else None,
            "predictions": [{"prediction": p, "decision": d} for p, d in zip(values, decisions, strict=True)],
        }

    @app.post(
        "/predict",
        response_model=Prediction,
        tags=["predict"],
        openapi_extra=_body_schema("Record"),
        responses=_ERRORS,
    )
    async def predict(request: Request) -> Response:
        """Score one record: probability (or value), decision at the threshold, version, request id."""
        started = time.perf_counter()
        outcome = await parsed(request, "record")
        if isinstance(outcome, Response):
            return finish("predict", started, outcome)
        served, record = outcome
        rid = request_id()
        p = float(score(served, served.encoder.encode([record.__dict__]), rid)[0])
        body = {
            "request_id": rid,
            "model_name": served.model.name,
            "model_version": served.version,
            "prediction": p,
            "decision": decision(served, p),
            "threshold": served.model.threshold if served.model.task == "binary" else None,
        }
        return finish("predict", started, _json(body))

    async def scored_batch(request: Request, body: str, endpoint: str) -> Response:
        """Both batch shapes (``records``, ``columns``): parse and check, score, answer in row order."""
        started = time.perf_counter()
        outcome = await parsed_batch(request, body)
        if isinstance(outcome, Response):
            return finish(endpoint, started, outcome)
        served, matrix = outcome
        rid = request_id(len(matrix))
        return finish(endpoint, started, _json(predictions_body(served, score(served, matrix, rid), rid)))

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["predict"],
        openapi_extra=_body_schema("Batch"),
        responses=_ERRORS,
    )
    async def predict_batch(request: Request) -> Response:
        """Score up to the configured maximum of records in one request, in order."""
        return await scored_batch(request, "records", "predict_batch")

    @app.post(
        "/predict/columns",
        response_model=BatchPrediction,
        tags=["predict"],
        openapi_extra=_body_schema("ColumnBatch"),
        responses=_ERRORS,
    )
    async def predict_columns(request: Request) -> Response:
        """Score a batch given as one array per feature (all the same length, up to the configured maximum);
        predictions in row order. The cheapest way to send many rows: a third of the JSON of ``records``."""
        return await scored_batch(request, "columns", "predict_columns")

    @app.post(
        "/explain",
        response_model=Explanation,
        tags=["predict"],
        openapi_extra=_body_schema("Record"),
        responses=_ERRORS,
    )
    async def explain(request: Request, top_k: int = Query(5, ge=1, le=100)) -> Response:
        """TreeSHAP contributions of one record (margin units), with the top-k features by magnitude."""
        started = time.perf_counter()
        outcome = await parsed(request, "record")
        if isinstance(outcome, Response):
            return finish("explain", started, outcome)
        served, record = outcome
        import xgboost as xgb

        values = record.__dict__
        matrix = served.encoder.encode([values])
        dmatrix = xgb.DMatrix(
            matrix,
            feature_names=served.encoder.names,
            feature_types=served.encoder.feature_types,
            enable_categorical=True,
        )
        contrib = served.model.booster.predict(dmatrix, pred_contribs=True, validate_features=False)[0]
        names = served.encoder.names
        order = np.argsort(-np.abs(contrib[:-1]))[:top_k]
        body = {
            "request_id": request_id(),
            "model_version": served.version,
            "prediction": float(served.predict(matrix)[0]),
            "base_value": float(contrib[-1]),
            "top": [
                {"feature": names[i], "value": values.get(names[i]), "contribution": float(contrib[i])}
                for i in order
            ],
            "contributions": {n: float(c) for n, c in zip(names, contrib[:-1], strict=True)},
        }
        return finish("explain", started, _json(body))

    @app.post(
        "/feedback",
        status_code=202,
        tags=["monitor"],
        responses={
            **_ERRORS,
            404: {"description": "not a request id this service issued, or past the feedback window"},
            409: {"description": "this request (or row) was labelled before"},
        },
        openapi_extra=_body_schema("Feedback"),
    )
    async def feedback(request: Request) -> Response:
        """Ground truth for an earlier prediction, by the request id the service returned with it: ``label``
        for a one-row request (or one row of a batch, as ``<request_id>:<row>``), or ``labels`` for every row
        of a batch, in order. Labels must fit the model's task (binary: 0 or 1; regression: a finite
        number); each request or row is labelled once (a repeat is 409)."""
        started = time.perf_counter()
        payload = await read_json(request)
        if isinstance(payload, Response):
            return finish("feedback", started, payload)
        served = served_or_error()
        if isinstance(served, Response):
            return finish("feedback", started, served)
        accepted = ctx.feedback.check(payload, served.model.task, served.reader.max_batch)
        if isinstance(accepted, Response):
            return finish("feedback", started, accepted)
        ctx.metrics.feedback.inc(len(accepted.labels))
        if ctx.recorder is not None:
            ctx.recorder.feedback(accepted.request_id, accepted.labels)
        body = {"accepted": len(accepted.labels), "request_id": accepted.request_id}
        return finish("feedback", started, _json(body, 202))

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "no model loaded yet"}})
    async def ready() -> Response:
        """A model is loaded and serving (readiness), with the version served, the one the champion alias
        names, and in one sentence (``detail``) why they differ or why nothing is served; and the traffic
        profiler's health (alive, restarts, rows queued and dropped). A profiler that is down does not make
        the service unready: predictions do not depend on it, and it is restarted on its own."""
        body = ctx.holder.readiness()
        body["profiler"] = ctx.recorder.health() if ctx.recorder is not None else {"enabled": False}
        return _json(body, 200 if body["ready"] else 503)

    @app.get("/model", tags=["ops"], responses={401: {"description": "missing or wrong bearer token"}})
    async def model_info(request: Request) -> Response:
        """Version, run id, training data digest and test metrics of the model being served."""
        if not authorized(request, ctx.token):
            return _error(401, "missing or wrong bearer token")
        return _json(ctx.holder.info())

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: requests, latency, predictions, model version, profiling queue."""
        if ctx.recorder is not None:
            ctx.metrics.queue_depth.set(max(0, ctx.recorder.depth()))
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # the paths as the routes declare them, so a renamed route cannot leave its old path served here
    hot = (predict, predict_batch, predict_columns)
    endpoints = {r.path: r.endpoint for r in app.routes if isinstance(r, APIRoute) and r.endpoint in hot}
    app.add_middleware(HotPathMiddleware, endpoints=endpoints)
    app.openapi = lambda: _openapi(app, ctx)  # type: ignore[method-assign]
    return app


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON, or the client went away before the body was complete"},
    401: {"description": "missing or wrong bearer token"},
    408: {"description": "the body did not arrive within the body timeout"},
    413: {"description": "body or batch too large"},
    415: {"description": "the body is not application/json"},
    422: {"description": "a field is missing, extra, mistyped, out of vocabulary or null where not allowed"},
    503: {"description": "no model loaded yet"},
}


def _body_schema(name: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }


def _openapi(app: FastAPI, ctx: _Ctx) -> dict[str, Any]:
    """FastAPI's document plus the request models of the model being served."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    served = ctx.holder.current
    feedback, definitions = feedback_schema(
        served.model.task if served is not None else "regression", ctx.holder.max_batch_size
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


def _startup(ctx: _Ctx) -> None:
    """Load the stack, point MLflow at it, and load the champion if there is one.

    MLflow is only pointed at the stack, nothing is created: the service reads the registry. A registry
    that cannot be read, or has no champion, is not a crash: the process starts, ``/ready`` answers 503
    saying why, and the watcher keeps checking until it can load the champion.
    """
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack, selected_stack_name

    stack = load_stack(selected_stack_name(ctx.settings.stack))
    _require_service_secrets(stack)
    configure_mlflow(stack, create_experiment=False)
    ctx.token = token_from_stack(stack)
    deployer = stack.model_deployer.configuration if stack.model_deployer else None
    if deployer is not None:
        ctx.holder.max_batch_size = deployer.max_batch_size
    ctx.ids = RequestIds(_request_id_key(stack), FEEDBACK_WINDOW_S)
    ctx.feedback = FeedbackChecker(ctx.ids, LabelledIds())
    ctx.holder.refresh(retry_after_s=0)  # records (and logs) what is wrong instead of raising


def _request_id_key(stack: Any) -> bytes:
    """The key request ids are signed with, shared through the artifact store (serving.request_ids). If the
    store cannot be read, a key of this process's own: predictions are served, and feedback is accepted for
    this process's ids only (logged, so the cause is found)."""
    from stacks.components.artifact_store import ArtifactStore

    try:
        return load_key(ArtifactStore.from_stack(stack))
    except Exception as exc:  # a store that is down must not stop predictions
        log.error(
            "request-id key not readable from the artifact store (%s): feedback is accepted only for "
            "ids this process issues",
            exc,
        )
        return secrets.token_bytes(32)


def _require_service_secrets(stack: Any) -> None:
    """Only the secrets of what the service uses: a pod gets those, not the tuner's database password."""
    from stacks.config import StackError
    from stacks.secrets import SecretNotFoundError

    used = {
        c.name
        for c in (stack.artifact_store, stack.experiment_tracker, stack.model_registry, stack.model_deployer)
        if c is not None
    }
    resolver = stack.secret_resolver()  # one per check: a server that is down is asked once
    for component, key, ref in stack.secret_refs():
        if component in used:
            try:
                resolver.resolve(ref)
            except SecretNotFoundError as exc:
                raise StackError(f"{stack.source}: component {component!r}: key {key!r}: {exc}") from exc


def _start_recorder(ctx: _Ctx) -> TrafficRecorder:
    import os

    from stacks.loader import load_stack, selected_stack_name

    stack = load_stack(selected_stack_name(ctx.settings.stack))
    validator = stack.data_validator.configuration if stack.data_validator else None
    config = ProfilerConfig(
        stack=ctx.settings.stack,
        home=os.environ.get("FLYWHEEL_HOME"),
        model_name=ctx.settings.model_name,
        batch_rows=validator.profile_batch_size if validator else ctx.settings.profile_batch_rows,
        window_s=ctx.settings.profile_window_s or (validator.profile_window_seconds if validator else 300),
        queue_rows=ctx.settings.profile_queue_rows,
    )
    return TrafficRecorder(config, ctx.metrics)
