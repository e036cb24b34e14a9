"""The registry side of a deployment: no champion is a clear error; the service is tagged on the version."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.components.deployers import ServiceInfo
from stacks.components.deployers.registry import NoChampionError, champion_version, record_service
from stacks.components.tracking import configure_mlflow
from stacks.loader import load_stack


@pytest.fixture
def registry(home: Path) -> None:
    """The local stack's MLflow (SQLite in the temporary home)."""
    configure_mlflow(load_stack("local"))


def test_no_registered_model_means_no_champion(registry: None) -> None:
    with pytest.raises(
        NoChampionError, match=r"model 'flight-delay' has no 'champion' version.*flywheel run"
    ):
        champion_version("flight-delay")


def test_a_model_without_the_alias_has_no_champion(registry: None, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.create_registered_model("flight-delay")
    client.create_model_version("flight-delay", source=str(tmp_path))
    with pytest.raises(NoChampionError, match="no 'champion' version"):
        champion_version("flight-delay")


def test_champion_is_found_and_the_service_tagged(registry: None, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.create_registered_model("flight-delay")
    for _ in range(2):
        client.create_model_version("flight-delay", source=str(tmp_path))
    client.set_registered_model_alias("flight-delay", "champion", "2")
    assert champion_version("flight-delay") == "2"
    info = ServiceInfo(
        flavor="local",
        stack="local",
        url="http://127.0.0.1:8080",
        model_name="flight-delay",
        model_version="2",
        started_at="2026-11-22T08:00:00+00:00",
        handle="123",
        pid=123,
    )
    tags = record_service(info)
    stored = client.get_model_version("flight-delay", "2").tags
    assert {k: stored[k] for k in tags} == tags
    assert stored["flywheel.service.pid"] == "123"
    assert stored["flywheel.service.url"] == "http://127.0.0.1:8080"
    assert "flywheel.service.url" not in client.get_model_version("flight-delay", "1").tags
