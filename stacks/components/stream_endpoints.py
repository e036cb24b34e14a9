"""Where each running stream consumer serves its ``/metrics``, so that Prometheus and a rollout's guardrails
scrape it beside the model's REST service.

A consumer (``flywheel stream serve``) with the stream's ``metrics_port`` set records its address while it
runs and removes the record when it stops::

    flywheel_home()/services/<stack>/streams/<model>--<consumer>.json   {model, consumer, address, pid}

``metrics_port: 0`` lets each consumer take a free port (several consumers, or several models' consumers,
on one host). A record whose process is gone (a consumer killed with SIGKILL) is not an endpoint and is
removed when read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from stacks.components.deployers.state import model_slug, stack_dir


@dataclass(frozen=True)
class ConsumerEndpoint:
    """A running consumer's metrics address (``host:port``) and the model it serves."""

    model: str
    consumer: str
    address: str
    pid: int

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def folder(stack_name: str) -> Path:
    """Beside the stack's service records (``stacks.components.deployers.state``)."""
    return stack_dir(stack_name) / "streams"


def _file(stack_name: str, model: str, consumer: str) -> Path:
    safe = re.sub(r"[^a-z0-9-]+", "-", consumer.lower()).strip("-")[:40] or "consumer"
    tag = hashlib.sha256(consumer.encode()).hexdigest()[:8]  # two names never share a file
    return folder(stack_name) / f"{model_slug(model)}--{safe}-{tag}.json"


def record(stack_name: str, model: str, consumer: str, host: str, port: int) -> Path:
    """Record this process's consumer of ``model`` as serving its metrics at ``host:port``."""
    path = _file(stack_name, model, consumer)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"model": model, "consumer": consumer, "address": f"{host}:{port}", "pid": os.getpid()}
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(entry))
    part.replace(path)
    return path


def forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def recorded(stack_name: str, model: str | None = None) -> list[ConsumerEndpoint]:
    """The consumers running on the stack (of ``model``, or every model), oldest record first; a record
    that does not parse or whose process is gone is removed."""
    found: list[tuple[float, ConsumerEndpoint]] = []
    where = folder(stack_name)
    if not where.is_dir():
        return []
    for path in where.glob("*.json"):
        try:
            raw = json.loads(path.read_text())
            entry = ConsumerEndpoint(
                str(raw["model"]), str(raw["consumer"]), str(raw["address"]), int(raw["pid"])
            )
            modified = path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            forget(path)
            continue
        if not _alive(entry.pid):
            forget(path)
            continue
        if model is None or entry.model == model:
            found.append((modified, entry))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]
