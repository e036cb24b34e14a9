"""Helpers the end-to-end scenarios share: free ports, a printed timeline, polling with a deadline, and
finding and stopping the processes a test started (detached ones included)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def __call__(self, what: str) -> None:
        self.events.append((time.monotonic() - self.start, what))
        print(f"[{time.monotonic() - self.start:7.1f}s] {what}", flush=True)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # not up yet
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ------------------------------------------------------------------------------------ processes a test starts


def start_detached(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``command`` in a process group of its own (so its children stop with it), output to ``log``."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop_detached(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the process group of a :func:`start_detached` process, then wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)


def serve_model(model: str, port: int, log: Path, workers: int = 1, **env: str) -> subprocess.Popen[bytes]:
    """``flywheel serve`` of ``model`` on ``port`` with ``workers``, the environment plus ``env``."""
    flywheel = str(Path(sys.executable).parent / "flywheel")
    command = [flywheel, "serve", "--model", model, "--port", str(port), "--workers", str(workers)]
    return start_detached(command, log, {**os.environ, **env})


# ---------------------------------------------------------------------------------------------- processes
# A service deployed by a flow is detached (its own session, reparented to init when its parent exits),
# and so is each flow run a Prefect process worker starts: killing the test's own subprocesses does not
# reach them. What does: every one of them inherits FLYWHEEL_HOME, so the processes of a test's home are
# found by their environment, whichever process started them and whether or not anything recorded them.


def environ_of(proc: psutil.Process) -> dict[str, str] | None:
    """The environment ``proc`` started with, or None where it cannot be read (another user, gone)."""
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return None


def _under(value: str | None, root: Path) -> bool:
    if not value:
        return False
    try:
        return Path(value).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def processes_of_home(home: Path) -> list[psutil.Process]:
    """Live processes (zombies excluded) whose FLYWHEEL_HOME is ``home`` or a folder under it."""
    root, me = home.resolve(), os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == me or not alive(proc):
            continue
        env = environ_of(proc)
        if env is not None and _under(env.get("FLYWHEEL_HOME"), root):
            found.append(proc)
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {proc.pid}: (gone)"


def kill_processes(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """SIGTERM each process with its descendants (its whole group when it leads one), SIGKILL survivors.

    Never the calling process nor its own group (pytest's terminal group).
    """
    me, my_group = os.getpid(), os.getpgid(0)
    targets: dict[int, psutil.Process] = {}
    for proc in procs:
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            family = [proc]
        targets.update((p.pid, p) for p in family if p.pid != me)

    def send(sig: signal.Signals) -> None:
        for pid, proc in targets.items():
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                if not proc.is_running():
                    continue
                group = os.getpgid(pid)
                if group == pid and group != my_group:
                    os.killpg(group, sig)
                else:
                    os.kill(pid, sig)

    send(signal.SIGTERM)
    _, left = psutil.wait_procs(list(targets.values()), timeout=timeout)
    if left:
        send(signal.SIGKILL)
        psutil.wait_procs(left, timeout=5)


@contextlib.contextmanager
def _flywheel_home(home: Path) -> Iterator[None]:
    saved = os.environ.get("FLYWHEEL_HOME")
    os.environ["FLYWHEEL_HOME"] = str(home)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FLYWHEEL_HOME", None)
        else:
            os.environ["FLYWHEEL_HOME"] = saved


def recorded_services(home: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The state files of local services under ``home/services/<stack>/<model>.json``, by (stack, model)
    (unreadable ones skipped; a one-service-per-stack file ``services/<stack>.json`` read as well)."""
    found = {}
    services = home / "services"
    for path in sorted([*services.glob("*/*.json"), *services.glob("*.json")]):
        if path.name == "ports.json":
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("flavor") == "local":
            stack = path.parent.name if path.parent != services else path.stem
            found[(stack, str(data.get("model_name")))] = data
    return found


def stop_recorded_services(home: Path) -> list[str]:
    """Stop every local service recorded under ``home`` with its deployer's ``stop()``; what failed, if any.

    Only a recorded pid that is a live process of this home is acted on: a stale file, or one a test wrote
    with a made-up pid, names nothing of ours. A service whose stop fails is left to the caller's sweep.
    """
    from stacks.components.deployers import deployer_for
    from stacks.loader import load_stack

    ours = {p.pid for p in processes_of_home(home)}
    problems = []
    with _flywheel_home(home):
        for (name, model), data in recorded_services(home).items():
            if data.get("pid") not in ours:
                continue
            ref = (data.get("extra") or {}).get("stack_ref") or name
            try:
                deployer_for(load_stack(str(ref))).stop(model)
            except Exception as exc:  # a stack file the test deleted, a bad state file
                problems.append(f"stack {name!r} ({ref}), model {model!r}: {type(exc).__name__}: {exc}")
    return problems


def _part_of(proc: psutil.Process, services: set[int]) -> bool:
    """True if ``proc`` is one of ``services`` or theirs (a child, or in its process group): a service's
    own stop ends those (the profiler ignores SIGTERM and waits for the server's word to flush)."""
    try:
        if proc.pid in services or os.getpgid(proc.pid) in services:
            return True
        return any(parent.pid in services for parent in proc.parents())
    except (psutil.Error, ProcessLookupError):
        return False


def stop_everything_under(home: Path) -> list[str]:
    """Stop every process of a test's Flywheel home; returns those that had to be killed (``describe``).

    Order matters. First everything that is not a recorded service (a Prefect worker, its flow runs, a
    service that a killed flow run had started but not recorded yet): after that nothing can deploy again.
    Then the recorded services, through their deployer. Last, whatever is still there.
    """
    recorded = {d["pid"] for d in recorded_services(home).values() if isinstance(d.get("pid"), int)}
    others = [p for p in processes_of_home(home) if not _part_of(p, recorded)]
    killed = [describe(p) for p in others if alive(p)]  # not the ones that exited on their own meanwhile
    kill_processes(others)
    for problem in stop_recorded_services(home):
        print(f"stopping the services under {home}: {problem}", flush=True)
    left = processes_of_home(home)
    killed += [describe(p) for p in left if alive(p)]
    kill_processes(left)
    return killed


@contextlib.contextmanager
def isolated_home(tmp_path_factory: Any, name: str) -> Iterator[Path]:
    """A fresh Flywheel home on the local stack for a module's tests; afterwards every process of it is
    stopped, and the module fails if any had to be (a test stops what it starts)."""
    from tests.unit.serving.conftest import local_home

    home = tmp_path_factory.mktemp(name)
    with local_home(home):
        yield home
    killed = stop_everything_under(home)
    assert not killed, f"processes left running under {home}: {killed}"


# ------------------------------------------------------------------------------------ the loop on a server
# What a scenario on a real Prefect server needs beside the processes above: steady traffic whose every
# failure is counted, the server's flow runs read back, and a teardown that lets the orchestrator go quiet.


class Load:
    """Steady traffic on a service for a whole scenario; every failure is counted, every version seen kept."""

    def __init__(self, url: str, records: list[dict[str, Any]], rate: float = 20.0) -> None:
        import threading

        self.url, self.records, self.rate = url, records, rate
        self.ok = 0
        self.failed: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import requests

        session = requests.Session()
        sent = 0
        while not self._stop.is_set():
            record = self.records[sent % len(self.records)]
            sent += 1
            try:
                r = session.post(f"{self.url}/predict", json=record, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                    self.versions.add(r.json()["model_version"])
                else:
                    self.failed.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
            time.sleep(1 / self.rate)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)


def settle(api_url: str, timeout: float = 60.0) -> None:
    """Let the orchestrator go quiet: no automation fires and no schedule runs any more, scheduled runs are
    dropped, and the runs in progress get ``timeout`` seconds to finish (what is left is killed after)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def runs(client: Any, *types: StateType) -> list[Any]:
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)))
        return list(client.read_flow_runs(flow_run_filter=FlowRunFilter(state=state)))

    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            for automation in client.read_automations():
                client.pause_automation(automation.id)
            for deployment in client.read_deployments():
                client.pause_deployment(deployment.id)
            for waiting in runs(client, StateType.SCHEDULED, StateType.PAUSED):
                client.delete_flow_run(waiting.id)
            active = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)
            started, deadline = time.monotonic(), time.monotonic() + timeout
            waited = {f"{r.name} ({r.state_name})" for r in runs(client, *active)}
            while runs(client, *active) and time.monotonic() < deadline:
                time.sleep(1)
            left = runs(client, *active)
    except Exception as exc:  # the server never came up, or the test broke it: nothing to wait for
        print(f"teardown: could not settle the Prefect server ({type(exc).__name__}: {exc})", flush=True)
        return
    if waited:
        print(f"teardown: waited {time.monotonic() - started:.0f}s for flow runs {sorted(waited)}")
    if left:
        print(f"teardown: flow runs still in progress after {timeout:.0f}s: {[r.name for r in left]}")


def flow_runs(deployment: str) -> list[Any]:
    """Every flow run of the deployment ``FLOW/NAME`` (the client's PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        return list(
            client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
        )


def finished(run_id: Any) -> Any:
    """The flow run once it is final (it must have completed), else None: a ``wait_for`` check."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    if run.state is not None and run.state.is_final():
        assert run.state.is_completed(), f"flow run {run.name} ended {run.state.type}: {run.state.message}"
        return run
    return None


def wait_finished(run_id: Any, timeout: float, what: str, every: float = 2.0) -> Any:
    """Wait for a flow run to end; a run that fails fails the test at once with its state's message
    (``wait_for`` would take that for "not yet" and wait out its timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = finished(run_id)
        except AssertionError:
            raise
        except Exception:  # the server did not answer this time
            run = None
        if run is not None:
            return run
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def known(record: dict[str, Any], features: list[dict[str, Any]]) -> bool:
    """Every categorical value of the record is in the model's vocabulary (else the service says 422)."""
    return all(
        record[f["name"]] is None or record[f["name"]] in f["categories"]
        for f in features
        if f["kind"] == "categorical"
    )


class LoopProcesses:
    """The processes of a scenario on a Prefect server: spawned in their own sessions with one
    environment and a log file each, and all of them stopped by :meth:`close`, whatever happened.

    ``close`` first lets the orchestrator go quiet (:func:`settle`), so that nothing deploys a service
    while the rest stops; then the spawned processes (the worker, then the server), then every process of
    the home (flow runs and services are their own sessions) and the recorded services.
    """

    def __init__(self, root: Path, env: dict[str, str], logs: Path) -> None:
        self.root, self.env, self.logs = root, env, logs
        self.procs: list[Any] = []
        self.handles: list[Any] = []
        self.loads: list[Load] = []

    def spawn(self, name: str, *args: str) -> Any:
        import subprocess

        handle = (self.logs / f"{name}.log").open("wb")
        self.handles.append(handle)
        proc = subprocess.Popen(
            list(args),
            cwd=self.root,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 300) -> Any:
        import subprocess

        return subprocess.run(
            list(args),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def close(self) -> None:
        import subprocess

        for load in self.loads:
            load.stop()
        settle(self.env["PREFECT_API_URL"])
        for proc in reversed(self.procs):  # the worker, then the server
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        for handle in self.handles:
            handle.close()
        for line in stop_everything_under(Path(self.env["FLYWHEEL_HOME"])):
            print(f"killed at teardown: {line}", flush=True)
