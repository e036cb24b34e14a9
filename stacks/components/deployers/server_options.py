"""A stack's server limits as uvicorn's options: keyword arguments for ``uvicorn.run``, command-line flags.

Every path that starts the service takes its options from here (``flywheel serve``, the local process, the
Docker container, the Kubernetes pod), so a limit set in the stack means the same on a laptop and in a
cluster. The flags are made from the keyword arguments, so the two forms cannot disagree.

uvicorn has no timeout for a connection that sends nothing or sends its headers slowly, and no cap on
connections, so ``--http`` names Flywheel's protocol class (``serving.server_protocol``), which adds both.
That class and the service read the rest of the limits (header timeout, connection cap, body timeout and
size) from the same stack, through ``FLYWHEEL_STACK``; ``FLYWHEEL_HEADER_TIMEOUT_S`` and
``FLYWHEEL_MAX_CONNECTIONS`` override the stack's values for one process, as ``FLYWHEEL_MAX_BODY_BYTES`` does.
"""

from __future__ import annotations

from typing import Any

from stacks.config import DEFAULT_SERVER_LIMITS, ServerLimits, Stack

__all__ = [
    "HEADER_TIMEOUT_ENV",
    "MAX_BODY_BYTES_ENV",
    "MAX_CONNECTIONS_ENV",
    "SERVER_PROTOCOL",
    "SHUTDOWN_MARGIN_S",
    "server_limits",
    "shutdown_wait_s",
    "uvicorn_flags",
    "uvicorn_options",
]

SERVER_PROTOCOL = "serving.server_protocol:ServerProtocol"
"""uvicorn's ``--http``: its HTTP/1.1 protocol plus a header timeout and a connection cap."""

HEADER_TIMEOUT_ENV = "FLYWHEEL_HEADER_TIMEOUT_S"
MAX_CONNECTIONS_ENV = "FLYWHEEL_MAX_CONNECTIONS"
MAX_BODY_BYTES_ENV = "FLYWHEEL_MAX_BODY_BYTES"

SHUTDOWN_MARGIN_S = 20
"""What a stop waits beyond the graceful shutdown timeout: the app's own shutdown (the model watcher, and the
profiler writing its open windows) runs after uvicorn stops waiting for requests."""


def server_limits(stack: Stack | None) -> ServerLimits:
    """The stack's limits: its model deployer's ``server`` block, the defaults when it has no deployer."""
    if stack is None or stack.model_deployer is None:
        return DEFAULT_SERVER_LIMITS
    return stack.model_deployer.configuration.server


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` (or ``uvicorn.Config``)."""
    return {
        "http": SERVER_PROTOCOL,
        "timeout_keep_alive": limits.keep_alive_timeout_s,
        "timeout_graceful_shutdown": limits.graceful_shutdown_timeout_s,
        "limit_concurrency": limits.limit_concurrency,
        "backlog": limits.backlog,
    }


def uvicorn_flags(limits: ServerLimits) -> list[str]:
    """The same options as ``uvicorn`` command-line flags (``--timeout-keep-alive 5`` ...)."""
    flags: list[str] = []
    for key, value in uvicorn_options(limits).items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def shutdown_wait_s(limits: ServerLimits) -> int:
    """How long a stop waits after SIGTERM before SIGKILL: in-flight requests, then the app's shutdown."""
    return limits.graceful_shutdown_timeout_s + SHUTDOWN_MARGIN_S
