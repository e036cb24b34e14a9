"""`flywheel service status|stop`: what they print and their exit codes, from a deploy's state file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.service_cli import service_app
from stacks.components.deployers import ServiceInfo
from stacks.components.deployers.base import state_path, write_state

runner = CliRunner()


@pytest.fixture
def stack_path(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path], free_port: int
) -> str:
    doc = minimal(model_deployer={"name": "l", "flavor": "local", "configuration": {"port": free_port}})
    return str(write_stack(doc, "mini.yaml"))


def _record_dead_service() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_state(
        ServiceInfo(
            flavor="local",
            stack="mini",
            url="http://127.0.0.1:1",
            model_name="flight-delay",
            model_version="2",
            started_at="2026-11-22T08:00:00+00:00",
            handle=str(proc.pid),
            pid=proc.pid,
            extra={"app": "serving.app:create_app"},
        )
    )
    return proc.pid


def test_status_without_a_service_exits_1(stack_path: str) -> None:
    result = runner.invoke(service_app, ["status", "--stack", stack_path])
    assert result.exit_code == 1
    assert "no service recorded for stack 'mini'" in result.output


def test_status_of_a_dead_service_exits_1(stack_path: str) -> None:
    pid = _record_dead_service()
    result = runner.invoke(service_app, ["status", "--stack", stack_path])
    assert result.exit_code == 1
    assert f"pid        {pid}" in result.output and "not running" in result.output
    assert "flight-delay v2" in result.output
    as_json = runner.invoke(service_app, ["status", "--stack", stack_path, "--json"])
    assert as_json.exit_code == 1 and '"running": false' in as_json.output


def test_stop_removes_a_stale_record(stack_path: str) -> None:
    _record_dead_service()
    result = runner.invoke(service_app, ["stop", "--stack", stack_path])
    assert result.exit_code == 0, result.output
    assert "was not running; its record is removed" in result.output
    assert not state_path("mini").exists()
    again = runner.invoke(service_app, ["stop", "--stack", stack_path])
    assert again.exit_code == 0 and "nothing to stop" in again.output


def test_a_stack_without_deployer_is_an_error(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    result = runner.invoke(service_app, ["status", "--stack", str(write_stack(minimal(), "bare.yaml"))])
    assert result.exit_code == 1
    assert "has no model_deployer component" in result.output


def test_an_unknown_stack_is_an_error() -> None:
    result = runner.invoke(service_app, ["stop", "--stack", "no-such-stack"])
    assert result.exit_code == 1 and "unknown stack 'no-such-stack'" in result.output
