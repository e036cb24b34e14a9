"""The local deployer: its command, environment and state file, and a real detached process.

The process runs a stand-in ASGI app (written to a temporary folder, same /health, /ready and /model
contract as serving.app) under the real uvicorn, so start, readiness, hot-swap, status and stop are tested
for real without a trained model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacks.components.deployers import DeploymentError, ServiceInfo
from stacks.components.deployers.local import LocalDeployer, pid_alive
from stacks.components.deployers.state import (
    allocate_port,
    read_ports,
    read_state,
    state_path,
    write_state,
)
from stacks.config import Stack
from stacks.loader import load_stack

FAKE_APP = '''
"""A stand-in for serving.app: /health, /ready (or never ready), /model; FAKE_MODE=crash fails at start."""
import json
import os


def create_app():
    mode = os.environ.get("FAKE_MODE", "ok")
    if mode == "crash":
        raise RuntimeError("fake service cannot load its model")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/health":
            status, body = 200, {"status": "ok"}
        elif path == "/ready":
            status, body = (503, {"ready": False}) if mode == "never-ready" else (
                200, {"ready": True, "model_version": os.environ.get("FAKE_VERSION", "1")}
            )
        elif path == "/model":
            status, body = 200, {
                "name": os.environ["FLYWHEEL_MODEL"],
                "version": os.environ.get("FAKE_VERSION", "1"),
                "stack": os.environ["FLYWHEEL_STACK"],
                "home": os.environ["FLYWHEEL_HOME"],
                "omp": os.environ.get("OMP_NUM_THREADS"),
            }
        else:
            status, body = 404, {}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    return app
'''
FAKE = "fake_flywheel_service:create_app"


@pytest.fixture
def fake_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Put the stand-in app on the service's PYTHONPATH (the service inherits this environment)."""
    folder = tmp_path / "fake-app"
    folder.mkdir()
    (folder / "fake_flywheel_service.py").write_text(FAKE_APP)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delenv("FAKE_MODE", raising=False)
    monkeypatch.setenv("FAKE_VERSION", "7")
    return FAKE


@pytest.fixture
def local_stack(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path], free_port: int
) -> Stack:
    doc = minimal(
        model_deployer={
            "name": "local-server",
            "flavor": "local",
            "configuration": {"host": "127.0.0.1", "port": free_port, "ready_timeout_s": 30},
        }
    )
    return load_stack(str(write_stack(doc, "mini.yaml")))


@pytest.fixture
def deployer(local_stack: Stack, fake_app: str) -> Iterator[LocalDeployer]:
    d = LocalDeployer(local_stack, app=fake_app, stop_timeout_s=5)
    yield d
    for info in d.statuses()[0]:  # never leave a process behind, whatever the test did
        d.stop(info.model_name)


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_command_and_environment(local_stack: Stack, home: Path) -> None:
    d = LocalDeployer(local_stack)
    port = str(local_stack.model_deployer.configuration.port)  # type: ignore[union-attr]
    assert d.command() == [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--workers",
        "1",
        "--no-access-log",
        "--http",
        "serving.server_protocol:ServerProtocol",
        "--timeout-keep-alive",
        "5",
        "--timeout-graceful-shutdown",
        "10",
        "--limit-concurrency",
        "1000",
        "--backlog",
        "2048",
    ]
    assert d.stop_timeout_s == 30  # the graceful shutdown timeout, then the app's own shutdown
    env = d.environment("flight-delay")
    assert env["FLYWHEEL_STACK"] == str(Path(local_stack.source).resolve())  # a file, not a shipped name
    assert env["FLYWHEEL_HOME"] == str(home)
    assert env["FLYWHEEL_MODEL"] == "flight-delay"
    assert env["OMP_NUM_THREADS"] == "1"
    assert d.log_path("flight-delay") == home / "services" / "mini" / "flight-delay.log"
    assert d.url() == f"http://127.0.0.1:{port}"
    assert d.command(9999)[d.command(9999).index("--port") + 1] == "9999"


def test_the_shipped_local_stack_is_passed_by_name() -> None:
    assert LocalDeployer(load_stack("local")).environment("m")["FLYWHEEL_STACK"] == "local"


def test_several_workers_without_httptools_warn(local_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from stacks.components.deployers import local

    d = LocalDeployer(local_stack)
    assert d.warnings() == []
    monkeypatch.setattr(d, "config", d.config.model_copy(update={"workers": 2}))
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    assert "TCP_NODELAY" in d.warnings()[0]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert d.warnings() == []


def test_deploy_status_hot_swap_and_stop(deployer: LocalDeployer, home: Path) -> None:
    info = deployer.deploy("flight-delay", "7")
    assert info.pid is not None and pid_alive(info.pid)
    assert info.handle == str(info.pid) and info.flavor == "local" and info.model_version == "7"
    assert _get(f"{info.url}/ready")[0] == 200
    recorded = read_state("mini", "flight-delay")
    assert recorded is not None and recorded.pid == info.pid and recorded.port == deployer.config.port
    assert recorded.log_path == str(home / "services" / "mini" / "flight-delay.log")
    assert "starting flight-delay:" in Path(recorded.log_path).read_text()
    assert "starting flight-delay:" in deployer.logs("flight-delay", 5)

    seen = deployer.status("flight-delay")
    assert seen is not None and seen.running and seen.healthy and seen.model_version == "7"
    # the service got the stack, the home and one OpenMP thread
    body = _get(f"{info.url}/model")[1]
    assert '"omp": "1"' in body and str(home) in body and "mini.yaml" in body

    again = deployer.deploy("flight-delay", "8")  # a new champion: the running service hot-swaps
    assert again.pid == info.pid
    assert "hot-swaps to v8" in again.detail

    assert deployer.stop("flight-delay") is True
    assert not pid_alive(info.pid)
    assert not state_path("mini", "flight-delay").exists()
    assert deployer.status("flight-delay") is None
    assert deployer.stop("flight-delay") is False


def test_restart_replaces_the_process(deployer: LocalDeployer) -> None:
    first = deployer.deploy("flight-delay", "7")
    second = deployer.deploy("flight-delay", "7", restart=True)
    assert first.pid is not None and second.pid is not None
    assert second.pid != first.pid and not pid_alive(first.pid) and pid_alive(second.pid)


def test_a_crashing_service_is_reported_with_its_log(
    deployer: LocalDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")
    with pytest.raises(DeploymentError, match=r"exited with code \d+ before it was ready") as caught:
        deployer.deploy("flight-delay", "7")
    assert "fake service cannot load its model" in str(caught.value)  # the log's tail
    assert read_state("mini", "flight-delay") is None


def test_a_service_that_never_gets_ready_times_out_and_is_stopped(
    deployer: LocalDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "never-ready")
    deployer.ready_timeout_s = 5
    with pytest.raises(
        DeploymentError,
        match=r"did not answer 200 on .*/ready within 5 s \(last answer: 503\); it was stopped",
    ):
        deployer.deploy("flight-delay", "7")
    assert read_state("mini", "flight-delay") is None
    assert not _port_open(deployer)  # the process was stopped


def _port_open(deployer: LocalDeployer) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", deployer.config.port)) == 0


def test_status_and_stop_of_a_dead_pid(deployer: LocalDeployer) -> None:
    pid = _dead_pid()
    write_state(
        ServiceInfo(
            flavor="local",
            stack="mini",
            url=deployer.url(),
            model_name="flight-delay",
            model_version="3",
            started_at="2026-11-22T08:00:00+00:00",
            handle=str(pid),
            pid=pid,
            extra={"app": FAKE},
        )
    )
    seen = deployer.status("flight-delay")
    assert seen is not None and not seen.running and not seen.healthy
    assert f"process {pid} is not running" in seen.detail and "stale" in seen.detail
    assert deployer.stop("flight-delay") is False
    assert not state_path("mini", "flight-delay").exists()


def test_a_recycled_pid_is_never_signalled(deployer: LocalDeployer) -> None:
    """The state file names a live process that is not the service (pid reuse): leave it alone."""
    me = os.getpid()
    write_state(
        ServiceInfo(
            flavor="local",
            stack="mini",
            url=deployer.url(),
            model_name="flight-delay",
            model_version="3",
            started_at="2026-11-22T08:00:00+00:00",
            handle=str(me),
            pid=me,
            extra={"app": FAKE},
        )
    )
    seen = deployer.status("flight-delay")
    assert seen is not None and not seen.running
    assert deployer.stop("flight-delay") is False  # and this test process is still here to assert it


def test_a_taken_port_is_a_clear_error(deployer: LocalDeployer) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", deployer.config.port))
        other.listen()
        assert allocate_port("mini", "flight-delay", deployer.config.port, lambda p: False)  # given before
        with pytest.raises(
            DeploymentError, match=r"port \d+ on 127.0.0.1, the port of 'flight-delay'.*is in use.*ports.json"
        ):
            deployer.deploy("flight-delay", "7")


def test_missing_service_secrets_stop_before_starting(
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
    free_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = minimal(
        model_deployer={
            "name": "local-server",
            "flavor": "local",
            "configuration": {"port": free_port, "auth_token": "{{serving.auth_token}}"},
        }
    )
    d = LocalDeployer(load_stack(str(write_stack(doc))))
    with pytest.raises(
        DeploymentError,
        match=r"needs secrets that are not set: \{\{serving.auth_token\}\} \(set SERVING_AUTH_TOKEN\)",
    ):
        d.deploy("flight-delay", "1")
    assert read_state("mini", "flight-delay") is None


def test_two_models_run_side_by_side_on_their_own_ports(deployer: LocalDeployer, home: Path) -> None:
    """Deploying, restarting and stopping one model never touches the other's process."""
    a = deployer.deploy("flight-delay", "7")
    b = deployer.deploy("diamond-price", "3")
    base = deployer.config.port
    assert (a.port, a.url) == (base, f"http://127.0.0.1:{base}")
    assert b.port is not None and b.port != base and b.url == f"http://127.0.0.1:{b.port}"
    assert a.pid != b.pid and pid_alive(a.pid or 0) and pid_alive(b.pid or 0)
    assert '"name": "flight-delay"' in _get(f"{a.url}/model")[1]
    assert '"name": "diamond-price"' in _get(f"{b.url}/model")[1]
    assert b.log_path == str(home / "services" / "mini" / "diamond-price.log")

    restarted = deployer.deploy("diamond-price", "3", restart=True)
    assert restarted.pid != b.pid and restarted.port == b.port  # same port after a restart
    seen = deployer.status("flight-delay")
    assert seen is not None and seen.healthy and seen.pid == a.pid  # untouched

    statuses, problems = deployer.statuses()
    assert [(i.model_name, i.healthy) for i in statuses] == [("diamond-price", True), ("flight-delay", True)]
    assert problems == []

    assert deployer.stop("flight-delay") is True
    assert not pid_alive(a.pid or 0) and pid_alive(restarted.pid or 0)
    assert _get(f"{restarted.url}/health")[0] == 200
    again = deployer.deploy("flight-delay", "8")  # back on its own port
    assert again.port == base
    assert read_ports("mini") == {"flight-delay": base, "diamond-price": b.port}
    for model in ("flight-delay", "diamond-price"):
        assert deployer.stop(model) is True
    assert deployer.statuses() == ([], [])


def test_a_port_held_by_something_else_is_skipped_for_a_new_model(deployer: LocalDeployer) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", deployer.config.port))
        other.listen()
        info = deployer.deploy("diamond-price", "3")
    assert info.port is not None and info.port > deployer.config.port
    assert _get(f"{info.url}/ready")[0] == 200
