"""A registry the service cannot use is a state it reports, not a crash, and one it recovers from.

Each fault is real: a database of random bytes, a truncated or empty file, no file at all, a registry with
no such model or alias, a tracking server nobody listens on, an alias on a version whose files are gone.
The service starts anyway, ``/health`` answers, ``/ready`` says what is wrong in one sentence, and the
watcher picks the champion up once the registry is repaired, without a restart.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from serving.app import create_app
from serving.settings import ServiceSettings
from stacks.components.registry_health import describe_error
from tests.unit.serving.conftest import record_from, wait_for

MODEL = "flight-delay"


def settings(model_name: str = MODEL, stack: str | None = None) -> ServiceSettings:
    return ServiceSettings(stack=stack, model_name=model_name, profiling=False, watch_interval_s=0.2)


def gauge(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def restore(good: Path, target: Path) -> None:
    """As an operator restores a backup: copied beside it, then renamed over it in one step."""
    staged = target.with_name(target.name + ".restoring")
    shutil.copyfile(good, staged)
    os.replace(staged, target)


@pytest.fixture
def good_db(champion: dict[str, Any], serving_home: Path) -> Path:
    """The database with the champion in it (its artifacts stay under the module's home)."""
    return serving_home / "mlflow.db"


@pytest.fixture
def other_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A second Flywheel home, for a service whose registry is damaged while the good one is kept."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    return home


def error_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flywheel.serving" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("random", "cannot be read: file is not a database"),
        ("truncated", "cannot be read"),
        ("empty", "is empty"),
        ("missing", "does not exist"),
    ],
)
def test_a_broken_database_is_reported_and_its_repair_picked_up_without_restart(
    damage: str,
    says: str,
    good_db: Path,
    other_home: Path,
    champion: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = other_home / "mlflow.db"
    if damage == "random":
        db.write_bytes(random.Random(0).randbytes(64 * 1024))
    elif damage == "truncated":
        db.write_bytes(good_db.read_bytes()[: good_db.stat().st_size // 3])
    elif damage == "empty":
        db.write_bytes(b"")
    before = db.read_bytes() if db.exists() else None
    caplog.set_level(logging.INFO, logger="flywheel.serving")

    app = create_app(settings())  # raised on a corrupt database, made an empty one when it was missing
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["ready"] is False and body["served_version"] is None
        assert body["registry_error"].startswith(f"the MLflow database {db} "), body
        assert says in body["registry_error"]
        assert body["detail"] == f"no model served: {body['registry_error']}"
        assert body["load_error"] is None and body["checked_at"] is not None
        time.sleep(0.6)  # a few watcher checks
        assert (db.read_bytes() if db.exists() else None) == before  # the service wrote nothing
        [line] = error_lines(caplog)  # one line for the problem, not one per check, and no traceback
        assert str(db) in line.getMessage() and line.exc_info is None
        assert gauge(c, "flywheel_model_is_champion") == 0

        restore(good_db, db)
        assert wait_for(lambda: c.get("/ready").status_code == 200)
        body = c.get("/ready").json()
        assert body["served_version"] == body["champion_version"] == champion["version"]
        assert body["registry_error"] is None and body["load_error"] is None
        assert body["detail"] == f"serving v{champion['version']}, the version the champion alias names"
        assert c.get("/model").json()["last_error"] is None
        assert gauge(c, "flywheel_model_is_champion") == 1
        [swap] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hot swap of ")]
        assert swap.startswith(
            f"hot swap of {MODEL}: nothing -> v{champion['version']} (the registry check succeeded again "
            f"after: {line.getMessage().removeprefix(f'champion check of {MODEL} failed: ')}), loaded in "
        ), swap


def test_no_such_model_or_alias_names_which(good_db: Path) -> None:
    uri = f"sqlite:///{good_db}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("never-promoted")
    for name, says in [
        ("no-such-model", f"the MLflow database {good_db} has no registered model named 'no-such-model'"),
        (
            "never-promoted",
            f"model 'never-promoted' in the MLflow database {good_db} has no 'champion' alias",
        ),
    ]:
        with TestClient(create_app(settings(model_name=name))) as c:
            r = c.get("/ready")
            assert r.status_code == 503 and c.get("/health").status_code == 200
            assert r.json()["registry_error"] == says
            assert r.json()["detail"] == f"no model served: {says}"


def test_an_unreachable_tracking_server_is_named_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = (Path(__file__).parents[3] / "stacks" / "local.yaml").read_text()
    stack = tmp_path / "remote.yaml"  # the URL, password and all, is a secret: the stack names it only
    stack.write_text(
        local.replace("stack_name: local", "stack_name: remote").replace(
            "sqlite:///mlflow.db", '"${MLFLOW_TRACKING_URI}"'
        )
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://flywheel:hunter2@127.0.0.1:{port}")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))

    started = time.monotonic()
    with TestClient(create_app(settings(stack=str(stack)))) as c:
        assert time.monotonic() - started < 15  # not MLflow's minutes of retries
        r = c.get("/ready")
        assert r.status_code == 503
        error = r.json()["registry_error"]
        assert error.startswith(
            f"the MLflow registry at http://flywheel:***@127.0.0.1:{port} cannot be reached"
        )
        assert "hunter2" not in r.text and "hunter2" not in c.get("/model").text


def _version_without_files(client: MlflowClient, run_id: str) -> str:
    """A registered version whose model files do not exist: it cannot load."""
    return str(client.create_model_version(MODEL, source="file:///nonexistent/model", run_id=run_id).version)


def test_a_champion_that_fails_to_load_is_said_plainly_and_cleared_when_the_alias_returns(
    good_db: Path, champion: dict[str, Any]
) -> None:
    good = champion["version"]
    with TestClient(create_app(settings())) as c:
        client = MlflowClient()
        broken = _version_without_files(client, c.get("/model").json()["run_id"])
        client.set_registered_model_alias(MODEL, "champion", broken)
        try:
            assert wait_for(lambda: c.get("/ready").json()["load_error"] is not None)
            r = c.get("/ready")
            assert r.status_code == 200  # the old version keeps serving: a bad release is not an outage
            body = r.json()
            assert body["served_version"] == good and body["champion_version"] == broken
            assert body["load_error"].startswith(f"v{broken}: ") and body["registry_error"] is None
            why = body["load_error"].removeprefix(f"v{broken}: ")
            assert body["detail"] == (
                f"serving v{good}; the champion alias names v{broken}, which failed to load: {why}; "
                f"v{good} keeps serving"
            )
            assert c.get("/model").json()["last_error"] == body["load_error"]
            assert gauge(c, "flywheel_model_is_champion") == 0
        finally:
            client.set_registered_model_alias(MODEL, "champion", good)

        assert wait_for(lambda: c.get("/ready").json()["champion_version"] == good)
        body = c.get("/ready").json()
        assert body["load_error"] is None and body["registry_error"] is None
        assert body["detail"] == f"serving v{good}, the version the champion alias names"
        assert c.get("/model").json()["last_error"] is None
        assert gauge(c, "flywheel_model_is_champion") == 1


def test_a_database_damaged_while_serving_keeps_the_model_and_its_restoration_is_read(
    good_db: Path, other_home: Path, champion: dict[str, Any]
) -> None:
    db = other_home / "mlflow.db"
    restore(good_db, db)
    good = champion["version"]
    with TestClient(create_app(settings())) as c:
        assert c.get("/ready").json()["served_version"] == good
        time.sleep(0.5)  # the watcher has read the registry through MLflow's connections
        db.write_bytes(random.Random(1).randbytes(64 * 1024))  # damaged in place
        assert wait_for(lambda: c.get("/ready").json()["registry_error"] is not None)
        r = c.get("/ready")
        assert r.status_code == 200 and r.json()["served_version"] == good
        assert r.json()["detail"] == (f"serving v{good}; {r.json()['registry_error']}; v{good} keeps serving")
        assert gauge(c, "flywheel_model_is_champion") == 1  # a registry outage says nothing about the alias

        restore(good_db, db)  # a new file under the old name: connections to the damaged one must go
        assert wait_for(lambda: c.get("/ready").json()["registry_error"] is None, timeout=5)
        assert c.get("/ready").json()["detail"] == f"serving v{good}, the version the champion alias names"


def test_an_mlflow_error_is_described_in_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server can die between the service's probe and MLflow's request: MLflow's own message quotes
    the URL it called, credentials included, and that message must not reach /ready as it is."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://flywheel:hunter2@127.0.0.1:{port}"
    with pytest.raises(Exception) as raised:
        MlflowClient(tracking_uri=url, registry_uri=url).get_model_version_by_alias(MODEL, "champion")
    assert "hunter2" in str(raised.value)  # what MLflow says
    described = describe_error(raised.value)
    assert "hunter2" not in described and "\n" not in described
    assert described.startswith("MlflowException: ") and f"flywheel:***@127.0.0.1:{port}" in described


def test_a_rollout_candidate_that_fails_to_load_is_retried_with_back_off(
    good_db: Path, champion: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Every replica downloading a broken candidate at every watch tick (0.2 s here) would hammer the
    registry: it is tried once, then again after 5 s, and the champion answers throughout."""
    from flywheel.contracts.rollout import RolloutState
    from stacks.components import model_versions

    good = champion["version"]
    with TestClient(create_app(settings())) as c:
        client = MlflowClient()
        broken = _version_without_files(client, c.get("/model").json()["run_id"])
        caplog.set_level(logging.WARNING, logger="flywheel.serving")
        state = RolloutState(broken, good, "canary", 0.5, 1, 2, time.time())
        model_versions.set_rollout(MODEL, state)
        try:
            assert wait_for(lambda: any("failed to load" in r.getMessage() for r in caplog.records))
            time.sleep(2.0)  # ten watch ticks
            tries = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
            assert len(tries) == 1 and f"v{broken} failed to load (tried again in 5 s)" in tries[0], tries
            answered = c.post("/predict", json=record_from(champion["test"]))
            assert answered.status_code == 200 and answered.json()["model_version"] == good
            assert wait_for(
                lambda: sum("failed to load" in r.getMessage() for r in caplog.records) == 2, timeout=10
            )
            tries = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
            assert "tried again in 10 s" in tries[-1], tries
        finally:
            model_versions.set_rollout(MODEL, None)
