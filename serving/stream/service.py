"""``flywheel stream serve``'s process: the stack's stream, registry, artifact store and profiler wired
to one :class:`serving.stream.consumer.StreamConsumer`, as :func:`serving.app.create_app` wires the REST
service (the same champion watcher, request-id key and traffic recorder), until ``stop`` is set."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

from serving.holder import ModelHolder
from serving.profiling import start_recorder
from serving.request_ids import RequestIds, stack_key
from serving.settings import ServiceSettings
from serving.stream.consumer import Counts, StreamConsumer, StreamMetrics
from stacks.components import stream_endpoints

log = logging.getLogger("flywheel.stream")
FEEDBACK_WINDOW_S = 90 * 86400
"""As the REST service's: labels for a streamed prediction are accepted by ``POST /feedback`` that long."""


class NoStream(ValueError):
    """The stack names no stream component: the message says what to add."""


def stream_of(stack: Any) -> Any:
    if stack.stream is None:
        raise NoStream(
            f"{stack.source}: the stack names no stream component; add one, e.g.\n"
            "  stream:\n    name: redis\n    flavor: redis\n"
            "    configuration:\n      url: redis://127.0.0.1:6379/0"
        )
    return stack.stream.configuration


def serve(
    stack_name: str | None,
    model_name: str,
    stop: threading.Event,
    *,
    consumer_name: str | None = None,
    profiling: bool | None = None,
    watch_interval_s: float | None = None,
) -> Counts:
    """Consume ``model_name``'s request stream on the stack until ``stop``; what was done."""
    from prometheus_client import start_http_server

    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack, selected_stack_name

    stack = load_stack(selected_stack_name(stack_name))
    config = stream_of(stack)
    url = stack.stream_url()
    assert url is not None
    configure_mlflow(stack, create_experiment=False)
    settings = ServiceSettings.from_env(model_name)
    settings = dataclasses.replace(
        settings,
        stack=stack_name,
        profiling=settings.profiling if profiling is None else profiling,
        watch_interval_s=watch_interval_s or settings.watch_interval_s,
    )
    metrics = StreamMetrics()
    holder = ModelHolder(model_name, metrics, max(settings.max_batch_size, config.batch_size))
    holder.refresh(retry_after_s=0)
    holder.start_watching(settings.watch_interval_s)
    recorder = start_recorder(settings, metrics) if settings.profiling else None
    ids = RequestIds(stack_key(stack), FEEDBACK_WINDOW_S, model_name)
    consumer = StreamConsumer(config, url, model_name, holder, ids, metrics, recorder, consumer_name)
    server, endpoint = None, None
    if config.metrics_port is not None:
        server, _ = start_http_server(config.metrics_port, addr="0.0.0.0", registry=metrics.registry)
        endpoint = _announce(stack, model_name, consumer.name, server.server_port)
    log.info(
        "consumer %s of %s: %s -> %s (dead letters: %s), group %r, profiling %s",
        consumer.name,
        model_name,
        consumer.input,
        consumer.output,
        consumer.dead_letters,
        config.group,
        "on" if recorder else "off",
    )
    try:
        return consumer.run(stop)
    finally:
        holder.stop()
        consumer.shadow.close()  # its last copies handed to the recorder before that closes
        if recorder is not None:
            recorder.close()  # the last window and prediction log part written
        consumer.close()
        if server is not None:
            server.shutdown()
        if endpoint is not None:
            stream_endpoints.forget(endpoint)
            _refresh_prometheus(stack)


def _announce(stack: Any, model_name: str, consumer: str, port: int) -> Path:
    """Record where this consumer's metrics are, and tell the stack's Prometheus (its targets file)."""
    path = stream_endpoints.record(stack.name, model_name, consumer, "127.0.0.1", port)
    log.info("metrics of consumer %s at http://127.0.0.1:%d/metrics", consumer, port)
    _refresh_prometheus(stack)
    return path


def _refresh_prometheus(stack: Any) -> None:
    from stacks.components import prometheus

    try:
        prometheus.refresh(stack)
    except Exception as exc:  # the consumer serves without Prometheus; its /metrics is still there
        log.warning("Prometheus targets not rewritten: %s", exc)
