"""What every model deployer shares: the interface, the description of a running service, small helpers.

A flow asks a stack for its deployer and calls ``deploy``; whether that starts a process, a container or a
Kubernetes Deployment is the stack's business (the ``model_deployer`` component's flavor), so the same flow
serves on a laptop and in a cluster. Each model gets a service of its own: deploying one model never stops,
restarts or swaps another's, and each service watches its own model's champion alias. What a deployer
started is recorded per stack and model (``state.py``), so ``flywheel service status|stop|logs`` work from
any later process without asking the registry or the orchestrator.

Secrets: a deployer never needs a secret's value. The service resolves its own references from the stack;
a container receives the *name* of the environment variable (``docker run -e VAR``) or a ``secretKeyRef``.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from flywheel.contracts.model_version import ServiceRecord
from stacks import secrets
from stacks.config import Component, Stack
from stacks.loader import stack_file
from stacks.paths import flywheel_home

__all__ = [
    "APP_FACTORY",
    "DeploymentError",
    "ModelDeployer",
    "ServiceInfo",
    "ToolUnavailableError",
    "dns_name",
    "http_status",
    "now_iso",
    "port_taken",
    "served_version",
    "service_secret_refs",
    "services_dir",
    "stack_reference",
]

APP_FACTORY = "serving.app:create_app"
"""The ASGI app factory every flavor runs (``uvicorn --factory``)."""

SERVICE_COMPONENTS = ("artifact_store", "experiment_tracker", "model_registry", "model_deployer")
"""The components the service itself connects to; their secret references reach the service by name."""


class DeploymentError(RuntimeError):
    """A deployment that could not be carried out; the message says what failed and what to do."""


class ToolUnavailableError(DeploymentError):
    """The flavor's tool (docker engine, kubectl) is missing; ``commands`` are what would have run."""

    def __init__(self, message: str, commands: Sequence[str]) -> None:
        self.commands = list(commands)
        super().__init__(message + "".join(f"\n  {c}" for c in self.commands))


def now_iso() -> str:
    """The current UTC time, to the second, as ISO 8601 (what state files and tags record)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class ServiceInfo:
    """A deployed service as its deployer sees it.

    ``handle`` is what identifies the running thing for its flavor: a process id (local), a container id
    (docker) or ``namespace/deployment`` (kubernetes); ``pid`` is set only for the local flavor, ``port``
    (the port the service answers on, from this machine) for the local and docker flavors.
    ``running`` and ``healthy`` are what the last look found (``deploy`` returns a ready service).
    """

    flavor: str
    stack: str
    url: str
    model_name: str
    model_version: str | None
    started_at: str
    handle: str
    pid: int | None = None
    port: int | None = None
    container: str | None = None
    namespace: str | None = None
    deployment: str | None = None
    service: str | None = None
    log_path: str | None = None
    manifests: str | None = None
    running: bool = True
    healthy: bool = True
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceInfo:
        """Rebuild from a state file, ignoring keys this version does not know (older or newer files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> ServiceInfo:
        return replace(self, **changes)

    @property
    def state(self) -> str:
        """``healthy``, ``running, not healthy`` or ``not running``: what the last look found."""
        if self.running and self.healthy:
            return "healthy"
        return "running, not healthy" if self.running else "not running"

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line (``flywheel service status --model``)."""
        state = self.state
        out = [
            f"service    {self.model_name} v{self.model_version or '?'} "
            f"on stack '{self.stack}' ({self.flavor})",
            f"url        {self.url}",
            f"{'pid' if self.pid is not None else 'handle':<10} {self.handle}",
            f"state      {state}",
            f"started    {self.started_at}",
        ]
        if self.log_path:
            out.append(f"log        {self.log_path}")
        if self.manifests:
            out.append(f"manifests  {self.manifests}")
        if self.detail:
            out.append(f"detail     {self.detail}")
        return out

    def to_markdown(self) -> str:
        """The Prefect artifact's body."""
        rows = [
            ("model", f"{self.model_name} v{self.model_version}"),
            ("stack", f"{self.stack} ({self.flavor})"),
            ("url", self.url),
            ("pid" if self.pid is not None else "handle", self.handle),
            ("started", self.started_at),
        ]
        if self.log_path:
            rows.append(("log", f"`{self.log_path}`"))
        if self.manifests:
            rows.append(("manifests", f"`{self.manifests}`"))
        if self.detail:
            rows.append(("note", self.detail))
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"# Service: {self.model_name}\n\n| | |\n|---|---|\n{table}\n"

    def tags(self) -> dict[str, str]:
        """What the registry records on the served model version (``flywheel.service.*``)."""
        return ServiceRecord(self.url, self.handle, self.stack, self.flavor, now_iso()).to_tags()


def services_dir() -> Path:
    """Where state files and local service logs live: ``flywheel_home()/services``."""
    return flywheel_home() / "services"


def dns_name(*parts: str, max_len: int = 63) -> str:
    """A Kubernetes/Docker-safe name (RFC 1123 label): lower-case letters, digits and dashes."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)[:max_len].strip("-")
    if not text:
        raise ValueError(f"cannot make a DNS name from {parts!r}")
    return text


def stack_reference(stack: Stack) -> str:
    """What ``FLYWHEEL_STACK`` must hold for another process to load exactly this stack.

    The stack's name when it is the shipped or imported file of that name; else the absolute path of the
    file it came from; else (a stack built in memory) a copy written under ``services/`` (references
    only, never secret values: ``Stack.to_dict`` keeps references).
    """
    named = stack_file(stack.name)
    source = Path(stack.source).expanduser()
    if source.is_file():
        if named is not None and named.resolve() == source.resolve():
            return stack.name
        return str(source.resolve())
    return str(write_stack_copy(stack, services_dir() / f"{stack.name}.stack.yaml"))


def write_stack_copy(stack: Stack, path: Path) -> Path:
    """Write the stack in its native file form (references stay references) and return the path."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(stack.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def service_secret_refs(stack: Stack) -> list[tuple[str, str]]:
    """(environment variable, reference) for each secret the service resolves, sorted, no duplicates.

    Only the components the service connects to count (not, say, the tuner's database URL).
    """
    found: dict[str, str] = {}
    for attr in SERVICE_COMPONENTS:
        component: Component[Any] | None = getattr(stack, attr)
        if component is None:
            continue
        for _, ref in secrets.find_refs(component.configuration.model_dump(mode="python")):
            found.setdefault(secrets.env_var_for(ref), ref)
    return sorted(found.items())


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET (4xx/5xx included), or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def http_json(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON object a GET returns, or None (no answer, an error status or not a JSON object)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def served_version(url: str, timeout: float = 2.0) -> str | None:
    """The model version a service at ``url`` says it serves: from /ready (no auth), else /model."""
    ready = http_json(f"{url}/ready", timeout)
    if ready is not None and ready.get("model_version") is not None:
        return str(ready["model_version"])
    model = http_json(f"{url}/model", timeout)  # 401 when the service has a token: then unknown
    if model is not None and model.get("version") is not None:
        return str(model["version"])
    return None


def wait_until_ready(
    url: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> int | None:
    """Poll ``url`` until it answers 200 or ``timeout`` passes; returns the last status seen.

    ``alive`` (a callable returning False once the thing serving it has died) cuts the wait short.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    while True:
        last = http_status(url, timeout=min(2.0, max(timeout, 0.1)))
        if last == 200:
            return last
        if alive is not None and not alive():
            return last
        if time.monotonic() >= deadline:
            return last
        time.sleep(interval)


def port_taken(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port`` (a wildcard bind is probed on loopback)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: a wildcard bind address is reached through loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ModelDeployer(ABC):
    """Serves registered models on a stack, one service per model; one subclass per ``model_deployer`` flavor.

    ``deploy`` returns once the model's service answers ``/ready`` (or raises ``DeploymentError`` saying
    why not); a service already running for that model is left to hot-swap to the new champion unless
    ``restart`` is set, and other models' services are never touched. ``status`` returns None when nothing
    is recorded for the model; ``stop`` returns whether something was running; ``statuses`` lists every
    model's service recorded on the stack.
    """

    flavor: ClassVar[str]

    def __init__(self, stack: Stack) -> None:
        component = stack.model_deployer
        if component is None:
            raise DeploymentError(
                f"{stack.source}: stack '{stack.name}' has no model_deployer component; add one "
                "(flavor local, docker or kubernetes) to serve models"
            )
        if component.flavor != self.flavor:
            raise DeploymentError(
                f"{type(self).__name__} serves flavor '{self.flavor}', "
                f"but stack '{stack.name}' has flavor '{component.flavor}'"
            )
        self.stack = stack
        self.component = component

    @abstractmethod
    def deploy(self, model_name: str, version: str, *, restart: bool = False) -> ServiceInfo:
        """Serve ``model_name`` (its champion, currently ``version``) and wait until it is ready."""

    @abstractmethod
    def status(self, model_name: str) -> ServiceInfo | None:
        """The model's recorded service with what a look finds now (running, healthy), or None if none."""

    @abstractmethod
    def stop(self, model_name: str) -> bool:
        """Stop the model's recorded service and forget it; True if something was running."""

    @abstractmethod
    def logs(self, model_name: str, lines: int = 50) -> str:
        """The last ``lines`` lines the model's service wrote."""

    def recorded(self, model_name: str) -> ServiceInfo | None:
        """The model's state file on this stack, as written by its last ``deploy``."""
        from stacks.components.deployers.state import read_state

        return read_state(self.stack.name, model_name)

    def statuses(self) -> tuple[list[ServiceInfo], list[str]]:
        """Every model's service recorded on this stack, as ``status`` finds it, by model name; and a line
        per state file that could not be read."""
        from stacks.components.deployers.state import list_states

        recorded, problems = list_states(self.stack.name)
        return [self.status(info.model_name) or info for info in recorded], problems
