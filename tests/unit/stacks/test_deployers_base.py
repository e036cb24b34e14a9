"""The deployer interface: choosing a deployer by flavor, ServiceInfo, state files, names, secret names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stacks.components.deployers import DeploymentError, ServiceInfo, deployer_for
from stacks.components.deployers.base import (
    base_url,
    dns_name,
    service_secret_refs,
    stack_reference,
)
from stacks.components.deployers.docker import DockerDeployer
from stacks.components.deployers.kubernetes import KubernetesDeployer
from stacks.components.deployers.local import LocalDeployer
from stacks.config import parse_stack
from stacks.loader import load_stack


def _info(**changes: Any) -> ServiceInfo:
    base = ServiceInfo(
        flavor="local",
        stack="mini",
        url="http://127.0.0.1:8080",
        model_name="flight-delay",
        model_version="3",
        started_at="2026-11-22T08:00:00+00:00",
        handle="4242",
        pid=4242,
        log_path="/tmp/mini.log",
    )
    return base.with_(**changes)


def test_deployer_for_picks_the_flavor(minimal: Callable[..., dict[str, Any]]) -> None:
    assert isinstance(deployer_for(load_stack("local")), LocalDeployer)
    assert isinstance(deployer_for(load_stack("production")), KubernetesDeployer)
    docker = parse_stack(minimal(model_deployer={"name": "d", "flavor": "docker", "configuration": {}}), "x")
    assert isinstance(deployer_for(docker), DockerDeployer)


def test_a_stack_without_deployer_is_a_clear_error(minimal: Callable[..., dict[str, Any]]) -> None:
    stack = parse_stack(minimal(), "mini.yaml")
    with pytest.raises(DeploymentError, match=r"mini.yaml: stack 'mini' has no model_deployer component"):
        deployer_for(stack)


def test_a_deployer_refuses_another_flavor() -> None:
    with pytest.raises(DeploymentError, match="serves flavor 'local', but stack 'production' has flavor"):
        LocalDeployer(load_stack("production"))


def test_service_info_round_trips_and_ignores_unknown_keys() -> None:
    info = _info(extra={"command": ["python", "-m", "uvicorn"]})
    data = json.loads(json.dumps(info.to_dict()))
    assert ServiceInfo.from_dict({**data, "from_a_newer_version": 1}) == info


def test_service_info_tags_lines_and_markdown() -> None:
    info = _info()
    tags = info.tags()
    assert tags["flywheel.service.url"] == "http://127.0.0.1:8080"
    assert tags["flywheel.service.pid"] == "4242"
    assert tags["flywheel.service.stack"] == "mini"
    assert tags["flywheel.service.deployed_at"].endswith("+00:00")
    text = "\n".join(info.lines())
    assert "pid        4242" in text and "healthy" in text and "flight-delay v3" in text
    assert "not running" in "\n".join(info.with_(running=False, healthy=False).lines())
    assert "| url | http://127.0.0.1:8080 |" in info.to_markdown()


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("flywheel", "flight-delay"), "flywheel-flight-delay"),
        (("Flywheel", "My_Model.v2"), "flywheel-my-model-v2"),
        (("flywheel", "--x--"), "flywheel-x"),
        (("a" * 80,), "a" * 63),
    ],
)
def test_dns_names(parts: tuple[str, ...], expected: str) -> None:
    assert dns_name(*parts) == expected


def test_base_url_reaches_wildcard_binds_through_loopback() -> None:
    assert base_url("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert base_url("::", 80) == "http://[::1]:80"
    assert base_url("10.0.0.5", 8080) == "http://10.0.0.5:8080"


def test_service_secrets_are_those_the_service_uses() -> None:
    refs = dict(service_secret_refs(load_stack("production")))
    assert refs["SERVING_AUTH_TOKEN"] == "{{serving.auth_token}}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_USERNAME", "MLFLOW_PASSWORD"} <= set(refs)
    assert "FLYWHEEL_OPTUNA_DB_URL" not in refs  # the tuner's database is training's business
    assert service_secret_refs(load_stack("local")) == []


def test_stack_reference_is_a_name_a_path_or_a_copy(
    home: Path, minimal: Callable[..., dict[str, Any]], write_stack: Callable[..., Path]
) -> None:
    assert stack_reference(load_stack("local")) == "local"
    path = write_stack(minimal(), "mine.yaml")
    assert stack_reference(load_stack(str(path))) == str(path.resolve())
    in_memory = parse_stack(minimal(), "<memory>")
    copy = Path(stack_reference(in_memory))
    assert copy == home / "services" / "mini.stack.yaml"
    assert load_stack(str(copy)).to_dict() == in_memory.to_dict()
