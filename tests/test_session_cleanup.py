"""The end-of-session check in tests/conftest.py, exercised for real: an inner pytest run (a separate
process, loading that conftest as a plugin) whose test starts servers and forgets them must fail naming
each process and its port, and kill them; one whose tests and session fixtures stop what they start
passes, and leaves alone a server that was running before it started.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.support import alive, free_port, kill_processes, wait_for

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

HELPERS = '''
import socket, subprocess, sys, time

def serve(port, *, orphan):
    """python -m http.server on 127.0.0.1:port in its own session; an orphan's parent has exited."""
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    if orphan:  # started by a short-lived middle process, as a flow run starts a service: init adopts it
        code = (
            "import subprocess, sys; p = subprocess.Popen(sys.argv[1:], start_new_session=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
        )
        pid = int(subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                                 check=True).stdout)
        proc = None
    else:
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        pid = proc.pid
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < deadline, "http.server did not start"
        time.sleep(0.1)
    return pid, proc

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
'''

LEAKY = """
from pathlib import Path
from helpers import free_port, serve

def test_starts_servers_and_forgets_them():
    for orphan in (True, False):
        port = free_port()
        pid, _ = serve(port, orphan=orphan)
        with Path("servers.txt").open("a") as f:
            f.write(f"{pid} {port}\\n")
"""

TIDY = """
import subprocess, sys
import pytest
from helpers import free_port, serve

@pytest.fixture(scope="session")
def session_server():
    pid, proc = serve(free_port(), orphan=False)
    yield pid
    proc.terminate()  # torn down at the very end of the session: the check must run after this
    proc.wait(timeout=10)

def test_uses_a_session_server(session_server):
    assert session_server

def test_stops_its_server():
    pid, proc = serve(free_port(), orphan=False)
    proc.terminate()
    proc.wait(timeout=10)

def test_a_process_that_ends_shortly_after_is_not_reported():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"], start_new_session=True)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the inner run imports tests.conftest
    monkeypatch.setenv("PYTEST_LEFTOVER_GRACE_S", "4")
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyfile(helpers=HELPERS)
    return pytester


def _run(inner: pytest.Pytester) -> pytest.RunResult:
    return inner.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", timeout=180)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int) -> bool:
    try:
        return not alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def server_before() -> Iterator[tuple[int, int]]:
    """A server that runs before the inner session starts (a developer's own `make up`, say)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _accepts(port), 30, "the server started before the inner session", every=0.1)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_run_that_leaves_servers_running_fails_and_they_are_killed(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_leaky=LEAKY)
    result = _run(inner)
    lines = (inner.path / "servers.txt").read_text().splitlines()
    servers = [(int(pid), int(port)) for pid, port in (line.split() for line in lines)]
    try:
        assert len(servers) == 2, servers
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
        result.stdout.fnmatch_lines(["*1 passed*"])  # the test itself passed: the check failed the run
        result.stdout.fnmatch_lines(["*= processes left running =*"])
        for pid, port in servers:
            result.stdout.fnmatch_lines([f"pid {pid} (listening on 127.0.0.1:{port}): *-m http.server*"])
        result.stdout.fnmatch_lines(["*2 process(es) started by this run were still running*killed*"])
        assert wait_for(lambda: all(_gone(pid) for pid, _ in servers), 10, "the servers to be gone")
    finally:
        kill_processes([psutil.Process(pid) for pid, _ in servers if not _gone(pid)])


def test_a_run_that_stops_what_it_starts_passes_and_spares_older_processes(
    inner: pytest.Pytester, server_before: tuple[int, int]
) -> None:
    inner.makepyfile(test_tidy=TIDY)
    result = _run(inner)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*3 passed*"])
    result.stdout.no_fnmatch_line("*processes left running*")
    pid, port = server_before
    assert not _gone(pid)  # running before the inner session: not its business
    assert _accepts(port)
