"""Where each model's service on a stack is recorded: its state file, its log, its lock and its port.

Every model gets a service of its own (a process, a container or a Deployment per model), so deploying,
stopping or restarting one model never touches another's, and each service keeps the single-model request
path. What a deployer started is recorded per stack and model, so ``flywheel service status|stop|logs``
work from any later process without asking the registry or the orchestrator::

    flywheel_home()/services/<stack>/<model>.json   the model's service (a ServiceInfo)
                                   /<model>.log    the local flavor's service log
                                   /<model>.lock   held during a deploy or stop of that model
                                   /ports.json     model -> port (local and docker flavors)

``<model>`` is ``model_slug(model_name)``: the registered name when it is already a safe lower-case DNS
label, else a cleaned prefix with a hash of the name (two names never share files). A port, once given to
a model, stays that model's across stops and redeploys (clients keep their URL): the first model of a stack
gets the stack's configured port, each further model the first port after it that no other model holds and
nothing listens on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stacks.components.deployers.base import DeploymentError, ServiceInfo, services_dir

__all__ = [
    "MAX_MODEL_NAME",
    "PORT_RANGE",
    "allocate_port",
    "clear_state",
    "list_states",
    "log_path",
    "model_lock",
    "model_slug",
    "ports_path",
    "read_ports",
    "read_state",
    "require_model_name",
    "stack_dir",
    "state_path",
    "write_state",
]

MAX_MODEL_NAME = 256
"""Longest model name a deployer accepts (MLflow's own limit is larger; no real name comes near it)."""

PORT_RANGE = 100
"""Ports a stack's services may take: its configured port and the 99 after it."""

_SLUG_MAX = 40  # leaves room for "flywheel-<stack>-" in a 63-character DNS label
_PORTS = "ports.json"


def require_model_name(model_name: object) -> str:
    """The model name, checked: a non-empty text of printable characters, bounded in length."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise DeploymentError("no model named: give the registered model's name (e.g. --model NAME)")
    if len(model_name) > MAX_MODEL_NAME or not model_name.isprintable():
        shown = model_name[:40].encode("unicode_escape").decode()
        raise DeploymentError(
            f"model name {shown!r}... is not a registered model name "
            f"(printable characters, at most {MAX_MODEL_NAME})"
        )
    return model_name


def model_slug(model_name: str) -> str:
    """A file- and DNS-safe form of the model name that no other name shares.

    ``flight-delay`` stays ``flight-delay``; ``Flight_Delay`` becomes ``flight-delay-<8 hex>``, so it
    cannot collide with the first one.
    """
    text = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", model_name.lower())).strip("-")
    if text == model_name and len(text) <= _SLUG_MAX:
        return text
    digest = hashlib.sha256(model_name.encode("utf-8")).hexdigest()[:8]
    head = text[: _SLUG_MAX - len(digest) - 1].strip("-") or "model"
    return f"{head}-{digest}"


def stack_dir(stack_name: str) -> Path:
    """``flywheel_home()/services/<stack>``: one folder per stack, one set of files per model in it."""
    return services_dir() / stack_name


def state_path(stack_name: str, model_name: str) -> Path:
    return stack_dir(stack_name) / f"{model_slug(model_name)}.json"


def log_path(stack_name: str, model_name: str) -> Path:
    return stack_dir(stack_name) / f"{model_slug(model_name)}.log"


def ports_path(stack_name: str) -> Path:
    return stack_dir(stack_name) / _PORTS


def _legacy_path(stack_name: str) -> Path:
    """Where a one-service-per-stack version of Flywheel recorded the stack's single service."""
    return services_dir() / f"{stack_name}.json"


# ---------------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeploymentError(
                        f"{what} has held {path} for {timeout_s:g} s; try again when it finishes"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def model_lock(stack_name: str, model_name: str, timeout_s: float) -> Iterator[None]:
    """Hold one model's service lock: one deploy or stop of that model at a time, across processes.

    Two deploys of one model do race in practice: training's promotion event runs the service deployment
    on a worker while someone runs `flywheel service deploy`. Under the lock the second one finds the first
    one's healthy service and leaves it to hot-swap. Other models' deploys do not wait for it.
    """
    path = stack_dir(stack_name) / f"{model_slug(model_name)}.lock"
    with _file_lock(path, timeout_s, f"another deploy or stop of '{model_name}' on stack '{stack_name}'"):
        yield


# ---------------------------------------------------------------------------------------------- records


def read_state(stack_name: str, model_name: str) -> ServiceInfo | None:
    """The recorded service of one model on a stack, or None; an unreadable file is named."""
    _migrate_legacy(stack_name)
    path = state_path(stack_name, model_name)
    if not path.is_file():
        return None
    info = _load(path)
    if info.model_name != model_name:  # a hand-copied file, or a hash collision: not this model's
        raise DeploymentError(f"{path} records model '{info.model_name}', not '{model_name}'; delete it")
    return info


def write_state(info: ServiceInfo) -> Path:
    """Record a service atomically (write then rename), so a reader never sees half a file."""
    return _write_json(state_path(info.stack, info.model_name), info.to_dict())


def clear_state(stack_name: str, model_name: str) -> bool:
    """Forget one model's service (its port stays reserved for it); True if there was a record."""
    try:
        state_path(stack_name, model_name).unlink()
    except FileNotFoundError:
        return False
    return True


def list_states(stack_name: str) -> tuple[list[ServiceInfo], list[str]]:
    """Every model's recorded service on the stack, by model name, and a line per unreadable file."""
    _migrate_legacy(stack_name)
    folder = stack_dir(stack_name)
    found: list[ServiceInfo] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == _PORTS:
            continue
        try:
            found.append(_load(path))
        except DeploymentError as exc:
            problems.append(str(exc))
    return sorted(found, key=lambda i: i.model_name), problems


def _load(path: Path) -> ServiceInfo:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        return ServiceInfo.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise DeploymentError(
            f"{path}: unreadable service state file ({exc}); delete it to start over"
        ) from exc


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _migrate_legacy(stack_name: str) -> None:
    """Move a service recorded as the stack's only one (``services/<stack>.json``) to its model's record,
    its port reserved for its model, so a service started before the upgrade is still found and stopped."""
    legacy = _legacy_path(stack_name)
    if not legacy.is_file():
        return
    with _file_lock(ports_path(stack_name).with_suffix(".lock"), 30, f"the ports of stack '{stack_name}'"):
        if not legacy.is_file():  # another process moved it meanwhile
            return
        info = _load(legacy)
        if not state_path(stack_name, info.model_name).is_file():
            write_state(info)
        port = info.port if info.port is not None else _port_of(info.url)
        if info.flavor in ("local", "docker") and port is not None:
            table = read_ports(stack_name)
            if info.model_name not in table and port not in table.values():
                _write_json(ports_path(stack_name), {**table, info.model_name: port})
        legacy.unlink()


def _port_of(url: str) -> int | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- ports


def read_ports(stack_name: str) -> dict[str, int]:
    """The model -> port table of a stack ({} when none was given out yet)."""
    path = ports_path(stack_name)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"{path}: unreadable port table ({exc}); delete it to start over") from exc
    if not isinstance(data, dict):
        raise DeploymentError(f"{path}: expected a mapping of model name to port; delete it to start over")
    return {str(k): v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}


def allocate_port(stack_name: str, model_name: str, base: int, taken: Callable[[int], bool]) -> int:
    """The model's port on the stack: the one it was given before, else the first free one from ``base``.

    A port is free when no other model of the stack holds it and nothing listens on it (``taken``). The
    table is kept under a lock, so two models deployed at the same moment get two ports. A recorded port
    outside ``base .. base + PORT_RANGE - 1`` (the stack's port was changed) is given out again.
    """
    window = range(base, min(base + PORT_RANGE, 65536))
    with _file_lock(ports_path(stack_name).with_suffix(".lock"), 30, f"the ports of stack '{stack_name}'"):
        table = read_ports(stack_name)
        mine = table.get(model_name)
        if mine is not None and mine in window:
            return mine
        held = {port for name, port in table.items() if name != model_name}
        for port in window:
            if port not in held and not taken(port):
                _write_json(ports_path(stack_name), {**table, model_name: port})
                return port
    raise DeploymentError(
        f"no free port for '{model_name}' on stack '{stack_name}' in {window.start}-{window.stop - 1}: "
        f"{len(held)} are held by other models ({ports_path(stack_name)}) and the rest are in use"
    )
