"""`flywheel stack check`: can this machine reach every component of a stack, right now?

A training run that fails after an hour because the artifact store's credentials are missing
or the MLflow server is down wastes the hour; this answers in seconds, per component, with one
line saying what worked or why not. Every check runs in its own daemon thread with a deadline,
so an unroutable host costs `timeout` seconds, not a TCP retry schedule, and checks run in
parallel. Secrets are resolved to connect (through the stack, so `{{name.key}}` is found on the
stack's own Prefect server in a shell without PREFECT_API_URL) but never appear in a detail line:
each line has the secrets it resolved and every URL's password masked.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stacks import secret_keys, secrets
from stacks.config import (
    ArtifactStoreComponent,
    Component,
    ComponentType,
    ComputeConfig,
    FileLineageConfig,
    LocalDeployerConfig,
    OrchestratorComponent,
    Stack,
)
from stacks.paths import resolve_path

__all__ = ["ComponentCheck", "check_stack"]


@dataclass(frozen=True)
class ComponentCheck:
    """The verdict for one component: reachable (ok) or not, and a one-line reason."""

    component_type: str
    name: str
    flavor: str
    ok: bool
    detail: str


class _NotOk(Exception):
    """A check's negative verdict, with the reason as its message."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- probes


def _http_get(url: str, timeout: float) -> str:
    """GET a health URL; return a short description or raise _NotOk with the reason."""
    # a loopback service is never behind the HTTP proxy the environment may name
    loopback = urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback else None
    try:
        with (opener.open if opener else urllib.request.urlopen)(url, timeout=timeout) as resp:
            return f"{secret_keys.mask_url(url)} answered {resp.status}"
    except urllib.error.HTTPError as exc:
        raise _NotOk(f"{secret_keys.mask_url(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _NotOk(
            f"cannot reach {secret_keys.mask_url(url)}: "
            f"{_one_line(reason) if isinstance(reason, BaseException) else reason}"
        ) from None


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _writable_folder(folder: Path) -> None:
    """Create `folder` if needed and prove it is writable with a temporary file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flywheel-check-"):
            pass
    except OSError as exc:
        raise _NotOk(f"folder {folder} is not writable: {_one_line(exc)}") from None


def _database(uri: str, timeout: float, what: str) -> str:
    """SQLite: its folder is writable (and an existing file opens); others: connect and SELECT 1."""
    if uri.startswith("sqlite:"):
        if not uri.startswith("sqlite:///"):
            return f"{what}: in-memory SQLite"
        db = uri.split("?", 1)[0].removeprefix("sqlite:///")
        if not db or db == ":memory:":
            return f"{what}: in-memory SQLite"
        path = Path(db)
        _writable_folder(path.parent)
        if not path.exists():
            return f"{what}: {path} will be created (folder writable)"
    from sqlalchemy import create_engine, text  # lazy: heavy import

    scheme = uri.split(":", 1)[0]
    connect_args: dict[str, Any] = {}
    if scheme.startswith(("postgresql", "mysql", "mariadb")):
        connect_args["connect_timeout"] = max(1, math.ceil(timeout))
    elif scheme.startswith("sqlite"):
        connect_args["timeout"] = timeout
    try:
        engine = create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        raise _NotOk(f"{what}: cannot connect to {secret_keys.mask_url(uri)}: {_one_line(exc)}") from None
    return f"{what}: connected to {secret_keys.mask_url(uri)}"


def _mlflow_uri(uri: str, timeout: float, what: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"{what}: " + _http_get(f"{uri.rstrip('/')}/health", timeout)
    if uri == "databricks" or uri.startswith("databricks"):
        return f"{what}: Databricks (not probed)"
    if "://" in uri and not uri.startswith("file://"):
        return _database(uri, timeout, what)
    folder = Path(uri.removeprefix("file://"))
    _writable_folder(folder)
    return f"{what}: file store {folder} writable"


# --------------------------------------------------------------------------- per type


def _check_orchestrator(stack: Stack, timeout: float) -> str:
    orch: OrchestratorComponent = stack.orchestrator
    cfg = orch.configuration
    parts = []
    if cfg.api_url is None:
        parts.append("ephemeral local API (started by the first flow run)")
    else:
        url = stack.resolve(cfg.api_url).rstrip("/")
        parts.append("Prefect API " + _http_get(f"{url}/health", timeout))
    if cfg.dask_address:
        addr = urlparse(cfg.dask_address)
        if not addr.hostname or not addr.port:
            raise _NotOk(f"dask_address {cfg.dask_address!r} has no host:port")
        if not _tcp_open(addr.hostname, addr.port, timeout):
            raise _NotOk(f"{parts[0]}; but the Dask scheduler {cfg.dask_address} does not answer")
        parts.append(f"Dask scheduler {cfg.dask_address} answers")
    return "; ".join(parts)


def _check_artifact_store(stack: Stack, timeout: float) -> str:
    store: ArtifactStoreComponent = stack.artifact_store
    root = stack.artifact_root()
    options = stack.storage_options()
    import fsspec  # lazy

    if store.flavor == "s3":
        # fail fast on a dead endpoint instead of botocore's retry schedule
        config_kwargs = {"connect_timeout": timeout, "read_timeout": timeout, "retries": {"max_attempts": 1}}
        options["config_kwargs"] = {**config_kwargs, **(options.get("config_kwargs") or {})}
    try:
        fs, path = fsspec.core.url_to_fs(root, skip_instance_cache=True, **options)
        fs.makedirs(path, exist_ok=True)
        probe = f"{path.rstrip('/')}/.flywheel-check-{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"flywheel")
        if fs.cat_file(probe) != b"flywheel":
            raise _NotOk(f"{root}: the probe file read back different bytes")
        fs.rm_file(probe)
    except _NotOk:
        raise
    except ImportError as exc:
        raise _NotOk(f"{root}: {_one_line(exc)}") from None
    except Exception as exc:
        raise _NotOk(f"{root}: write/read/delete failed: {_one_line(exc)}") from None
    return f"{root}: write, read and delete ok"


def _check_tracker(stack: Stack, timeout: float) -> str:
    uri = stack.mlflow_tracking_uri()
    assert uri is not None
    return _mlflow_uri(uri, timeout, "tracking")


def _check_registry(stack: Stack, timeout: float) -> str:
    uri = stack.mlflow_registry_uri()
    assert uri is not None
    return _mlflow_uri(uri, timeout, "registry")


def _check_validator(stack: Stack, timeout: float) -> str:
    if importlib.util.find_spec("whylogs") is None:
        raise _NotOk("whylogs is not installed (pip install 'whylogs[viz]')")
    note = (
        ""
        if os.environ.get("WHYLOGS_NO_ANALYTICS")
        else " (set WHYLOGS_NO_ANALYTICS=True to stop usage analytics)"
    )
    return f"whylogs importable{note}"


def _check_deployer(stack: Stack, timeout: float) -> str:
    deployer = stack.model_deployer
    assert deployer is not None
    cfg = deployer.configuration
    if isinstance(cfg, LocalDeployerConfig):
        if not _tcp_open(cfg.host, cfg.port, timeout):
            return f"port {cfg.host}:{cfg.port} is free"
        try:
            answer = _http_get(f"http://{cfg.host}:{cfg.port}/health", timeout)
        except _NotOk as exc:
            raise _NotOk(
                f"port {cfg.host}:{cfg.port} is taken by something that is not a Flywheel service ({exc})"
            ) from None
        return f"service already running: {answer}"
    tool = "docker" if deployer.flavor == "docker" else "kubectl"
    found = shutil.which(tool)
    if found is None:
        raise _NotOk(f"'{tool}' is not on PATH")
    return f"'{tool}' found at {found}"


def _check_tuner(stack: Stack, timeout: float) -> str:
    storage = stack.optuna_storage()
    if storage is None:
        return "in-memory study (trials are not shared between processes)"
    return _database(storage, timeout, "study storage")


def _check_compute(stack: Stack, timeout: float) -> str:
    compute = stack.compute
    assert compute is not None
    cfg: ComputeConfig = compute.configuration
    needs_dask = cfg.engine == "dask" or compute.flavor == "dask"
    missing = [m for m in ("dask", "distributed") if needs_dask and importlib.util.find_spec(m) is None]
    if missing:
        raise _NotOk(f"engine needs {', '.join(missing)}, not installed")
    if cfg.device == "cuda" and shutil.which("nvidia-smi") is None:
        raise _NotOk("device 'cuda' but no NVIDIA driver (nvidia-smi not on PATH)")
    jobs = cfg.n_jobs or os.cpu_count() or 1
    summary = f"{cfg.device}, {jobs} jobs, {cfg.engine} engine"
    if cfg.dask_address:
        addr = urlparse(cfg.dask_address)
        if not addr.hostname or not addr.port or not _tcp_open(addr.hostname, addr.port, timeout):
            raise _NotOk(f"{summary}; but the Dask scheduler {cfg.dask_address} does not answer")
        summary += f"; Dask scheduler {cfg.dask_address} answers"
    return summary


def _check_prediction_store(stack: Stack, timeout: float) -> str:
    url = stack.prediction_store_url()
    assert url is not None
    return _database(url, timeout, "prediction table database")


def _check_lineage(stack: Stack, timeout: float) -> str:
    lineage = stack.lineage
    assert lineage is not None
    cfg = lineage.configuration
    if isinstance(cfg, FileLineageConfig):
        path = Path(resolve_path(cfg.path))
        _writable_folder(path.parent)
        return f"OpenLineage events appended to {path}"
    where = urlparse(cfg.url)
    port = where.port or (443 if where.scheme == "https" else 80)
    if not _tcp_open(where.hostname or "", port, timeout):
        raise _NotOk(f"cannot reach {secret_keys.mask_url(cfg.url)} (the OpenLineage consumer)")
    return f"OpenLineage consumer at {secret_keys.mask_url(cfg.url)} accepts connections"


def _check_stream(stack: Stack, timeout: float) -> str:
    """Redis answers; or, on this machine, nothing listens yet (like the local deployer's free port: the
    streaming consumer is started when wanted, `make stream-up` starts Redis with it)."""
    import redis

    url = stack.stream_url()
    assert url is not None
    shown = secret_keys.mask_url(url)
    where = urlparse(url)
    local = where.scheme in ("redis", "rediss") and where.hostname in ("127.0.0.1", "localhost", "::1")
    if local and not _tcp_open(where.hostname or "", where.port or 6379, timeout):
        return f"no Redis at {shown} yet: `make stream-up` starts one and a consumer per champion"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        version = client.info("server").get("redis_version", "?")
        client.close()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise _NotOk(f"cannot reach Redis at {shown}: {exc}") from exc
    return f"Redis {version} at {shown} answers"


def _check_metrics(stack: Stack, timeout: float) -> str:
    """Prometheus answers its readiness probe; or, on this machine, nothing listens yet (`make up` starts
    it), as for the local deployer's free port."""
    metrics = stack.metrics
    assert metrics is not None
    url = metrics.configuration.url
    where = urlparse(url)
    local = where.hostname in ("127.0.0.1", "localhost", "::1")
    port = where.port or (443 if where.scheme == "https" else 80)
    if local and not _tcp_open(where.hostname or "", port, timeout):
        return f"no Prometheus at {url} yet: `make up` starts one"
    try:
        _http_get(f"{url.rstrip('/')}/-/ready", timeout)
    except _NotOk as exc:
        raise _NotOk(f"Prometheus at {url} is not ready: {exc}") from None
    return f"Prometheus at {url} is ready"


_CHECKS: dict[ComponentType, Callable[[Stack, float], str]] = {
    ComponentType.ORCHESTRATOR: _check_orchestrator,
    ComponentType.ARTIFACT_STORE: _check_artifact_store,
    ComponentType.EXPERIMENT_TRACKER: _check_tracker,
    ComponentType.MODEL_REGISTRY: _check_registry,
    ComponentType.DATA_VALIDATOR: _check_validator,
    ComponentType.MODEL_DEPLOYER: _check_deployer,
    ComponentType.TUNER: _check_tuner,
    ComponentType.COMPUTE: _check_compute,
    ComponentType.PREDICTION_STORE: _check_prediction_store,
    ComponentType.LINEAGE: _check_lineage,
    ComponentType.STREAM: _check_stream,
    ComponentType.METRICS: _check_metrics,
}


def _resolve_secrets(
    component: Component[Any], resolver: secrets.SecretResolver
) -> tuple[list[str], list[str]]:
    """(one reason per reference that does not resolve, the values of those that do)."""
    problems, values = [], []
    for key, ref in secrets.find_refs(component.configuration.model_dump()):
        try:
            values.append(resolver.resolve(ref))
        except secrets.SecretNotFoundError as exc:
            problems.append(f"key '{key}' ({ref}: {exc.hint})")
    return problems, values


def _scrub(detail: str, values: list[str]) -> str:
    """A detail line with any resolved secret and any URL password masked (an error may quote them)."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3:  # shorter strings are in every message; masking them would garble it
            detail = detail.replace(value, secrets.MASK)
    return secret_keys.redact(detail)


def _run_one(
    stack: Stack, component: Component[Any], timeout: float, resolver: secrets.SecretResolver
) -> ComponentCheck:
    values: list[str] = []
    try:
        missing, values = _resolve_secrets(component, resolver)
        if missing:
            ok, detail = False, "unresolvable secret " + "; ".join(missing)
        else:
            ok, detail = True, _CHECKS[component.type](stack, timeout)
    except _NotOk as exc:
        ok, detail = False, str(exc)
    except Exception as exc:  # a check must report, never crash the command
        ok, detail = False, f"{type(exc).__name__}: {_one_line(exc)}"
    return ComponentCheck(component.type.value, component.name, component.flavor, ok, _scrub(detail, values))


def check_stack(stack: Stack, timeout: float = 5.0) -> list[ComponentCheck]:
    """Check every component in parallel; each verdict arrives within about `timeout` seconds."""
    components = stack.components()
    # one resolver for all components: a Prefect server that does not answer is waited on once
    resolver = stack.secret_resolver(timeout=timeout)
    resolver.warm_up(ref for _, _, ref in stack.secret_refs())  # before any component's clock starts
    results: dict[int, ComponentCheck] = {}
    threads = []
    for i, component in enumerate(components):

        def work(i: int = i, component: Component[Any] = component) -> None:
            results[i] = _run_one(stack, component, timeout, resolver)

        thread = threading.Thread(target=work, name=f"stack-check-{component.type.value}", daemon=True)
        thread.start()
        threads.append(thread)
    # checks honour `timeout` themselves (a check may make two calls); this is the backstop
    deadline = time.monotonic() + 1.5 * timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [
        results.get(i)
        or ComponentCheck(c.type.value, c.name, c.flavor, False, f"no answer within {timeout:g} s")
        for i, c in enumerate(components)
    ]
