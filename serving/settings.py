"""Service settings: from the stack (deployer, artifact store, registry) and a few environment variables.

The stack is chosen as everywhere else (``FLYWHEEL_STACK`` or the default), so a process started by a
deployer, by ``flywheel serve`` or by a test gets the same configuration. A service serves one model, named
by ``FLYWHEEL_MODEL`` (every deployer and ``flywheel serve`` set it): there is no default model, so a
service started without one stops at once and says so rather than serve some other problem's model. The
server's limits belong to the stack (its model deployer's ``server`` block); an environment variable
overrides one of them for a process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from stacks.components.deployers.server_options import (
    HEADER_TIMEOUT_ENV,
    MAX_BODY_BYTES_ENV,
    MAX_CONNECTIONS_ENV,
    server_limits,
)
from stacks.config import DEFAULT_SERVER_LIMITS, ServerLimits, describe_validation_error

__all__ = ["LIMIT_OVERRIDES", "MODEL_ENV", "ServiceSettings", "model_from_env", "service_limits"]

MODEL_ENV = "FLYWHEEL_MODEL"

LIMIT_OVERRIDES: dict[str, tuple[str, Callable[[str], float | int]]] = {
    HEADER_TIMEOUT_ENV: ("header_timeout_s", float),
    MAX_CONNECTIONS_ENV: ("max_connections", int),
    MAX_BODY_BYTES_ENV: ("max_body_bytes", int),
}
"""Environment variable -> (``ServerLimits`` key, how to read it)."""


def service_limits(stack: str | None = None) -> ServerLimits:
    """The selected stack's server limits with this process's environment overrides, validated alike."""
    from stacks.loader import load_stack, selected_stack_name

    limits = server_limits(load_stack(selected_stack_name(stack)))
    given = {var: os.environ[var] for var in LIMIT_OVERRIDES if var in os.environ}
    if not given:
        return limits
    try:
        overrides = {LIMIT_OVERRIDES[var][0]: LIMIT_OVERRIDES[var][1](value) for var, value in given.items()}
        return ServerLimits.model_validate({**limits.model_dump(), **overrides})
    except ValidationError as exc:
        why = "; ".join(describe_validation_error(exc, ServerLimits))
    except ValueError as exc:  # not a number
        why = str(exc)
    shown = ", ".join(f"{var}={value!r}" for var, value in given.items())
    raise ValueError(f"bad server limit in the environment ({shown}): {why}")


def model_from_env() -> str:
    """The registered model this service serves (``FLYWHEEL_MODEL``); a clear error when it is not set."""
    name = os.environ.get(MODEL_ENV, "").strip()
    if not name:
        raise ValueError(
            f"{MODEL_ENV} is not set: a service serves one registered model, named by it "
            f"(`flywheel service deploy --model NAME` and `flywheel serve --model NAME` set it; "
            f"by hand: {MODEL_ENV}=NAME)"
        )
    return name


@dataclass(frozen=True)
class ServiceSettings:
    stack: str | None
    model_name: str
    max_batch_size: int = 1000
    max_body_bytes: int = DEFAULT_SERVER_LIMITS.max_body_bytes
    watch_interval_s: float = 10.0
    profile_queue_rows: int = 200_000
    profile_batch_rows: int = 10_000
    profile_window_s: int = 300
    profile_stall_s: float = 60.0
    profiling: bool = True

    @classmethod
    def from_env(cls, model_name: str | None = None) -> ServiceSettings:
        """From ``FLYWHEEL_*`` variables; ``model_name`` (the stream consumer's) over ``FLYWHEEL_MODEL``."""

        def number(name: str, default: float) -> float:
            return float(os.environ.get(name, default))

        stack = os.environ.get("FLYWHEEL_STACK") or None
        return cls(
            stack=stack,
            model_name=model_name or model_from_env(),
            max_body_bytes=service_limits(stack).max_body_bytes,
            watch_interval_s=number("FLYWHEEL_WATCH_INTERVAL_S", 10.0),
            profile_queue_rows=int(number("FLYWHEEL_PROFILE_QUEUE_ROWS", 200_000)),
            profile_batch_rows=int(number("FLYWHEEL_PROFILE_BATCH_ROWS", 10_000)),
            profile_window_s=int(number("FLYWHEEL_PROFILE_WINDOW_S", 0)) or 0,
            profile_stall_s=number("FLYWHEEL_PROFILE_STALL_S", 60.0),
            profiling=os.environ.get("FLYWHEEL_PROFILING", "on").lower() not in ("0", "off", "false", "no"),
        )
