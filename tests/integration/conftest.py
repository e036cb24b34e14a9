"""Integration tests run flows for real against a Prefect test server (one per session: it costs ~16 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    results = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One Flywheel home shared by a module's tests (a trained champion is expensive)."""
    target = tmp_path_factory.mktemp("flywheel-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(target))
        mp.delenv("FLYWHEEL_STACK", raising=False)
        yield target
    if (target / "services").exists():  # a service was deployed: whatever a test did, none outlives it
        from tests.e2e.support import stop_everything_under

        killed = stop_everything_under(target)  # recorded services are stopped by their deployer
        assert not killed, f"processes of {target} that no deployer had recorded were left running: {killed}"
