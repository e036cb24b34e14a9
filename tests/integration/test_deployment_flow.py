"""The deployment flow on a copy of the local stack: train small champions, serve them, check them, stop them.

The services are the real one (``serving.app:create_app`` under uvicorn, detached processes) from a free
port on, so this also proves that a service loads the champion a training run registered. Two problems'
models (flights and diamonds) are served side by side, one process and one port each: promoting or
redeploying one swaps only that one.
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
from stacks.components.deployers.local import pid_alive
from stacks.components.deployers.registry import NoChampionError
from stacks.components.deployers.state import state_path
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
        deployer_for(load_stack(str(stack_file))).stop("flight-delay")


def test_no_champion_stops_the_flow_before_anything_starts(stack_file: Path) -> None:
    with pytest.raises(NoChampionError, match="model 'no-such-model' has no 'champion' version"):
        deployment(stack=str(stack_file), model_name="no-such-model")
    assert not state_path(STACK, "no-such-model").exists()


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
    assert artifact is not None and deployed["url"] in str(getattr(artifact, "data", None))


def test_redeploying_leaves_the_running_service_to_hot_swap(
    deployed: dict[str, Any], stack_file: Path
) -> None:
    again = deployment(stack=str(stack_file), model_name="flight-delay")
    assert again["pid"] == deployed["pid"]
    status = deployer_for(load_stack(str(stack_file))).status("flight-delay")
    assert status is not None and status.running and status.healthy


def test_stop_ends_the_process(deployed: dict[str, Any], stack_file: Path) -> None:
    deployer = deployer_for(load_stack(str(stack_file)))
    assert deployer.stop("flight-delay") is True
    assert not pid_alive(deployed["pid"])
    assert not state_path(STACK, "flight-delay").exists()
    assert deployer.status("flight-delay") is None


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
        status = deployer_for(stack).status("flight-delay")
        assert status is not None and status.running and status.healthy and status.pid == infos[0].pid
    finally:
        deployer_for(stack).stop("flight-delay")
    assert infos[0].pid is not None and not pid_alive(infos[0].pid)


# ------------------------------------------------------------------------ two models side by side


@pytest.fixture(scope="module")
def diamonds_champion(module_home: Path) -> dict[str, Any]:
    result = training(problem="diamonds", n_trials=1, sample_rows=3000)
    assert result["champion_version"] is not None and result["model_name"] == "diamond-price"
    return result


def _record(url: str) -> dict[str, Any]:
    """A record the model accepts, from its own /model contract: each category known, numbers in range."""
    features = requests.get(f"{url}/model", timeout=10).json()["features"]
    return {
        f["name"]: f["categories"][0] if f["kind"] == "categorical" else (f["minimum"] or 0.0)
        for f in features
    }


def _ready(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{url}/ready", timeout=5).json()
    return answer


def test_two_models_side_by_side(
    champion: dict[str, Any],
    diamonds_champion: dict[str, Any],
    stack_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each model its own process and port; `service status` lists both; promoting or redeploying one
    leaves the other's process, version and answers alone; every process is stopped at the end."""
    from typer.testing import CliRunner

    from flywheel.service_cli import service_app
    from tests.e2e.support import wait_for

    monkeypatch.setenv("FLYWHEEL_WATCH_INTERVAL_S", "1")  # the services inherit it: a quick hot swap
    stack = load_stack(str(stack_file))
    base = stack.model_deployer.configuration.port  # type: ignore[union-attr]
    pids: list[int] = []
    try:
        flights = deployment(model_name="flight-delay", stack=str(stack_file), ready_timeout_s=180)
        pids.append(flights["pid"])
        diamonds = deployment(model_name="diamond-price", stack=str(stack_file), ready_timeout_s=180)
        pids.append(diamonds["pid"])
        assert flights["url"] != diamonds["url"] and flights["pid"] != diamonds["pid"]
        assert flights["port"] == base and diamonds["port"] > base  # the stack's port, then the next free
        assert pid_alive(flights["pid"]), "deploying the second model stopped the first"
        for deployed_, name in ((flights, "flight-delay"), (diamonds, "diamond-price")):
            ready = _ready(deployed_["url"])
            assert ready["model_name"] == name and ready["model_version"] == deployed_["champion_version"]
            answer = requests.post(f"{deployed_['url']}/predict", json=_record(deployed_["url"]), timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_name"] == name

        listed = CliRunner().invoke(service_app, ["status", "--stack", str(stack_file)])
        print(listed.output)
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[0] == f"stack '{STACK}' (local): 2 services, 2 healthy"
        rows = {line.split()[0]: line.split() for line in listed.output.splitlines()[2:]}
        assert rows["flight-delay"][1:4] == [
            f"v{flights['champion_version']}",
            flights["url"],
            str(flights["pid"]),
        ]
        assert rows["diamond-price"][1:4] == [
            f"v{diamonds['champion_version']}",
            diamonds["url"],
            str(diamonds["pid"]),
        ]

        # promote a new diamond-price version: only that service swaps, in place
        client = MlflowClient()
        served = client.get_model_version("diamond-price", diamonds["champion_version"])
        assert served.source is not None
        new = client.create_model_version("diamond-price", source=served.source, run_id=served.run_id)
        client.set_registered_model_alias("diamond-price", "champion", new.version)
        wait_for(lambda: _ready(diamonds["url"])["model_version"] == str(new.version), 60, "the hot swap")
        assert _ready(flights["url"])["model_version"] == flights["champion_version"]
        again = deployment(model_name="diamond-price", stack=str(stack_file))  # left to run, already swapped
        assert again["pid"] == diamonds["pid"] and "already serving" in again["detail"]

        # redeploy flight-delay with a restart: a new process on the same port, diamonds untouched
        restarted = deployment(
            model_name="flight-delay", stack=str(stack_file), restart=True, ready_timeout_s=180
        )
        pids.append(restarted["pid"])
        assert restarted["pid"] != flights["pid"] and restarted["url"] == flights["url"]
        assert not pid_alive(flights["pid"]) and pid_alive(diamonds["pid"])
        answer = requests.post(f"{diamonds['url']}/predict", json=_record(diamonds["url"]), timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == str(new.version)
    finally:
        stopped = CliRunner().invoke(service_app, ["stop", "--stack", str(stack_file), "--all"])
        print(stopped.output)
    assert stopped.exit_code == 0, stopped.output
    assert not [pid for pid in pids if pid_alive(pid)]
    assert deployer_for(stack).statuses() == ([], [])
