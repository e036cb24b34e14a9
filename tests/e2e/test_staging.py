"""The staging stack on real services, brought up and down by the project's own scripts.

`scripts/staging-up.sh` starts PostgreSQL, moto's S3 server, an MLflow server on
PostgreSQL with artifacts proxied to S3, and a Prefect server on PostgreSQL with the process pool, the
deployments and a worker. Then the same flows as on the local stack run with `FLYWHEEL_STACK=staging`:
training (through the deployment, on the worker), the service, a batch, traffic and monitoring. The model,
its metrics, its artifacts and the snapshot are found in PostgreSQL and in the S3 bucket, and none on local
disk. `stack check` names the component when a password is wrong or a service is stopped. Afterwards
`scripts/staging-down.sh` stops everything, and the local stack works with no clean-up.

The services listen on the fixed ports that `stacks/staging.yaml` names; the test fails (with the reason)
if something else holds one, for instance a developer's own `make staging-up`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.support import Timeline

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORTS = {"PostgreSQL": 5433, "S3": 5055, "MLflow": 5010, "Prefect": 4210, "service": 8081}
BUCKET = "flywheel-staging"
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {k: v for k, v in pairs}


class Staging:
    """The running staging services and how to talk to them from the test."""

    def __init__(self, home: Path, state: Path) -> None:
        self.home, self.state = home, state
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FLYWHEEL_", "MLFLOW_"))
        }
        self.env |= {
            "FLYWHEEL_HOME": str(home),
            "FLYWHEEL_STAGING_DIR": str(state),
            "FLYWHEEL_STACK": "staging",
            "PREFECT_CLI_PROMPT": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "WHYLOGS_NO_ANALYTICS": "True",
            "FLYWHEEL_PROFILE_WINDOW_S": "5",
            "FLYWHEEL_WATCH_INTERVAL_S": "2",
        }

    def load_credentials(self) -> None:
        self.env |= _read_env_file(self.state / "credentials.env")

    def run(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=ROOT,
            env=self.env | extra_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def flywheel(
        self, *args: str, timeout: float = 300, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        done = self.run(str(BIN / "flywheel"), *args, timeout=timeout, **extra_env)
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        expected = done.returncode == 0 or args[:2] == ("stack", "check")
        assert expected, f"flywheel {' '.join(args)} exited {done.returncode}:\n{output}"
        return done

    def sql(self, database: str, query: str) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=PORTS["PostgreSQL"],
            user="flywheel",
            password=self.env["POSTGRES_PASSWORD"],
            dbname=database,
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return list(cur.fetchall())
        finally:
            conn.close()

    def s3_keys(self, prefix: str = "") -> list[str]:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{PORTS['S3']}",
            region_name="us-east-1",
            aws_access_key_id=self.env["S3_ACCESS_KEY"],
            aws_secret_access_key=self.env["S3_SECRET_KEY"],
        )
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys


@pytest.fixture(scope="module")
def staging() -> Iterator[Staging]:
    taken = [f"{name} port {port}" for name, port in PORTS.items() if _port_taken(port)]
    if taken:
        pytest.fail(
            f"cannot bring staging up here: {', '.join(taken)} already in use "
            "(a running `make staging-up`? stop it with `make staging-down`)"
        )
    # outside pytest's temporary root: PostgreSQL runs as the `postgres` user when the test runs as root
    # and must reach its folder (pytest's root is private), and a concurrent pytest session prunes old
    # roots, which would delete the service's state file under a running service
    home = Path(tempfile.mkdtemp(prefix="flywheel-staging-home-"))
    state = Path(tempfile.mkdtemp(prefix="flywheel-staging-"))
    state.chmod(0o711)
    env = Staging(home, state)
    t = Timeline()
    up = env.run("bash", "scripts/staging-up.sh", timeout=600)
    print(up.stdout[-3000:])
    try:
        assert up.returncode == 0, f"staging-up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        t("staging services up")
        env.load_credentials()
        yield env
    finally:
        down = env.run("bash", "scripts/staging-down.sh", timeout=180)
        print(down.stdout[-2000:], down.stderr[-2000:])
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        t("staging services down")
        assert down.returncode == 0, down.stderr
        still = [f"{name} port {port}" for name, port in PORTS.items() if _port_taken(port)]
        assert not still, f"staging-down left {still} listening"


def test_same_flows_on_staging_keep_everything_in_postgres_and_s3(staging: Staging) -> None:
    t = Timeline()
    started = time.time()
    api = f"http://127.0.0.1:{PORTS['Prefect']}/api"
    staging.env["PREFECT_API_URL"] = api

    # training through its deployment, on the staging work pool's worker
    done = staging.run(
        str(BIN / "prefect"),
        "deployment",
        "run",
        "training/flights",
        "--param",
        "n_trials=3",
        "--param",
        "sample_rows=30000",
        "--watch",
        "--watch-timeout",
        "400",
        timeout=450,
    )
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout[-4000:] + done.stderr[-3000:]
    t("training deployment completed on the staging worker")

    deployed = staging.flywheel("service", "deploy", "--stack", "staging", "--problem", "flights")
    service = f"http://127.0.0.1:{PORTS['service']}"
    info = requests.get(f"{service}/model", timeout=10).json()
    assert info["version"] == "1", info
    assert info["snapshot"].startswith(f"s3://{BUCKET}/artifacts/snapshots/"), info
    t(f"service up: {deployed.stdout.strip().splitlines()[-4]}")

    scored = staging.flywheel(
        "run", "inference", "--stack", "staging", "--problem", "flights", "--sample-rows", "20000"
    )
    assert f"s3://{BUCKET}/artifacts/inference/flight-delay/v1/" in scored.stdout, scored.stdout
    t("batch scored into S3")

    replayed = staging.flywheel(
        "replay",
        "--problem",
        "flights",
        "--url",
        service,
        "--rate",
        "200",
        "--limit",
        "800",
        "--feedback-delay",
        "0.5",
        "--duration",
        "60",
    )
    assert ", 0 failed," in replayed.stdout, replayed.stdout
    time.sleep(7)  # the last 5 s profile window closes and is written
    monitored = staging.flywheel(
        "run", "monitoring", "--stack", "staging", "--problem", "flights", "--no-event"
    )
    assert f"report: s3://{BUCKET}/artifacts/monitoring/" in monitored.stdout, monitored.stdout
    t("traffic profiled and monitored")

    # ---- PostgreSQL holds the registry, the metrics, the study and the flow runs
    versions = staging.sql("mlflow", "SELECT name, version, run_id FROM model_versions")
    assert [(n, v) for n, v, _ in versions] == [("flight-delay", 1)], versions
    run_id = versions[0][2]
    metrics = dict(staging.sql("mlflow", f"SELECT key, value FROM metrics WHERE run_uuid = '{run_id}'"))
    assert 0.55 < metrics["test.roc_auc"] < 1.0, metrics
    assert metrics["tuning.trials"] == 3, metrics
    aliases = staging.sql("mlflow", "SELECT alias, version FROM registered_model_aliases")
    assert ("champion", 1) in aliases, aliases
    (artifact_uri,) = staging.sql("mlflow", f"SELECT artifact_uri FROM runs WHERE run_uuid = '{run_id}'")[0]
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri  # proxied by the server to S3
    tags = dict(staging.sql("mlflow", "SELECT key, value FROM model_version_tags WHERE version = 1"))
    assert tags["flywheel.dataset.snapshot"] == info["snapshot"], tags
    trials = staging.sql("optuna", "SELECT count(*) FROM trials")[0][0]
    assert trials >= 3, trials
    runs = staging.sql(
        "prefect",
        "SELECT f.name || '/' || d.name, fr.state_type FROM flow_run fr "
        "JOIN deployment d ON fr.deployment_id = d.id JOIN flow f ON d.flow_id = f.id",
    )
    assert ("training/flights", "COMPLETED") in runs, runs
    monitoring_runs = staging.sql(
        "mlflow",
        "SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
        "WHERE e.name = 'monitoring'",
    )[0][0]
    assert monitoring_runs >= 1

    # ---- the S3 endpoint holds the artifacts: model files, plots, snapshot, batch, profiles, report
    keys = staging.s3_keys()
    model_files = [k for k in keys if k.startswith("mlflow/") and k.endswith("MLmodel")]
    assert model_files, keys[:50]
    assert any(k.startswith("mlflow/") and k.endswith(".png") for k in keys), "no plots in S3"
    snapshot_key = info["snapshot"].removeprefix(f"s3://{BUCKET}/")
    assert snapshot_key in keys
    assert any(k.startswith("artifacts/inference/flight-delay/v1/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith("artifacts/serving/flight-delay/v1/profiles/") for k in keys), [
        k for k in keys if "serving" in k
    ]
    assert any(k.startswith("artifacts/monitoring/flight-delay/reports/") for k in keys)

    # ---- and nothing of it on local disk
    local = [
        p
        for p in staging.home.rglob("*")
        if p.is_file() and (p.suffix in {".parquet", ".ubj", ".png", ".db", ".bin"} or p.name == "MLmodel")
    ]
    assert not local, f"artifacts on local disk: {local[:10]}"
    strays = [
        p
        for folder in (ROOT / "mlruns", ROOT / "mlartifacts", Path.cwd() / "mlruns")
        if folder.exists()
        for p in folder.rglob("*")
        if p.stat().st_mtime >= started
    ]
    assert not strays, f"MLflow wrote into the working directory: {strays[:5]}"
    t("model, metrics, study and runs in PostgreSQL; artifacts and snapshot in S3; none on local disk")


def test_stack_check_names_the_broken_component(staging: Staging) -> None:
    healthy = staging.flywheel("stack", "check", "staging")
    assert healthy.returncode == 0 and "all 11 components reachable" in healthy.stdout, healthy.stdout

    started = time.monotonic()
    wrong_pw = staging.flywheel(
        "stack",
        "check",
        "staging",
        OPTUNA_DB_URL=f"postgresql://flywheel:wrong@127.0.0.1:{PORTS['PostgreSQL']}/optuna",
    )
    assert wrong_pw.returncode == 1
    failed = [line for line in wrong_pw.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "tuner" in failed[0], wrong_pw.stdout
    assert 'password authentication failed for user "flywheel"' in failed[0]
    assert "wrong" not in wrong_pw.stdout + wrong_pw.stderr  # the password itself is never shown

    # a stopped service: the MLflow server goes down, tracking and registry say so
    pid = int((staging.state / "run" / "mlflow.pid").read_text())
    os.killpg(pid, 15)
    deadline = time.monotonic() + 30
    while _port_taken(PORTS["MLflow"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    stopped = staging.flywheel("stack", "check", "staging")
    assert stopped.returncode == 1
    failed = [line for line in stopped.stdout.splitlines() if line.startswith("FAIL")]
    assert {line.split()[1] for line in failed} == {"experiment_tracker", "model_registry"}, stopped.stdout
    assert all(f"cannot reach http://127.0.0.1:{PORTS['MLflow']}/health" in line for line in failed)
    elapsed = time.monotonic() - started
    assert elapsed < 45, f"three checks took {elapsed:.0f} s"  # seconds each, CLI start-up included


def test_local_stack_needs_no_clean_up_after_staging(staging: Staging) -> None:
    # the same shell and home, staging's credentials still set: only the stack name changes
    env = {k: v for k, v in staging.env.items() if not k.startswith("PREFECT_")}
    env["FLYWHEEL_STACK"] = "local"
    done = subprocess.run(
        [
            str(BIN / "flywheel"),
            "run",
            "training",
            "--problem",
            "flights",
            "--trials",
            "1",
            "--sample-rows",
            "5000",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Champion: flight-delay@champion = v1" in done.stdout
    assert (staging.home / "mlflow.db").exists()  # back on the local SQLite stack
