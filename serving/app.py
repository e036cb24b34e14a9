"""The FastAPI app factory: ``uvicorn serving.app:create_app --factory``.

The factory builds the per-app state (:class:`serving.deps.ServiceContext`, loaded in start-up here), includes
the routers (``serving.routes``: one per resource) and puts the hot path (:mod:`serving.hotpath`) in front of
FastAPI's routing for the prediction endpoints.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from serving.auth import token_from_stack
from serving.deps import ServiceContext
from serving.feedback import FeedbackChecker
from serving.hotpath import HotPathMiddleware, hot_endpoints
from serving.profiling import start_recorder
from serving.request_ids import LabelledIds, RequestIds, stack_key
from serving.routes import ROUTERS, predictions, requests
from serving.routes.docs import OpenAPIDocument
from serving.routes.predict import HOT_PATH
from serving.settings import ServiceSettings

log = logging.getLogger("flywheel.serving")
FEEDBACK_WINDOW_S = 90 * 86400
DOCS_ASSETS = "/docs-assets"
"""Where the Swagger UI and ReDoc files (JS, CSS, favicon) are served, from the fastapi-offline package."""
"""How long after a prediction its ground truth is accepted (labels of credit or churn take months)."""


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
    """The service for ``settings`` (default: from the environment), its champion loaded if there is one."""
    _service_logging()
    settings = settings or ServiceSettings.from_env()
    ctx = ServiceContext(settings)
    _startup(ctx)
    # /docs and /redoc load Swagger UI and ReDoc from the service itself (DOCS_ASSETS), not from a CDN: the
    # pages work on a machine without internet, and ReDoc asks for no Google fonts
    app: FastAPI = FastAPIOffline(
        title="Flywheel prediction service",
        version="1",
        lifespan=_lifespan,
        description=f"Serves `models:/{settings.model_name}@champion`, hot-swapped when the alias moves.",
        static_url=DOCS_ASSETS,
    )
    app.state.ctx = ctx
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(predictions.router)  # precomputed predictions, from the stack's prediction store
    predictions.attach(app, settings)
    app.include_router(requests.router)  # a served prediction by its request id (the audit trail)
    app.add_middleware(HotPathMiddleware, endpoints=hot_endpoints(app.routes, HOT_PATH))
    app.openapi = OpenAPIDocument(app, ctx)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The model watcher and the traffic profiler run while the app serves."""
    ctx: ServiceContext = app.state.ctx
    ctx.holder.start_watching(ctx.settings.watch_interval_s)
    if ctx.settings.profiling:
        ctx.recorder = start_recorder(ctx.settings, ctx.metrics)
        ctx.shadow.recorder = ctx.recorder  # shadow predictions go to the shadow log beside the champion's
    gc.collect()
    gc.freeze()  # later collections skip the start-up heap (see the module docstring)
    yield
    ctx.holder.stop()
    ctx.shadow.close()
    if ctx.recorder is not None:
        ctx.recorder.close()


def _startup(ctx: ServiceContext) -> None:
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
    ctx.ids = RequestIds(stack_key(stack), FEEDBACK_WINDOW_S, ctx.settings.model_name)
    ctx.feedback = FeedbackChecker(ctx.ids, LabelledIds())
    ctx.holder.refresh(retry_after_s=0)  # records (and logs) what is wrong instead of raising
    ctx.holder.refresh_rollout()


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
