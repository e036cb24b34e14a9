"""The ``docker`` flavor: each model's service in a container built from this repository's Dockerfile.

One container per model, named ``flywheel-<stack>-<model>``, each published on its own host port (the
stack's configured ``port`` for the first model, the first free one after it for each further model, kept
across redeploys: ``state.allocate_port``). Deploying one model never replaces another's container.

The exact ``docker build`` and ``docker run`` commands are rendered first (``render``), so they can be
tested, shown and copied; they are run only when a Docker CLI is on PATH *and* its engine answers
(``docker info``). Otherwise ``deploy`` raises ``ToolUnavailableError`` listing what it would have run.

The container gets the stack as a read-only file (``/etc/flywheel/stack.yaml``, written from the stack
with its secret *references*), and each secret the service needs as ``-e VAR`` without a value: Docker
copies the value from the environment of whoever runs the command, so it never appears on a command
line, in a log or in a file. A stack that keeps its state on this machine (an SQLite registry, a local
artifact folder) gets the Flywheel home mounted at the same path, so the absolute artifact paths MLflow
recorded resolve inside the container too.

The container runs uvicorn with the stack's workers and server limits, as the command after the image (so
``docker inspect`` shows them), and Docker waits as long as the limits say before it kills a stopping
container. The image's own CMD, for a container started by hand, is ``flywheel serve``: the same limits,
read from the stack the container is given.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from stacks import secrets
from stacks.components.deployers.base import (
    APP_FACTORY,
    DeploymentError,
    ModelDeployer,
    ServiceInfo,
    ToolUnavailableError,
    base_url,
    dns_name,
    http_status,
    now_iso,
    port_taken,
    served_version,
    service_secret_refs,
    wait_until_ready,
    write_stack_copy,
)
from stacks.components.deployers.server_options import shutdown_wait_s, uvicorn_flags
from stacks.components.deployers.state import (
    allocate_port,
    clear_state,
    model_slug,
    require_model_name,
    write_state,
)
from stacks.config import DockerDeployerConfig, Stack
from stacks.paths import flywheel_home, has_url_scheme

__all__ = ["CONTAINER_PORT", "REPO_ROOT", "STACK_IN_CONTAINER", "DockerDeployer"]

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The build context: the repository holding the Dockerfile and uv.lock."""

CONTAINER_PORT = 8080
"""The port the image's uvicorn listens on (the Dockerfile's EXPOSE)."""

STACK_IN_CONTAINER = "/etc/flywheel/stack.yaml"

HEALTH_CMD = (
    'python -c "import urllib.request; '
    f"urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/ready', timeout=4)\""
)
"""Healthy once the model is loaded: urlopen raises (exit 1) on a 503 from /ready or no answer."""


class DockerDeployer(ModelDeployer):
    """One container per model, named ``flywheel-<stack>-<model>``, restarted by Docker unless stopped.

    ``docker`` is the CLI to use (default: the one on PATH; tests pass a stand-in), ``context`` the
    build context holding the Dockerfile.
    """

    flavor = "docker"

    def __init__(
        self,
        stack: Stack,
        *,
        docker: str | None = None,
        context: Path | None = None,
        ready_timeout_s: float | None = None,
    ) -> None:
        super().__init__(stack)
        config = self.component.configuration
        assert isinstance(config, DockerDeployerConfig)
        self.config = config
        self.docker = docker or shutil.which("docker")
        self.context = context or REPO_ROOT
        self.ready_timeout_s = ready_timeout_s or config.ready_timeout_s

    # ------------------------------------------------------------------ rendering

    def container_name(self, model_name: str) -> str:
        """``flywheel-<stack>-<model>``; a long stack name is cut, the model's part (with its hash) kept."""
        slug = model_slug(model_name)
        return f"{dns_name('flywheel', self.stack.name, max_len=62 - len(slug))}-{slug}"

    def port_for(self, model_name: str) -> int:
        """The model's host port: kept from an earlier deploy, else the first free one from the stack's."""
        return allocate_port(
            self.stack.name, model_name, self.config.port, lambda p: port_taken("127.0.0.1", p)
        )

    @staticmethod
    def url(port: int) -> str:
        return base_url("127.0.0.1", port)

    @property
    def stack_copy(self) -> Path:
        """Where the stack file mounted into the container is written (references only)."""
        return flywheel_home() / "deploy" / self.stack.name / "stack.yaml"

    def uses_local_state(self) -> bool:
        """True if the registry or artifact store lives in files on this machine (the home is mounted)."""
        if self.stack.artifact_store.flavor == "local":
            return True
        # as written: a reference is a server elsewhere, and rendering resolves no secret
        uris: list[str | None] = []
        if self.stack.experiment_tracker is not None:
            uris.append(self.stack.experiment_tracker.configuration.tracking_uri)
        if self.stack.model_registry is not None:
            uris.append(self.stack.model_registry.configuration.registry_uri)
        return any(
            uri is not None
            and not secrets.is_secret_ref(uri)
            and (uri.startswith(("sqlite:", "file:")) or not has_url_scheme(uri))
            for uri in uris
        )

    def build_command(self) -> list[str]:
        return [
            "docker",
            "build",
            "--tag",
            self.config.image,
            "--file",
            str(self.context / "Dockerfile"),
            str(self.context),
        ]

    def run_command(self, model_name: str, version: str, port: int | None = None) -> list[str]:
        """``docker run`` for the model's service on host ``port`` (default: the model's port);
        environment values only for non-secret settings."""
        port = self.port_for(model_name) if port is None else port
        cmd = [
            "docker",
            "run",
            "--detach",
            "--name",
            self.container_name(model_name),
            "--restart",
            "unless-stopped",
            "--publish",
            f"{port}:{CONTAINER_PORT}",
            "--label",
            f"flywheel.stack={self.stack.name}",
            "--label",
            f"flywheel.model={model_name}",
            "--label",
            f"flywheel.model-version={version}",
            "--health-cmd",
            HEALTH_CMD,
            "--health-interval",
            "10s",
            "--health-timeout",
            "5s",
            "--health-start-period",
            "60s",
            "--health-retries",
            "3",
            "--stop-timeout",  # `docker stop` without --time: in-flight requests, then the app's shutdown
            str(shutdown_wait_s(self.config.server)),
            "--volume",
            f"{self.stack_copy}:{STACK_IN_CONTAINER}:ro",
        ]
        env: dict[str, str] = {
            "FLYWHEEL_STACK": STACK_IN_CONTAINER,
            "FLYWHEEL_MODEL": model_name,
            "OMP_NUM_THREADS": "1",
        }
        if self.uses_local_state():
            home = str(flywheel_home())
            cmd += ["--volume", f"{home}:{home}"]
            env["FLYWHEEL_HOME"] = home
            if os.getuid() != 0:  # write to the mounted home as its owner (still not root)
                cmd += ["--user", f"{os.getuid()}:{os.getgid()}"]
        for key, value in self.config.env.items():
            if secrets.is_secret_ref(value):
                raise DeploymentError(
                    f"{self.stack.source}: {self.component.label()}: key 'env.{key}' holds a secret "
                    f"reference ({value.strip()}); the service resolves references itself, so put the "
                    "reference where it is used (e.g. auth_token) rather than in env"
                )
            env[key] = value
        for key, value in env.items():
            cmd += ["--env", f"{key}={value}"]
        for var, _ref in service_secret_refs(self.stack):
            cmd += ["--env", var]  # the name only: docker takes the value from the caller's environment
        cmd.append(self.config.image)
        return cmd + self.server_command()

    def server_command(self) -> list[str]:
        """What the container runs instead of the image's CMD: uvicorn with the stack's workers and limits."""
        return [
            "python",
            "-m",
            "uvicorn",
            APP_FACTORY,
            "--factory",
            "--host",
            "0.0.0.0",
            "--port",
            str(CONTAINER_PORT),
            "--workers",
            str(self.config.workers),
            *uvicorn_flags(self.config.server),
        ]

    def render(self, model_name: str, version: str, port: int | None = None) -> list[list[str]]:
        """Every command ``deploy`` runs, in order (the build only if the stack asks for it)."""
        commands = []
        if self.config.build:
            commands.append(self.build_command())
        commands.append(["docker", "rm", "--force", self.container_name(model_name)])
        commands.append(self.run_command(model_name, version, port))
        return commands

    # ------------------------------------------------------------------ lifecycle

    def engine_problem(self) -> str | None:
        """None if a docker CLI is on PATH and its engine answers, else why not (one line)."""
        if self.docker is None:
            return "the docker CLI is not on PATH"
        try:
            done = subprocess.run(
                [self.docker, "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=15,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`docker info` failed: {exc}"
        if done.returncode != 0:
            reason = " ".join((done.stderr or done.stdout).split())[:300]
            reason = reason or f"exit {done.returncode}"
            return f"the Docker engine does not answer (`docker info`: {reason})"
        return None

    def deploy(self, model_name: str, version: str, *, restart: bool = False) -> ServiceInfo:
        require_model_name(model_name)
        name = self.container_name(model_name)
        port = self.port_for(model_name)
        commands = self.render(model_name, version, port)
        problem = self.engine_problem()
        if problem is not None:
            raise ToolUnavailableError(
                f"cannot deploy '{model_name}' on stack '{self.stack.name}' with Docker: {problem}. "
                f"With a Docker engine it would write {self.stack_copy} and run:",
                [shlex.join(c) for c in commands],
            )
        current = self.status(model_name)
        if current is not None and current.running and current.healthy and not restart:
            # the service hot-swaps to the new champion by itself
            detail = (
                f"container {name} left running; it hot-swaps to v{version} "
                "when it next reads the champion alias"
            )
            info = current.with_(model_version=version, detail=detail)
            write_state(info.with_(detail=""))
            return info
        write_stack_copy(self.stack, self.stack_copy)
        for command in commands[:-1]:
            self._docker(command[1:], timeout=3600 if command[1] == "build" else 60, check=command[1] != "rm")
        container_id = self._docker(commands[-1][1:], timeout=120).strip()
        started_at = now_iso()
        url = self.url(port)
        status = wait_until_ready(f"{url}/ready", self.ready_timeout_s, alive=lambda: self._running(name))
        if status != 200:
            logs = self._docker(["logs", "--tail", "40", name], timeout=30, check=False)
            raise DeploymentError(
                f"container {name} ({self.config.image}) did not answer 200 on "
                f"{url}/ready within {self.ready_timeout_s:g} s (last answer: {status or 'none'}).\n"
                f"Last lines of `docker logs {name}`:\n{logs.strip() or '(empty)'}"
            )
        info = ServiceInfo(
            flavor=self.flavor,
            stack=self.stack.name,
            url=url,
            model_name=model_name,
            model_version=version,
            started_at=started_at,
            handle=container_id[:12] or name,
            port=port,
            container=container_id or name,
            extra={"image": self.config.image, "name": name},
        )
        write_state(info)
        return info

    def status(self, model_name: str) -> ServiceInfo | None:
        info = self.recorded(model_name)
        if info is None:
            return None
        name = self._name_of(info)
        problem = self.engine_problem()
        if problem is not None:
            return info.with_(running=False, healthy=False, detail=f"cannot look: {problem}")
        if not self._running(name):
            return info.with_(running=False, healthy=False, detail=f"container {name} is not running")
        health = http_status(f"{info.url}/health")
        if health != 200:
            return info.with_(healthy=False, detail=f"{info.url}/health answered {health or 'nothing'}")
        return info.with_(model_version=served_version(info.url) or info.model_version)

    def stop(self, model_name: str) -> bool:
        info = self.recorded(model_name)
        if info is None:
            return False
        name = self._name_of(info)
        problem = self.engine_problem()
        commands = [
            ["docker", "stop", "--time", str(shutdown_wait_s(self.config.server)), name],
            ["docker", "rm", name],
        ]
        if problem is not None:
            raise ToolUnavailableError(
                f"cannot stop container {name}: {problem}. Run, where the engine is:",
                [shlex.join(c) for c in commands],
            )
        running = self._running(name)
        for command in commands:
            self._docker(command[1:], timeout=60, check=False)
        clear_state(self.stack.name, model_name)
        return running

    def logs(self, model_name: str, lines: int = 50) -> str:
        info = self.recorded(model_name)
        name = self._name_of(info) if info is not None else self.container_name(model_name)
        problem = self.engine_problem()
        if problem is not None:
            raise ToolUnavailableError(
                f"cannot read the logs of container {name}: {problem}. Run, where the engine is:",
                [shlex.join(["docker", "logs", "--tail", str(lines), name])],
            )
        return self._docker(["logs", "--tail", str(max(1, lines)), name], timeout=30, check=False).strip()

    # ------------------------------------------------------------------ helpers

    def _name_of(self, info: ServiceInfo) -> str:
        """The container a record names (as it was deployed), else the one this version would name."""
        name = info.extra.get("name")
        return name if isinstance(name, str) and name else self.container_name(info.model_name)

    def _running(self, name: str) -> bool:
        out = self._docker(["inspect", "--format", "{{.State.Running}}", name], timeout=30, check=False)
        return out.strip() == "true"

    def _docker(self, args: list[str], *, timeout: float, check: bool = True) -> str:
        """Run the docker CLI; stdout, or DeploymentError with its stderr when ``check``."""
        assert self.docker is not None
        try:
            done = subprocess.run(
                [self.docker, *args], capture_output=True, text=True, timeout=timeout, cwd=self.context
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"`docker {shlex.join(args[:2])}` took longer than {timeout:g} s") from exc
        if check and done.returncode != 0:
            raise DeploymentError(
                f"`docker {shlex.join(args[:2])} ...` failed (exit {done.returncode}):\n"
                f"{(done.stderr or done.stdout).strip()[-3000:]}"
            )
        return done.stdout
