"""The deployment flow on a copy of the local stack: train a small champion, serve it, check it, stop it.

The service is the real one (``serving.app:create_app`` under uvicorn, a detached process) on a free port,
so this also proves that the service loads the champion a training run registered.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from mlflow import MlflowClient

from flows.deployment import deployment
from flows.training import training
from stacks.components.deployers import deployer_for
from stacks.components.deployers.base import state_path
from stacks.components.deployers.local import pid_alive
from stacks.components.deployers.registry import NoChampionError
from stacks.loader import STACKS_DIR, load_stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STACK = "local-deploy-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def stack_file(module_home: Path) -> Path:
    """stacks/local.yaml under another name, serving on a free port."""
    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text())
    doc["stack_name"] = STACK
    doc["components"]["model_deployer"]["configuration"]["port"] = _free_port()
    path = module_home / f"{STACK}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def champion(module_home: Path) -> dict[str, Any]:
    result = training(problem="flights", n_trials=1, sample_rows=6000)
    assert result["champion_version"] is not None
    return result


@pytest.fixture(scope="module")
def deployed(champion: dict[str, Any], stack_file: Path) -> Iterator[dict[str, Any]]:
    try:  # the flow may fail after the service started (tagging the version, the artifact): stop it too
        yield deployment(stack=str(stack_file), model_name="flight-delay", ready_timeout_s=180)
    finally:
        deployer_for(load_stack(str(stack_file))).stop()


def test_no_champion_stops_the_flow_before_anything_starts(stack_file: Path) -> None:
    with pytest.raises(NoChampionError, match="model 'no-such-model' has no 'champion' version"):
        deployment(stack=str(stack_file), model_name="no-such-model")
    assert not state_path(STACK).exists()


def test_the_service_serves_the_champion(deployed: dict[str, Any], champion: dict[str, Any]) -> None:
    version = champion["champion_version"]
    assert deployed["flavor"] == "local" and deployed["stack"] == STACK
    assert deployed["model_version"] == deployed["champion_version"] == version
    assert pid_alive(deployed["pid"])
    assert requests.get(f"{deployed['url']}/health", timeout=10).status_code == 200
    assert requests.get(f"{deployed['url']}/ready", timeout=10).status_code == 200
    model = requests.get(f"{deployed['url']}/model", timeout=10).json()
    assert model["name"] == "flight-delay"
    assert str(model["version"]) == version


def test_the_service_is_recorded_on_the_model_version(deployed: dict[str, Any]) -> None:
    tags = MlflowClient().get_model_version("flight-delay", deployed["model_version"]).tags
    assert tags["flywheel.service.url"] == deployed["url"]
    assert tags["flywheel.service.pid"] == str(deployed["pid"])
    assert tags["flywheel.service.stack"] == STACK
    assert tags["flywheel.service.deployed_at"]


def test_the_service_is_a_prefect_artifact(deployed: dict[str, Any]) -> None:
    from prefect.artifacts import Artifact

    artifact = Artifact.get(key="flight-delay-service")
    assert artifact is not None and deployed["url"] in str(artifact.data)


def test_redeploying_leaves_the_running_service_to_hot_swap(
    deployed: dict[str, Any], stack_file: Path
) -> None:
    again = deployment(stack=str(stack_file), model_name="flight-delay")
    assert again["pid"] == deployed["pid"]
    status = deployer_for(load_stack(str(stack_file))).status()
    assert status is not None and status.running and status.healthy


def test_stop_ends_the_process(deployed: dict[str, Any], stack_file: Path) -> None:
    deployer = deployer_for(load_stack(str(stack_file)))
    assert deployer.stop() is True
    assert not pid_alive(deployed["pid"])
    assert not state_path(STACK).exists()
    assert deployer.status() is None


def test_concurrent_deploys_start_one_service(champion: dict[str, Any], stack_file: Path) -> None:
    """A promotion-triggered deploy and a manual one at the same moment: one process, and it is recorded."""
    from concurrent.futures import ThreadPoolExecutor

    stack = load_stack(str(stack_file))
    version = champion["champion_version"]
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(deployer_for(stack, ready_timeout_s=180).deploy, "flight-delay", version)
            for _ in range(2)
        ]
        infos = [f.result() for f in futures]
    try:
        assert infos[0].pid == infos[1].pid, [i.pid for i in infos]
        assert any("already serving" in i.detail for i in infos), [i.detail for i in infos]
        status = deployer_for(stack).status()
        assert status is not None and status.running and status.healthy and status.pid == infos[0].pid
    finally:
        deployer_for(stack).stop()
    assert infos[0].pid is not None and not pid_alive(infos[0].pid)
