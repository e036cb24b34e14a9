"""`flywheel service status|stop|logs|deploy`: what they print and their exit codes, from the deployer's
state files; which model a command acts on (--model, --problem, the chosen problem, never a default)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.service_cli import service_app
from stacks.components.deployers import ServiceInfo
from stacks.components.deployers.state import state_path, write_state

runner = CliRunner()


@pytest.fixture
def stack_path(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path], free_port: int
) -> str:
    doc = minimal(model_deployer={"name": "l", "flavor": "local", "configuration": {"port": free_port}})
    return str(write_stack(doc, "mini.yaml"))


def _record_dead_service(model: str = "flight-delay") -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_state(
        ServiceInfo(
            flavor="local",
            stack="mini",
            url="http://127.0.0.1:1",
            model_name=model,
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
    assert "no service recorded on stack 'mini'" in result.output
    one = runner.invoke(service_app, ["status", "--stack", stack_path, "--model", "flight-delay"])
    assert one.exit_code == 1 and "no service of 'flight-delay' recorded on stack 'mini'" in one.output


def test_status_of_a_dead_service_exits_1(stack_path: str) -> None:
    pid = _record_dead_service()
    result = runner.invoke(service_app, ["status", "--stack", stack_path, "--model", "flight-delay"])
    assert result.exit_code == 1
    assert f"pid        {pid}" in result.output and "not running" in result.output
    assert "flight-delay v2" in result.output
    as_json = runner.invoke(service_app, ["status", "--stack", stack_path, "--json"])
    assert as_json.exit_code == 1 and '"running": false' in as_json.output
    assert [s["model_name"] for s in json.loads(as_json.output)] == ["flight-delay"]


def test_stop_removes_a_stale_record(stack_path: str) -> None:
    _record_dead_service()
    result = runner.invoke(service_app, ["stop", "--stack", stack_path, "--model", "flight-delay"])
    assert result.exit_code == 0, result.output
    assert "the service of 'flight-delay' on stack 'mini'" in result.output
    assert "was not running; its record is removed" in result.output
    assert not state_path("mini", "flight-delay").exists()
    again = runner.invoke(service_app, ["stop", "--stack", stack_path, "--model", "flight-delay"])
    assert again.exit_code == 0 and "nothing to stop" in again.output


def test_a_stack_without_deployer_is_an_error(
    minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    result = runner.invoke(service_app, ["status", "--stack", str(write_stack(minimal(), "bare.yaml"))])
    assert result.exit_code == 1
    assert "has no model_deployer component" in result.output


def test_an_unknown_stack_is_an_error() -> None:
    result = runner.invoke(service_app, ["stop", "--stack", "no-such-stack", "--all"])
    assert result.exit_code == 1 and "unknown stack 'no-such-stack'" in result.output


def test_status_lists_every_models_service(stack_path: str) -> None:
    first, second = _record_dead_service("flight-delay"), _record_dead_service("diamond-price")
    result = runner.invoke(service_app, ["status", "--stack", stack_path])
    assert result.exit_code == 1  # neither is healthy
    lines = result.output.splitlines()
    assert lines[0] == "stack 'mini' (local): 2 services, 0 healthy"
    assert lines[1].split() == ["MODEL", "VERSION", "URL", "PID/HANDLE", "STATE"]
    assert lines[2].split()[:4] == ["diamond-price", "v2", "http://127.0.0.1:1", str(second)]
    assert lines[3].split()[:4] == ["flight-delay", "v2", "http://127.0.0.1:1", str(first)]
    assert "not running" in lines[3]


def test_stop_all_stops_every_model(stack_path: str) -> None:
    _record_dead_service("flight-delay")
    _record_dead_service("diamond-price")
    result = runner.invoke(service_app, ["stop", "--stack", stack_path, "--all"])
    assert result.exit_code == 0, result.output
    assert "'diamond-price'" in result.output and "'flight-delay'" in result.output
    assert (
        not state_path("mini", "flight-delay").exists() and not state_path("mini", "diamond-price").exists()
    )
    both = runner.invoke(service_app, ["stop", "--stack", stack_path, "--all", "--model", "x"])
    assert both.exit_code == 1 and "--all stops every model's service" in both.output


def test_without_a_model_or_problem_the_commands_say_how_to_name_one(
    stack_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLYWHEEL_PROBLEM", raising=False)
    for command in ("stop", "logs", "deploy"):
        result = runner.invoke(service_app, [command, "--stack", stack_path])
        assert result.exit_code == 1, (command, result.output)
        assert "which model? pass --model NAME" in result.output and "flywheel problem use" in result.output
        assert "flight-delay" not in result.output  # no default model
    empty = runner.invoke(service_app, ["logs", "--stack", stack_path, "--model", " "])
    assert empty.exit_code == 1 and "--model is empty" in empty.output


def test_the_problem_names_the_model(stack_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _record_dead_service("diamond-price")
    by_option = runner.invoke(service_app, ["status", "--stack", stack_path, "--problem", "diamonds"])
    assert "diamond-price v2" in by_option.output  # diamonds.yaml's model_name
    monkeypatch.setenv("FLYWHEEL_PROBLEM", "diamonds")
    result = runner.invoke(service_app, ["stop", "--stack", stack_path])
    assert result.exit_code == 0 and "the service of 'diamond-price'" in result.output
    unknown = runner.invoke(service_app, ["stop", "--stack", stack_path, "--problem", "no-such-problem"])
    assert unknown.exit_code == 1 and "no such problem spec" in unknown.output


def test_logs_print_the_models_log(stack_path: str, home: Path) -> None:
    log = home / "services" / "mini" / "diamond-price.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    result = runner.invoke(
        service_app, ["logs", "--stack", stack_path, "--model", "diamond-price", "-n", "3"]
    )
    assert result.exit_code == 0 and result.output.splitlines() == ["line 97", "line 98", "line 99"]
    bad = runner.invoke(service_app, ["logs", "--stack", stack_path, "--model", "m", "-n", "0"])
    assert bad.exit_code == 2  # refused by the option's bounds, not read whole
