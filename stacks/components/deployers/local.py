"""The ``local`` flavor: each model's service as a detached uvicorn process on this machine.

One process per model, each on its own port: the first model of a stack gets the stack's configured
``port``, each further model the first free port after it, and a model keeps its port across stops and
redeploys (``state.allocate_port``). A process outlives the flow that started it
(``start_new_session=True``: its own process group, so a Ctrl-C in the terminal that ran ``flywheel`` does
not reach it, and ``stop`` can end the uvicorn master and its workers together). What was started is
recorded in ``flywheel_home()/services/<stack>/<model>.json``, its output in ``<model>.log`` beside it, so
any later process can find, check and stop it; a stale file (the machine rebooted, the process was killed)
is recognised by the process being gone or being something else now, and is never acted on.

Redeploying while a healthy service for the same model runs leaves it running: the service hot-swaps
to the new champion by itself when the alias moves, so a new model costs no restart and no dropped request.
Deploying or stopping one model takes that model's lock only; other models' services are not touched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stacks import secrets
from stacks.components.deployers.base import (
    APP_FACTORY,
    DeploymentError,
    ModelDeployer,
    ServiceInfo,
    base_url,
    http_status,
    now_iso,
    port_taken,
    served_version,
    service_secret_refs,
    stack_reference,
    wait_until_ready,
)
from stacks.components.deployers.server_options import shutdown_wait_s, uvicorn_flags
from stacks.components.deployers.state import (
    allocate_port,
    clear_state,
    log_path,
    model_lock,
    ports_path,
    require_model_name,
    state_path,
    write_state,
)
from stacks.config import LocalDeployerConfig, Stack
from stacks.paths import flywheel_home

__all__ = ["LocalDeployer", "log_tail", "pid_alive"]

logger = logging.getLogger(__name__)

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes this interpreter started: kept so they are reaped (no zombies) and not garbage-collected."""


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know


def _runs_app(pid: int, app: str) -> bool:
    """True if ``pid`` runs ``app`` (guards against a recycled pid); True where /proc cannot tell."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # the process is gone (on Linux) or there is no /proc
    except OSError:
        return True
    return app.encode() in cmdline


def log_tail(path: Path | str, lines: int = 25, max_bytes: int = 1_000_000) -> str:
    """The last ``lines`` lines of a log file (read from its last ``max_bytes`` only), or a note."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-max(1, lines) :]) or "(the log is empty)"


class LocalDeployer(ModelDeployer):
    """Runs ``python -m uvicorn serving.app:create_app --factory`` detached, one process per model.

    ``app`` and ``python`` are the factory and interpreter to run (tests substitute a stand-in app);
    ``ready_timeout_s`` overrides the stack's ``ready_timeout_s``; ``stop_timeout_s`` (how long ``stop``
    waits after SIGTERM before SIGKILL) defaults to the graceful shutdown timeout plus the app's shutdown.
    """

    flavor = "local"

    def __init__(
        self,
        stack: Stack,
        *,
        app: str = APP_FACTORY,
        python: str | None = None,
        ready_timeout_s: float | None = None,
        stop_timeout_s: float | None = None,
    ) -> None:
        super().__init__(stack)
        config = self.component.configuration
        assert isinstance(config, LocalDeployerConfig)
        self.config = config
        self.app = app
        self.python = python or sys.executable
        self.ready_timeout_s = ready_timeout_s or config.ready_timeout_s
        self.stop_timeout_s = stop_timeout_s or shutdown_wait_s(config.server)

    # ------------------------------------------------------------------ rendering

    def url(self, port: int | None = None) -> str:
        """The URL of a service on ``port`` (default: the stack's configured port, its first model's)."""
        return base_url(self.config.host, self.config.port if port is None else port)

    def port_for(self, model_name: str) -> int:
        """The model's port: kept from an earlier deploy, else the first free one from the stack's port."""
        return allocate_port(
            self.stack.name, model_name, self.config.port, lambda p: port_taken(self.config.host, p)
        )

    def log_path(self, model_name: str) -> Path:
        return log_path(self.stack.name, model_name)

    def command(self, port: int | None = None) -> list[str]:
        """The uvicorn command line (this interpreter, so the service sees the same packages), with the
        stack's server limits, on ``port`` (default: the stack's configured port)."""
        return [
            self.python,
            "-m",
            "uvicorn",
            self.app,
            "--factory",
            "--host",
            self.config.host,
            "--port",
            str(self.config.port if port is None else port),
            "--workers",
            str(self.config.workers),
            "--no-access-log",  # a line per request cost 14-18% of throughput; /metrics counts requests
            *uvicorn_flags(self.config.server),
        ]

    def environment(self, model_name: str) -> dict[str, str]:
        """What the service's environment adds to this process's (secrets are inherited, never written)."""
        return {
            "FLYWHEEL_STACK": stack_reference(self.stack),
            "FLYWHEEL_HOME": str(flywheel_home()),
            "FLYWHEEL_MODEL": model_name,
            # one OpenMP thread per worker: half the CPU per request at equal latency (measured on 2 cores)
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "WHYLOGS_NO_ANALYTICS": "True",
        }

    def warnings(self) -> list[str]:
        """Known performance traps of this configuration on this machine."""
        found = []
        if self.config.workers > 1 and importlib.util.find_spec("httptools") is None:
            found.append(
                f"{self.config.workers} workers without uvicorn[standard] (httptools, uvloop): "
                "uvicorn's plain h11 stack loses TCP_NODELAY with several workers (~45 ms per "
                "keep-alive request); install uvicorn[standard]"
            )
        return found

    # ------------------------------------------------------------------ lifecycle

    def _lock(self, model_name: str) -> contextlib.AbstractContextManager[None]:
        return model_lock(self.stack.name, model_name, self.ready_timeout_s + self.stop_timeout_s + 30)

    def deploy(self, model_name: str, version: str, *, restart: bool = False) -> ServiceInfo:
        require_model_name(model_name)
        self._require_service_secrets()
        with self._lock(model_name):
            return self._deploy_locked(model_name, version, restart=restart)

    def _deploy_locked(self, model_name: str, version: str, *, restart: bool) -> ServiceInfo:
        current = self.status(model_name)
        if current is not None and current.running:
            if current.healthy and not restart:
                return self._keep(current, version)
            logger.info(
                "replacing the service of %r on stack %r (pid %s)", model_name, self.stack.name, current.pid
            )
            self._stop_locked(model_name)
        elif current is not None:
            clear_state(self.stack.name, model_name)  # stale: the process is gone
        port = self.port_for(model_name)
        if port_taken(self.config.host, port):
            raise DeploymentError(
                f"port {port} on {self.config.host}, the port of '{model_name}' on stack "
                f"'{self.stack.name}', is in use by a process that is not its recorded service; stop "
                f"that process, or remove '{model_name}' from {ports_path(self.stack.name)} to be "
                f"given another port (the stack's base port is in {self.stack.source}, "
                f"{self.component.label()}, key 'port')"
            )
        return self._start(model_name, version, port)

    def _keep(self, current: ServiceInfo, version: str) -> ServiceInfo:
        """A healthy service of this model is running: leave it to hot-swap to the new champion."""
        served = current.model_version
        if served == version:
            detail = f"already serving v{version}; left running"
        else:
            detail = (
                f"left running (pid {current.pid}); it serves v{served} and hot-swaps to v{version} "
                "when it next reads the champion alias"
            )
        info = current.with_(model_version=version, detail=detail, extra={**current.extra, "served": served})
        write_state(info.with_(detail=""))
        return info

    def _start(self, model_name: str, version: str, port: int) -> ServiceInfo:
        log = self.log_path(model_name)
        log.parent.mkdir(parents=True, exist_ok=True)
        command = self.command(port)
        env = {**os.environ, **self.environment(model_name)}
        url = self.url(port)
        notes = self.warnings()
        for note in notes:
            logger.warning(note)
        with open(log, "ab") as out:
            out.write(f"\n==== {now_iso()} starting {model_name}: {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[process.pid] = process
        started_at = now_iso()
        status = wait_until_ready(f"{url}/ready", self.ready_timeout_s, alive=lambda: process.poll() is None)
        if status != 200:
            code = process.poll()
            if code is None:
                self._terminate(process.pid)
                why = (
                    f"did not answer 200 on {url}/ready within {self.ready_timeout_s:g} s "
                    f"(last answer: {status or 'none'}); it was stopped"
                )
            else:
                why = f"exited with code {code} before it was ready"
            raise DeploymentError(
                f"the service of '{model_name}' on stack '{self.stack.name}' ({' '.join(command)}) {why}.\n"
                f"Last lines of {log}:\n{log_tail(log)}"
            )
        info = ServiceInfo(
            flavor=self.flavor,
            stack=self.stack.name,
            url=url,
            model_name=model_name,
            model_version=version,
            started_at=started_at,
            handle=str(process.pid),
            pid=process.pid,
            port=port,
            log_path=str(log),
            detail="; ".join(notes),
            extra={"command": command, "app": self.app, "stack_ref": env["FLYWHEEL_STACK"]},
        )
        write_state(info)
        return info

    def status(self, model_name: str) -> ServiceInfo | None:
        info = self.recorded(model_name)
        if info is None:
            return None
        if info.pid is None or not pid_alive(info.pid) or not _runs_app(info.pid, self._app_of(info)):
            return info.with_(
                running=False,
                healthy=False,
                detail=f"process {info.pid} is not running; {state_path(self.stack.name, model_name)} is "
                "stale (`flywheel service stop` removes it)",
            )
        health = http_status(f"{info.url}/health")
        if health != 200:
            return info.with_(
                healthy=False,
                detail=f"process {info.pid} runs but {info.url}/health "
                + (f"answered {health}" if health else "does not answer"),
            )
        return info.with_(healthy=True, model_version=served_version(info.url) or info.model_version)

    def stop(self, model_name: str) -> bool:
        with self._lock(model_name):
            return self._stop_locked(model_name)

    def _stop_locked(self, model_name: str) -> bool:
        info = self.recorded(model_name)
        if info is None:
            return False
        running = info.pid is not None and pid_alive(info.pid) and _runs_app(info.pid, self._app_of(info))
        if running:
            assert info.pid is not None
            self._terminate(info.pid)
            if pid_alive(info.pid):
                raise DeploymentError(f"process {info.pid} survived SIGKILL; state file kept")
        clear_state(self.stack.name, model_name)
        return running

    def logs(self, model_name: str, lines: int = 50) -> str:
        info = self.recorded(model_name)
        return log_tail(info.log_path if info and info.log_path else self.log_path(model_name), lines)

    # ------------------------------------------------------------------ helpers

    def _app_of(self, info: ServiceInfo) -> str:
        app = info.extra.get("app")
        return app if isinstance(app, str) else self.app

    def _require_service_secrets(self) -> None:
        """The service resolves its secrets from its environment (inherited): check they are there now."""
        missing = []
        for var, ref in service_secret_refs(self.stack):
            try:
                secrets.resolve(ref)
            except secrets.SecretNotFoundError:
                missing.append(f"{ref} (set {var})")
        if missing:
            raise DeploymentError(
                f"{self.stack.source}: the service of stack '{self.stack.name}' needs secrets that are "
                f"not set: {', '.join(missing)}"
            )

    def _terminate(self, pid: int) -> None:
        """SIGTERM the process group (uvicorn and its workers); SIGKILL what outlives the timeout."""

        def send(sig: signal.Signals) -> None:
            try:
                if os.getpgid(pid) == pid:  # a session leader we started: the whole group
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

        send(signal.SIGTERM)
        if not self._wait_gone(pid, self.stop_timeout_s):
            logger.warning("pid %s ignored SIGTERM for %.0f s: SIGKILL", pid, self.stop_timeout_s)
            send(signal.SIGKILL)
            self._wait_gone(pid, 5.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # workers left behind by a master that died first
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                _CHILDREN[pid] = child

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
