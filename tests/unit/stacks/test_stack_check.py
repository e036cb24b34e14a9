"""stacks/check.py: per-component verdicts, in seconds, with reasons that name what failed."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacks import check as check_module
from stacks.check import ComponentCheck, check_stack
from stacks.config import ComponentType, Stack, parse_stack
from stacks.loader import load_stack


def _by_type(results: list[ComponentCheck]) -> dict[str, ComponentCheck]:
    return {r.component_type: r for r in results}


def _local_with_port(port: int) -> Stack:
    """The shipped local stack, its deployer on a port known to be free (8080 may be busy here)."""
    doc = load_stack("local").to_dict()
    doc["components"]["model_deployer"]["configuration"]["port"] = port
    return parse_stack(doc, "local.yaml")


def test_local_stack_all_ok(home: Path, free_port: int) -> None:
    started = time.monotonic()
    results = check_stack(_local_with_port(free_port), timeout=2.0)
    assert time.monotonic() - started < 5
    assert [r.component_type for r in results] == [t.value for t in ComponentType]
    bad = [r for r in results if not r.ok]
    assert bad == []
    by = _by_type(results)
    assert by["orchestrator"].detail.startswith("ephemeral local API")
    assert str(home / "artifacts") in by["artifact_store"].detail
    assert (home / "artifacts").is_dir()
    assert list((home / "artifacts").iterdir()) == []  # the probe file was deleted
    assert not (home / "mlflow.db").exists()  # checking creates no database
    assert by["model_deployer"].detail == f"port 127.0.0.1:{free_port} is free"


def test_unreachable_api_url_fails_fast_naming_the_component(
    minimal: Callable[..., dict[str, Any]], free_port: int
) -> None:
    doc = minimal(
        orchestrator={
            "name": "remote",
            "flavor": "prefect",
            "configuration": {"api_url": f"http://127.0.0.1:{free_port}/api"},
        }
    )
    started = time.monotonic()
    results = check_stack(parse_stack(doc, "f.yaml"), timeout=2.0)
    assert time.monotonic() - started < 4
    orch = _by_type(results)["orchestrator"]
    assert (orch.component_type, orch.name, orch.ok) == ("orchestrator", "remote", False)
    assert orch.detail.startswith(f"cannot reach http://127.0.0.1:{free_port}/api/health:")
    assert "\n" not in orch.detail
    assert _by_type(results)["artifact_store"].ok


def test_unroutable_host_bounded_by_timeout(minimal: Callable[..., dict[str, Any]]) -> None:
    # 10.255.255.1 is never answered: either a connect timeout or an immediate "unreachable"
    doc = minimal(
        orchestrator={
            "name": "o",
            "flavor": "prefect",
            "configuration": {"api_url": "http://10.255.255.1:4200/api"},
        }
    )
    started = time.monotonic()
    results = check_stack(parse_stack(doc, "f.yaml"), timeout=1.0)
    assert time.monotonic() - started < 4.5
    assert not _by_type(results)["orchestrator"].ok


def test_healthy_services_are_ok(minimal: Callable[..., dict[str, Any]], health_server: str) -> None:
    doc = minimal(
        orchestrator={"name": "o", "flavor": "prefect", "configuration": {"api_url": f"{health_server}/api"}},
        experiment_tracker={
            "name": "t",
            "flavor": "mlflow",
            "configuration": {"tracking_uri": health_server},
        },
        model_registry={"name": "r", "flavor": "mlflow", "configuration": {}},
    )
    by = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=2.0))
    assert by["orchestrator"].ok, by["orchestrator"].detail
    assert by["orchestrator"].detail == f"Prefect API {health_server}/api/health answered 200"
    assert by["experiment_tracker"].ok and by["model_registry"].ok


def test_unresolvable_secret_named(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = minimal(
        artifact_store={
            "name": "s3",
            "flavor": "s3",
            "configuration": {"path": "s3://b/a", "storage_options": {"key": "{{s3.access_key}}"}},
        }
    )
    store = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=1.0))["artifact_store"]
    assert not store.ok
    assert store.detail == (
        "unresolvable secret key 'storage_options.key' ({{s3.access_key}}: set the environment variable "
        "S3_ACCESS_KEY, or create a Prefect Secret block named 's3-access-key' on the Prefect server that "
        "PREFECT_API_URL or the stack's orchestrator api_url names (neither is set, so no server was asked))"
    )


def test_secret_values_never_in_details(monkeypatch: pytest.MonkeyPatch, free_port: int) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", "AKIA-LEAK-CHECK")
    monkeypatch.setenv("S3_SECRET_KEY", "secret-LEAK-CHECK")
    monkeypatch.setenv("FLYWHEEL_OPTUNA_DB_URL", f"sqlite:///{'x' * 3}.db?pw=LEAK-CHECK")
    doc = load_stack("staging").to_dict()
    doc["components"]["artifact_store"]["configuration"]["storage_options"]["client_kwargs"][
        "endpoint_url"
    ] = f"http://127.0.0.1:{free_port}"
    started = time.monotonic()
    results = check_stack(parse_stack(doc, "staging.yaml"), timeout=2.0)
    assert time.monotonic() - started < 6
    store = _by_type(results)["artifact_store"]
    assert not store.ok and "s3://flywheel-staging/artifacts" in store.detail
    for r in results:
        assert "LEAK-CHECK" not in r.detail


def test_password_in_database_url_is_masked(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_URL", "postgresql://user:s3cr3t-pw@127.0.0.1:1/optuna")
    doc = minimal(tuner={"name": "t", "flavor": "optuna", "configuration": {"storage": "${DB_URL}"}})
    tuner = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=1.0))["tuner"]
    assert not tuner.ok
    assert "s3cr3t-pw" not in tuner.detail
    assert "postgresql://user:***@127.0.0.1:1/optuna" in tuner.detail


def test_existing_sqlite_study_connects(minimal: Callable[..., dict[str, Any]], home: Path) -> None:
    home.mkdir(parents=True)
    sqlite3.connect(home / "optuna.db").close()
    doc = minimal(
        tuner={"name": "t", "flavor": "optuna", "configuration": {"storage": "sqlite:///optuna.db"}}
    )
    tuner = _by_type(check_stack(parse_stack(doc, "f.yaml")))["tuner"]
    assert tuner.ok and tuner.detail.startswith("study storage: connected to sqlite:///")


def test_in_memory_tuner(minimal: Callable[..., dict[str, Any]]) -> None:
    doc = minimal(tuner={"name": "t", "flavor": "optuna", "configuration": {}})
    tuner = _by_type(check_stack(parse_stack(doc, "f.yaml")))["tuner"]
    assert tuner.ok and tuner.detail.startswith("in-memory study")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a listener that is not an HTTP service."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_local_deployer_port_taken(minimal: Callable[..., dict[str, Any]], busy_port: int) -> None:
    doc = minimal(model_deployer={"name": "d", "flavor": "local", "configuration": {"port": busy_port}})
    deployer = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=1.0))["model_deployer"]
    assert not deployer.ok
    assert deployer.detail.startswith(
        f"port 127.0.0.1:{busy_port} is taken by something that is not a Flywheel"
    )


def test_local_deployer_service_answering(minimal: Callable[..., dict[str, Any]], health_server: str) -> None:
    port = int(health_server.rsplit(":", 1)[1])
    doc = minimal(model_deployer={"name": "d", "flavor": "local", "configuration": {"port": port}})
    deployer = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=1.0))["model_deployer"]
    assert deployer.ok and deployer.detail.startswith("service already running")


@pytest.mark.parametrize(("flavor", "tool"), [("docker", "docker"), ("kubernetes", "kubectl")])
def test_deployer_tools_on_path(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch, flavor: str, tool: str
) -> None:
    config = {"image": "x"} if flavor == "kubernetes" else {}
    doc = minimal(model_deployer={"name": "d", "flavor": flavor, "configuration": config})
    monkeypatch.setattr(check_module.shutil, "which", lambda name: None)
    missing = _by_type(check_stack(parse_stack(doc, "f.yaml")))["model_deployer"]
    assert not missing.ok and missing.detail == f"'{tool}' is not on PATH"
    monkeypatch.setattr(check_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    found = _by_type(check_stack(parse_stack(doc, "f.yaml")))["model_deployer"]
    assert found.ok and found.detail == f"'{tool}' found at /usr/bin/{tool}"


def test_hanging_check_is_cut_off(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def hang(stack: Stack, timeout: float) -> str:
        release.wait(30)
        return "late"

    monkeypatch.setitem(check_module._CHECKS, ComponentType.COMPUTE, hang)
    doc = minimal(compute={"name": "c", "flavor": "local", "configuration": {}})
    started = time.monotonic()
    try:
        results = check_stack(parse_stack(doc, "f.yaml"), timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 4
    compute = _by_type(results)["compute"]
    assert not compute.ok and compute.detail == "no answer within 0.5 s"
    assert _by_type(results)["orchestrator"].ok


def test_crashing_check_reports(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(stack: Stack, timeout: float) -> str:
        raise RuntimeError("exploded\nover two lines")

    monkeypatch.setitem(check_module._CHECKS, ComponentType.ORCHESTRATOR, boom)
    orch = _by_type(check_stack(parse_stack(minimal(), "f.yaml")))["orchestrator"]
    assert not orch.ok and orch.detail == "RuntimeError: exploded over two lines"


def test_compute_dask_scheduler_probed(
    minimal: Callable[..., dict[str, Any]], busy_port: int, free_port: int
) -> None:
    def compute(port: int) -> ComponentCheck:
        config = {"engine": "dask", "dask_address": f"tcp://127.0.0.1:{port}"}
        doc = minimal(compute={"name": "c", "flavor": "dask", "configuration": config})
        return _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=1.0))["compute"]

    up = compute(busy_port)
    assert up.ok and up.detail.endswith(f"Dask scheduler tcp://127.0.0.1:{busy_port} answers")
    down = compute(free_port)
    assert not down.ok and down.detail.endswith(f"tcp://127.0.0.1:{free_port} does not answer")


def test_a_resolved_secret_quoted_by_an_error_is_masked(
    minimal: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    endpoint = f"http://127.0.0.1:{free_port}"
    monkeypatch.setenv("S3_ENDPOINT", endpoint)  # an endpoint given as a reference is treated as a secret
    monkeypatch.setenv("S3_TOKEN", "tok-LEAK-CHECK")
    doc = minimal(
        artifact_store={
            "name": "s3",
            "flavor": "s3",
            "configuration": {
                "path": "s3://b/a",
                "storage_options": {
                    "key": "${S3_TOKEN}",
                    "secret": "${S3_TOKEN}",
                    "client_kwargs": {"endpoint_url": "${S3_ENDPOINT}"},
                },
            },
        }
    )
    store = _by_type(check_stack(parse_stack(doc, "f.yaml"), timeout=2.0))["artifact_store"]
    assert not store.ok
    assert endpoint not in store.detail and "LEAK-CHECK" not in store.detail
    assert "********" in store.detail, store.detail
