"""What the endpoints share: the service's per-app state and the steps every request goes through.

One :class:`ServiceContext` per app (``app.state.ctx``, built by :func:`serving.app.create_app`): settings,
metrics, the model holder, the bearer token, the request-id signer, the feedback checker and the traffic
recorder. Its methods are the request steps the routers share, in the order a request meets them: auth and
body (:meth:`ServiceContext.read_json`), a loaded model, the served model's own request model
(:meth:`ServiceContext.parsed`, :meth:`ServiceContext.parsed_batch`), scoring, and the request metrics
(:meth:`ServiceContext.finish`).

The prediction endpoints are called straight from the ASGI stack (:mod:`serving.hotpath`), where FastAPI
resolves no dependencies: they take the request only and call :func:`get_service` themselves. The other
endpoints declare :data:`ServiceDep`, the same lookup as a FastAPI dependency.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from serving.auth import authorized
from serving.batch_checks import check_columns, check_records
from serving.body import BodyRejected, read_body
from serving.errors import error, unprocessable
from serving.feedback import FeedbackChecker
from serving.holder import ModelHolder, Served
from serving.metrics import ServiceMetrics
from serving.profiling import TrafficRecorder
from serving.request_ids import RequestIds
from serving.rollout import CANARY, CHAMPION, SHADOW, ShadowScorer, rollout_key
from serving.settings import ServiceSettings
from serving.validation import Invalid, validate


class ServiceContext:
    """Per-app state shared by the endpoints, and the request steps they share."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.holder = ModelHolder(settings.model_name, self.metrics, settings.max_batch_size)
        self.token: str | None = None
        self.recorder: TrafficRecorder | None = None
        self.shadow = ShadowScorer(self.metrics)
        # set in start-up (serving.app), from the key the artifact store shares (serving.request_ids)
        self.ids: RequestIds
        self.feedback: FeedbackChecker

    async def read_json(self, request: Request, record: bool = False) -> Any | Response:
        """Auth, then the body under the size limit (for one ``record``, the most a valid record of the
        served versions can take), then JSON: the decoded payload or the 4xx."""
        if not authorized(request, self.token):
            return error(401, "missing or wrong bearer token")
        limit = self.settings.max_body_bytes
        served = self.holder.current
        bounded = False
        if record and served is not None:
            rollout = self.holder.rollout
            bound = served.record_max_bytes
            if rollout is not None:
                bound = max(bound, rollout.candidate.record_max_bytes)
            if bound < limit:
                limit, bounded = bound, True
        try:
            body = await read_body(request, limit, bounded)
        except BodyRejected as exc:
            # the rest of the body is never read: the connection cannot carry another request
            return error(exc.status, exc.message, headers={"connection": "close"})
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error(400, f"malformed JSON: {exc}")

    def served_or_error(self, payload: Any = None) -> Served | Response:
        """The version that answers this request: the champion, or a canary's candidate for the requests
        its key puts under the step's fraction (``payload``: the decoded body, for that key)."""
        served = self.holder.current
        if served is None:
            return error(503, "no model loaded yet", last_error=self.holder.last_error)
        rollout = self.holder.rollout
        canary = rollout is not None and rollout.state.stage == CANARY
        if canary and rollout.state.answers(rollout_key(payload, rollout.state.key)):
            return rollout.candidate
        return served

    async def parsed(self, request: Request, kind: str) -> tuple[Served, BaseModel] | Response:
        """Auth, size, JSON, a loaded model, then the served model's own request model (``record`` or
        ``batch``): the first failure is the response."""
        payload = await self.read_json(request, record=kind == "record")
        if isinstance(payload, Response):
            return payload
        served = self.served_or_error(payload)
        if isinstance(served, Response):
            return served
        try:
            return served, validate(getattr(served, kind), payload)
        except Invalid as exc:
            return unprocessable(exc.errors, exc.total)

    async def parsed_batch(self, request: Request, kind: str) -> tuple[Served, np.ndarray] | Response:
        """As :meth:`parsed` for a batch (``records`` or ``columns``), to the booster's matrix: checked column
        by column when the body is valid, and by the request model (which names each offending record or
        value and its field) when it is not."""
        payload = await self.read_json(request)
        if isinstance(payload, Response):
            return payload
        served = self.served_or_error(payload)
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

    def request_id(self, rows: int = 1) -> str:
        """A fresh signed id (serving.request_ids): feedback is accepted for ids this service issued, so a
        client's own ``X-Request-ID`` is not used as the key."""
        return self.ids.issue(rows)

    def score(self, served: Served, matrix: np.ndarray, request_id: str) -> np.ndarray:
        """The model's predictions for ``matrix``, counted in the metrics and sent to the traffic profiler."""
        return self.score_as(served, matrix, request_id)[1]

    def score_as(self, served: Served, matrix: np.ndarray, request_id: str) -> tuple[Served, np.ndarray]:
        """(the version that answered, its predictions) for ``matrix``: ``served``, or the champion when a
        canary's scoring failed (counted against the canary; the client gets an answer either way). A
        shadow step hands a copy to the shadow scorer."""
        rollout = self.holder.rollout
        role = CANARY if rollout is not None and served is rollout.candidate else CHAMPION
        started = time.perf_counter()
        try:
            predictions = served.predict(matrix)
        except Exception:
            champion = self.holder.current
            if role != CANARY or champion is None or not rollout.same_features:
                raise
            self.metrics.version_series(served.version, CANARY)[1].inc()
            served, role, started = champion, CHAMPION, time.perf_counter()
            predictions = served.predict(matrix)
        if rollout is not None:  # the guardrails' figures, kept while a rollout runs (~3 us a request)
            self.metrics.observe_version(served.version, role, predictions, time.perf_counter() - started)
        self.metrics.rows.inc(len(predictions))
        self.metrics.observe_predictions(predictions)
        if self.recorder is not None:
            self.recorder.record(
                served.version,
                request_id,
                matrix,
                served.logged(predictions),
                served.encoder.names,
                served.categories,
            )
        if rollout is not None and rollout.state.stage == SHADOW and role == CHAMPION:
            self.shadow.offer(rollout, served, matrix, predictions, request_id)
        return served, predictions

    def finish(self, endpoint: str, started: float, response: Response) -> Response:
        """``response``, counted and timed (from ``started``, a ``perf_counter`` value) as ``endpoint``."""
        count, latency = self.metrics.request_series(endpoint, response.status_code)
        count.inc()
        latency.observe(time.perf_counter() - started)
        return response


def get_service(request: Request) -> ServiceContext:
    """The context of the app serving ``request`` (the hot path's endpoints call this themselves)."""
    service: ServiceContext = request.app.state.ctx
    return service


async def _service(request: Request) -> ServiceContext:
    # a coroutine: FastAPI runs a plain function dependency in its thread pool, ~90 us a request
    return get_service(request)


ServiceDep = Annotated[ServiceContext, Depends(_service)]
"""The app's :class:`ServiceContext`, for the endpoints FastAPI routes (not the hot path's)."""
