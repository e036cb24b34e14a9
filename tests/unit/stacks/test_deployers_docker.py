"""The docker deployer's commands (rendered, never run against a real engine here) and the Dockerfile.

A stand-in `docker` script records its arguments and a local HTTP server plays the container's port, so
deploy, status and stop are exercised end to end without a Docker engine.
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacks.components.deployers import DeploymentError, ToolUnavailableError
from stacks.components.deployers.docker import CONTAINER_PORT, REPO_ROOT, DockerDeployer
from stacks.components.deployers.state import allocate_port, read_ports, read_state
from stacks.config import Stack, parse_stack

SECRET_VALUE = "s3cr3t-never-printed"


@pytest.fixture
def docker_stack(minimal: Callable[..., dict[str, Any]]) -> Callable[..., Stack]:
    def make(**config: Any) -> Stack:
        doc = minimal(
            model_deployer={
                "name": "container",
                "flavor": "docker",
                "configuration": {"image": "flywheel:test", "port": 9090, "workers": 2, **config},
            },
            experiment_tracker={
                "name": "mlflow",
                "flavor": "mlflow",
                "configuration": {"tracking_uri": "sqlite:///mlflow.db"},
            },
        )
        return parse_stack(doc, "docker.yaml")

    return make


def _flags(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


def test_build_and_run_commands(docker_stack: Callable[..., Stack], home: Path) -> None:
    d = DockerDeployer(docker_stack(auth_token="{{serving.auth_token}}", env={"LOG_LEVEL": "info"}))
    build, rm, run = d.render("flight-delay", "4")
    assert build == [
        "docker",
        "build",
        "--tag",
        "flywheel:test",
        "--file",
        str(REPO_ROOT / "Dockerfile"),
        str(REPO_ROOT),
    ]
    assert rm == ["docker", "rm", "--force", "flywheel-mini-flight-delay"]
    assert run[:4] == ["docker", "run", "--detach", "--name"] and run[4] == "flywheel-mini-flight-delay"
    image = run.index("flywheel:test")  # then the command that replaces the image's CMD
    assert run[image + 1 : image + 5] == ["python", "-m", "uvicorn", "serving.app:create_app"]
    assert run[run.index("--workers") + 1] == "2"
    assert _flags(run, "--restart") == ["unless-stopped"]
    assert _flags(run, "--publish") == [f"9090:{CONTAINER_PORT}"]
    env = _flags(run, "--env")
    assert "FLYWHEEL_STACK=/etc/flywheel/stack.yaml" in env
    assert "FLYWHEEL_MODEL=flight-delay" in env
    assert "OMP_NUM_THREADS=1" in env
    assert "LOG_LEVEL=info" in env
    assert "SERVING_AUTH_TOKEN" in env  # the name alone: docker copies the caller's value
    assert f"{home / 'deploy' / 'mini' / 'stack.yaml'}:/etc/flywheel/stack.yaml:ro" in _flags(run, "--volume")
    (health,) = _flags(run, "--health-cmd")
    assert f"http://127.0.0.1:{CONTAINER_PORT}/ready" in health
    assert "flywheel.model-version=4" in _flags(run, "--label")


def test_secret_values_never_appear(
    docker_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_AUTH_TOKEN", SECRET_VALUE)
    d = DockerDeployer(docker_stack(auth_token="{{serving.auth_token}}"))
    rendered = json.dumps(d.render("flight-delay", "1"))
    assert SECRET_VALUE not in rendered
    assert not any(a.startswith("SERVING_AUTH_TOKEN=") for a in _flags(d.run_command("m", "1"), "--env"))


def test_a_secret_reference_in_env_is_refused(docker_stack: Callable[..., Stack]) -> None:
    d = DockerDeployer(docker_stack(env={"TOKEN": "${MY_TOKEN}"}))
    with pytest.raises(DeploymentError, match=r"key 'env.TOKEN' holds a secret reference"):
        d.run_command("flight-delay", "1")


def test_local_state_mounts_the_home_and_remote_state_does_not(
    docker_stack: Callable[..., Stack], minimal: Callable[..., dict[str, Any]], home: Path
) -> None:
    run = DockerDeployer(docker_stack()).run_command("m", "1")
    assert f"{home}:{home}" in _flags(run, "--volume")
    assert f"FLYWHEEL_HOME={home}" in _flags(run, "--env")
    remote = minimal(
        artifact_store={"name": "s3", "flavor": "s3", "configuration": {"path": "s3://bucket/artifacts"}},
        experiment_tracker={
            "name": "m",
            "flavor": "mlflow",
            "configuration": {"tracking_uri": "http://mlflow:5000"},
        },
        model_deployer={"name": "d", "flavor": "docker", "configuration": {}},
    )
    run = DockerDeployer(parse_stack(remote, "remote.yaml")).run_command("m", "1")
    assert len(_flags(run, "--volume")) == 1  # the stack file only
    assert not any(e.startswith("FLYWHEEL_HOME=") for e in _flags(run, "--env"))


def test_no_engine_says_what_it_would_run(docker_stack: Callable[..., Stack], tmp_path: Path) -> None:
    fake = _fake_docker(tmp_path, info_ok=False)
    d = DockerDeployer(docker_stack(), docker=str(fake))
    with pytest.raises(ToolUnavailableError, match="the Docker engine does not answer") as caught:
        d.deploy("flight-delay", "1")
    assert "docker run --detach --name flywheel-mini-flight-delay" in str(caught.value)
    assert any(c.startswith("docker build --tag flywheel:test") for c in caught.value.commands)
    assert read_state("mini", "flight-delay") is None


def test_no_cli_says_what_it_would_run(
    docker_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    d = DockerDeployer(docker_stack(build=False))
    with pytest.raises(ToolUnavailableError, match="the docker CLI is not on PATH") as caught:
        d.deploy("flight-delay", "1")
    assert not any("docker build" in c for c in caught.value.commands)


# ---------------------------------------------------------------- with a stand-in docker CLI


def _fake_docker(folder: Path, *, info_ok: bool = True) -> Path:
    """A `docker` that logs each call and answers like an engine with one running container."""
    log = folder / "docker-calls.log"
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {shlex.quote(str(log))}\n'
        'case "$1" in\n'
        f"  info) {'echo 27.3.1' if info_ok else 'echo Cannot connect to the Docker daemon >&2; exit 1'} ;;\n"
        "  run) echo 0123456789abcdef0123 ;;\n"
        "  inspect) echo true ;;\n"
        "  logs) echo container log line ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


class _Service(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/health": b"{}", "/ready": b"{}", "/model": b'{"version": "5"}'}.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def container_port() -> Iterator[int]:
    """A local HTTP server standing in for the container's published port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_deploy_status_stop_with_a_stand_in_engine(
    docker_stack: Callable[..., Stack], tmp_path: Path, container_port: int, home: Path
) -> None:
    fake = _fake_docker(tmp_path)
    d = DockerDeployer(docker_stack(port=container_port), docker=str(fake))
    # the stand-in listens before the "container" runs: give the model its port as an earlier deploy did
    assert allocate_port("mini", "flight-delay", container_port, lambda port: False) == container_port
    info = d.deploy("flight-delay", "5")
    assert info.container == "0123456789abcdef0123" and info.handle == "0123456789ab"
    assert info.url == f"http://127.0.0.1:{container_port}"
    calls = (tmp_path / "docker-calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls if c.split()[0] in ("build", "rm", "run")] == ["build", "rm", "run"]
    stack_copy = home / "deploy" / "mini" / "stack.yaml"
    assert "stack_name: mini" in stack_copy.read_text()

    seen = d.status("flight-delay")
    assert seen is not None and seen.running and seen.healthy and seen.model_version == "5"
    again = d.deploy("flight-delay", "6")  # healthy: left to hot-swap, no new container
    assert "hot-swaps to v6" in again.detail
    assert sum(c.startswith("run ") for c in (tmp_path / "docker-calls.log").read_text().splitlines()) == 1
    assert d.logs("flight-delay", 5) == "container log line"
    assert "logs --tail 5 flywheel-mini-flight-delay" in (tmp_path / "docker-calls.log").read_text()

    name = "flywheel-mini-flight-delay"
    assert d.stop("flight-delay") is True
    calls = (tmp_path / "docker-calls.log").read_text().splitlines()
    assert f"stop --time 30 {name}" in calls and f"rm {name}" in calls  # 10 s grace + 20
    assert read_state("mini", "flight-delay") is None
    assert read_ports("mini") == {"flight-delay": container_port}  # kept for the next deploy


# ---------------------------------------------------------------- the Dockerfile


def _dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    text = re.sub(r"\\\n", " ", _dockerfile())
    return [
        line.strip()[len(name) :].strip() for line in text.splitlines() if line.strip().startswith(name + " ")
    ]


def test_dockerfile_base_and_locked_runtime_dependencies() -> None:
    text = _dockerfile()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert all(f in ("${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}") for f in _instructions("FROM"))
    syncs = [r for r in _instructions("RUN") if "uv sync" in r]
    assert syncs and all("--frozen" in r and "--no-dev" in r for r in syncs)
    assert not any(flag in text for flag in ("--all-groups", "--group dev", "--dev "))
    assert any("pip install" in r and "uv" in r for r in _instructions("RUN"))


def test_dockerfile_serves_with_the_stacks_limits_as_a_non_root_user() -> None:
    users = _instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert _instructions("EXPOSE") == [str(CONTAINER_PORT)]
    (health,) = _instructions("HEALTHCHECK")
    assert f"http://127.0.0.1:{CONTAINER_PORT}/ready" in health
    (cmd,) = _instructions("CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["flywheel", "serve"]  # workers, timeouts and limits from the stack it is given
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == str(CONTAINER_PORT)
    assert any("OMP_NUM_THREADS=1" in e for e in _instructions("ENV"))
    assert not any("FLYWHEEL_MODEL" in e for e in _instructions("ENV"))  # no default model in the image


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and line[0] != "#"
    }
    assert {
        ".venv",
        ".flywheel",
        "tests",
        ".git",
        "**/__pycache__",
        ".pytest_cache",
        ".mypy_cache",
    } <= ignored
    for copy in _instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _dest = copy.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_each_model_has_its_own_container_and_host_port(
    docker_stack: Callable[..., Stack], free_port: int
) -> None:
    d = DockerDeployer(docker_stack(port=free_port))
    first = d.run_command("flight-delay", "1")
    second = d.run_command("diamond-price", "3")
    assert first[first.index("--name") + 1] == "flywheel-mini-flight-delay"
    assert second[second.index("--name") + 1] == "flywheel-mini-diamond-price"
    assert _flags(first, "--publish") == [f"{free_port}:{CONTAINER_PORT}"]  # the stack's port: first model
    assert _flags(second, "--publish") == [f"{free_port + 1}:{CONTAINER_PORT}"]
    assert "FLYWHEEL_MODEL=diamond-price" in _flags(second, "--env")
    assert "flywheel.model=diamond-price" in _flags(second, "--label")
    again = d.run_command("flight-delay", "2")  # a redeploy keeps the model's port
    assert _flags(again, "--publish") == [f"{free_port}:{CONTAINER_PORT}"]


def test_container_names_stay_valid_for_long_and_odd_names(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal(model_deployer={"name": "d", "flavor": "docker", "configuration": {}})
    doc["stack_name"] = "a-rather-long-stack-name-for-a-staging-environment"
    d = DockerDeployer(parse_stack(doc, "long.yaml"))
    names = {d.container_name(m) for m in ("Fraud Model/v2" * 4, "fraud-model-v2", "Fraud_Model_V2")}
    assert len(names) == 3  # no two models share a container
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), name
