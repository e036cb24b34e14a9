"""Service settings: from the stack (deployer, artifact store, registry) and a few environment variables.

The stack is chosen as everywhere else (``FLYWHEEL_STACK`` or the default), so a process started by a
deployer, by ``flywheel serve`` or by a test gets the same configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSettings:
    stack: str | None
    model_name: str
    max_batch_size: int = 1000
    max_body_bytes: int = 2_000_000
    watch_interval_s: float = 10.0
    profile_queue_rows: int = 200_000
    profile_batch_rows: int = 10_000
    profile_window_s: int = 300
    profiling: bool = True

    @classmethod
    def from_env(cls) -> ServiceSettings:
        def number(name: str, default: float) -> float:
            return float(os.environ.get(name, default))

        return cls(
            stack=os.environ.get("FLYWHEEL_STACK") or None,
            model_name=os.environ.get("FLYWHEEL_MODEL", "flight-delay"),
            max_body_bytes=int(number("FLYWHEEL_MAX_BODY_BYTES", 2_000_000)),
            watch_interval_s=number("FLYWHEEL_WATCH_INTERVAL_S", 10.0),
            profile_queue_rows=int(number("FLYWHEEL_PROFILE_QUEUE_ROWS", 200_000)),
            profile_batch_rows=int(number("FLYWHEEL_PROFILE_BATCH_ROWS", 10_000)),
            profile_window_s=int(number("FLYWHEEL_PROFILE_WINDOW_S", 0)) or 0,
            profiling=os.environ.get("FLYWHEEL_PROFILING", "on").lower() not in ("0", "off", "false", "no"),
        )
