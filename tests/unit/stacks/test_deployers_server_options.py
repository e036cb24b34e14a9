"""The stack's server limits: validated where they are written, turned into uvicorn's options in one place,
and rendered by every path that starts the service (local process, container, pod) and read by the service.

The options are checked against uvicorn itself: its command line parses the flags back to the same values,
and ``uvicorn.Config`` takes the keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.importer import import_from_string
from uvicorn.main import main as uvicorn_cli

from serving.settings import ServiceSettings, service_limits
from stacks.components.deployers.docker import DockerDeployer
from stacks.components.deployers.kubernetes import KubernetesDeployer
from stacks.components.deployers.local import LocalDeployer
from stacks.components.deployers.server_options import (
    SERVER_PROTOCOL,
    server_limits,
    shutdown_wait_s,
    uvicorn_flags,
    uvicorn_options,
)
from stacks.config import DEFAULT_SERVER_LIMITS, ServerLimits, StackError, parse_stack
from stacks.loader import load_stack

CUSTOM = {
    "header_timeout_s": 3.5,
    "body_timeout_s": 12.0,
    "keep_alive_timeout_s": 61,
    "graceful_shutdown_timeout_s": 7,
    "limit_concurrency": 321,
    "max_connections": 654,
    "backlog": 99,
    "max_body_bytes": 12345,
}
"""Every key, none at its default: a value that does not arrive somewhere shows as the default."""

UVICORN_KEYS = {"keep_alive_timeout_s", "graceful_shutdown_timeout_s", "limit_concurrency", "backlog"}
SERVICE_KEYS = {"header_timeout_s", "max_connections", "body_timeout_s", "max_body_bytes"}
"""What uvicorn is told on its command line, and what the service reads from the stack itself."""


def test_custom_differs_from_every_default() -> None:
    defaults = DEFAULT_SERVER_LIMITS.model_dump()
    assert set(CUSTOM) == set(ServerLimits.model_fields) == UVICORN_KEYS | SERVICE_KEYS
    assert all(CUSTOM[key] != defaults[key] for key in CUSTOM)


def test_uvicorn_options_map_the_limits() -> None:
    limits = ServerLimits.model_validate(CUSTOM)
    assert uvicorn_options(limits) == {
        "http": "serving.server_protocol:ServerProtocol",
        "timeout_keep_alive": 61,
        "timeout_graceful_shutdown": 7,
        "limit_concurrency": 321,
        "backlog": 99,
    }
    assert shutdown_wait_s(limits) == 7 + 20


def test_uvicorns_command_line_parses_the_flags_to_the_same_values() -> None:
    limits = ServerLimits.model_validate(CUSTOM)
    ctx = uvicorn_cli.make_context("uvicorn", ["serving.app:create_app", *uvicorn_flags(limits)])
    assert {key: ctx.params[key] for key in uvicorn_options(limits)} == uvicorn_options(limits)


def test_uvicorn_run_takes_the_options_and_the_protocol_imports() -> None:
    limits = ServerLimits.model_validate(CUSTOM)
    config = uvicorn.Config("serving.app:create_app", factory=True, **uvicorn_options(limits))
    assert (config.timeout_keep_alive, config.timeout_graceful_shutdown) == (61, 7)
    assert (config.limit_concurrency, config.backlog) == (321, 99)
    from serving.server_protocol import ServerProtocol

    assert import_from_string(SERVER_PROTOCOL) is ServerProtocol


@pytest.fixture
def custom_stack(minimal: Callable[..., dict[str, Any]]) -> Callable[[str], Any]:
    configs: dict[str, dict[str, Any]] = {
        "local": {"port": 8123},
        "docker": {"image": "flywheel:test"},
        "kubernetes": {"image": "registry.example/flywheel:1"},
    }

    def make(flavor: str) -> Any:
        deployer = {"name": "d", "flavor": flavor, "configuration": {**configs[flavor], "server": CUSTOM}}
        return parse_stack(minimal(model_deployer=deployer), f"{flavor}.yaml")

    return make


def _has_flags(argv: list[str]) -> bool:
    flags = uvicorn_flags(ServerLimits.model_validate(CUSTOM))
    return any(argv[i : i + len(flags)] == flags for i in range(len(argv)))


def test_the_local_process_gets_the_stacks_limits(custom_stack: Callable[[str], Any]) -> None:
    deployer = LocalDeployer(custom_stack("local"))
    assert _has_flags(deployer.command())
    assert deployer.stop_timeout_s == 27


def test_the_container_gets_the_stacks_limits(custom_stack: Callable[[str], Any]) -> None:
    deployer = DockerDeployer(custom_stack("docker"))
    run = deployer.run_command("flight-delay", "1")
    assert _has_flags(run[run.index("flywheel:test") :])  # in the command after the image
    assert run[run.index("--stop-timeout") + 1] == "27"


def test_the_pod_gets_the_stacks_limits(custom_stack: Callable[[str], Any]) -> None:
    manifests = KubernetesDeployer(custom_stack("kubernetes")).manifests("flight-delay", "1")
    pod = manifests[1]["spec"]["template"]["spec"]
    assert _has_flags(pod["containers"][0]["args"])
    assert pod["terminationGracePeriodSeconds"] == 27


def test_the_service_reads_the_rest_from_the_stack(
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployer = {"name": "d", "flavor": "local", "configuration": {"server": CUSTOM}}
    path = write_stack(minimal(model_deployer=deployer))
    assert service_limits(str(path)) == ServerLimits.model_validate(CUSTOM)
    monkeypatch.setenv("FLYWHEEL_STACK", str(path))
    monkeypatch.setenv("FLYWHEEL_MODEL", "diamond-price")
    settings = ServiceSettings.from_env()
    assert settings.max_body_bytes == 12345 and settings.model_name == "diamond-price"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_the_service_needs_its_model_named(
    value: str | None,
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_STACK", str(write_stack(minimal())))
    if value is None:
        monkeypatch.delenv("FLYWHEEL_MODEL", raising=False)
    else:
        monkeypatch.setenv("FLYWHEEL_MODEL", value)
    with pytest.raises(ValueError, match=r"FLYWHEEL_MODEL is not set: a service serves one registered model"):
        ServiceSettings.from_env()


def test_environment_overrides_one_process(
    minimal: Callable[..., dict[str, Any]],
    write_stack: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_stack(minimal())  # no deployer: the defaults
    monkeypatch.setenv("FLYWHEEL_STACK", str(path))
    monkeypatch.setenv("FLYWHEEL_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("FLYWHEEL_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("FLYWHEEL_MAX_CONNECTIONS", "1500")
    monkeypatch.setenv("FLYWHEEL_MODEL", "flight-delay")
    assert ServiceSettings.from_env().max_body_bytes == 1000
    limits = service_limits()
    assert (limits.header_timeout_s, limits.max_connections, limits.max_body_bytes) == (2.5, 1500, 1000)
    monkeypatch.setenv("FLYWHEEL_MAX_CONNECTIONS", "10")  # below limit_concurrency: refused like in a file
    with pytest.raises(ValueError, match=r"FLYWHEEL_MAX_CONNECTIONS='10'.*limit_concurrency"):
        service_limits()
    monkeypatch.setenv("FLYWHEEL_MAX_CONNECTIONS", "many")
    with pytest.raises(ValueError, match=r"FLYWHEEL_MAX_CONNECTIONS='many'"):
        service_limits()


def test_defaults_without_a_server_block_or_a_deployer(minimal: Callable[..., dict[str, Any]]) -> None:
    assert server_limits(None) is DEFAULT_SERVER_LIMITS
    assert server_limits(parse_stack(minimal(), "none.yaml")) is DEFAULT_SERVER_LIMITS
    for name in ("local", "staging"):
        assert server_limits(load_stack(name)) == DEFAULT_SERVER_LIMITS
    production = server_limits(load_stack("production"))
    assert production.keep_alive_timeout_s == 75 and production.limit_concurrency == 500
    assert production.header_timeout_s == DEFAULT_SERVER_LIMITS.header_timeout_s


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"header_timeout_s": 0}, r"server.header_timeout_s': Input should be greater than 0"),
        ({"body_timeout_s": -1}, r"server.body_timeout_s': Input should be greater than 0"),
        ({"keep_alive_timeout_s": 1.5}, r"server.keep_alive_timeout_s': Input should be a valid integer"),
        ({"graceful_shutdown_timeout_s": 7200}, r"server.graceful_shutdown_timeout_s': Input should be less"),
        ({"backlog": 100_000}, r"server.backlog': Input should be less than or equal to 65535"),
        ({"max_body_bytes": "2MB"}, r"server.max_body_bytes': Input should be a valid integer"),
        ({"limit_concurrency": 500, "max_connections": 100}, r"max_connections \(100\) is below"),
        ({"header_timeout": 5}, r"unknown key 'server.header_timeout'"),
    ],
)
def test_bad_limits_are_named_at_load_time(
    minimal: Callable[..., dict[str, Any]], server: dict[str, Any], message: str
) -> None:
    deployer = {"name": "d", "flavor": "local", "configuration": {"server": server}}
    with pytest.raises(StackError, match=message):
        parse_stack(minimal(model_deployer=deployer), "bad.yaml")
