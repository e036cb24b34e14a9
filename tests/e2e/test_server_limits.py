"""The server's limits against the real service: slow clients are closed on time while predictions go on,
overload is a quick 503 the service recovers from by itself, and a stop does not wait on a client that never
finishes its body.

A small champion is trained into a temporary home, then served from a stack file whose ``server`` block sets
timeouts of a second or two: once by the local deployer (the detached ``python -m uvicorn`` path) and once by
``flywheel serve``. All traffic goes to 127.0.0.1, in bounded loops; every server is stopped in a ``finally``.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from stacks.components.deployers.base import http_status
from stacks.components.deployers.local import LocalDeployer
from stacks.loader import STACKS_DIR, load_stack
from tests.e2e.support import free_port, wait_for
from tests.unit.serving.conftest import record_from, train_and_register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")

HEADER_S = 2.0
BODY_S = 1.5
KEEP_ALIVE_S = 4
GRACE_S = 2
LIMIT = 400
MAX_CONNECTIONS = 600
SERVER = {
    "header_timeout_s": HEADER_S,
    "body_timeout_s": BODY_S,
    "keep_alive_timeout_s": KEEP_ALIVE_S,
    "graceful_shutdown_timeout_s": GRACE_S,
    "limit_concurrency": LIMIT,
    "max_connections": MAX_CONNECTIONS,
}
PARTIAL_HEADERS = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic"
REQUEST_TIMEOUT = b"HTTP/1.1 408"


@pytest.fixture(scope="module")
def limits_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh home; the stack selectors and limit overrides unset; room for ~700 client sockets here."""
    home = tmp_path_factory.mktemp("limits-home")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.setenv("FLYWHEEL_PROFILING", "off")  # the profiler process's start-up would only compete for CPU
        for var in ("FLYWHEEL_STACK", "FLYWHEEL_HEADER_TIMEOUT_S", "FLYWHEEL_MAX_CONNECTIONS"):
            mp.delenv(var, raising=False)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        try:
            yield home
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def champion(limits_home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> dict[str, Any]:
    return train_and_register(flights_sample, weather, rounds=10)


def write_stack(home: Path, name: str, port: int, **server: Any) -> Path:
    """The shipped local stack, served on ``port`` with these server limits."""
    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text(encoding="utf-8"))
    doc["stack_name"] = name
    doc["components"]["model_deployer"]["configuration"].update(port=port, server={**SERVER, **server})
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Service:
    url: str
    port: int
    log: Path
    offset: int = 0

    def log_since_mark(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def mark(self) -> None:
        self.offset = self.log.stat().st_size


@pytest.fixture(scope="module")
def service(limits_home: Path, champion: dict[str, Any]) -> Iterator[Service]:
    """The champion served by the local deployer with the test stack's limits (stopped whatever happens)."""
    port = free_port()
    deployer = LocalDeployer(load_stack(str(write_stack(limits_home, "limits", port))), stop_timeout_s=10)
    try:
        info = deployer.deploy("flight-delay", champion["version"])
        yield Service(info.url, port, Path(str(info.log_path)))
    finally:
        deployer.stop("flight-delay")


def open_sockets(port: int, n: int, payload: bytes = b"") -> list[tuple[socket.socket, float]]:
    """``n`` connections that send ``payload`` (maybe nothing), then nothing more; and when each opened."""
    opened = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            opened.append((s, time.monotonic()))
            if payload:
                s.sendall(payload)
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(opened: list[tuple[socket.socket, float]]) -> None:
    for s, _ in opened:
        s.close()


@dataclass
class Ending:
    after_s: float | None = None  # from when the socket opened to when the server closed it; None: still open
    received: bytes = b""


def wait_closed(opened: list[tuple[socket.socket, float]], within_s: float) -> list[Ending]:
    """Read every socket until the server closes it (EOF or reset) or ``within_s`` from now passes."""
    endings = [Ending() for _ in opened]
    with selectors.DefaultSelector() as sel:
        for i, (s, _) in enumerate(opened):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + within_s
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                i = key.data
                s, opened_at = opened[i]
                try:
                    chunk = s.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    endings[i].received += chunk
                    continue
                endings[i].after_s = time.monotonic() - opened_at
                sel.unregister(s)
    return endings


@dataclass
class PredictLoop:
    """One keep-alive client posting /predict every 50 ms until stopped (at most 30 s)."""

    port: int
    record: dict[str, Any]
    statuses: list[int] = field(default_factory=list)
    slowest_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        body = json.dumps(self.record)
        deadline = time.monotonic() + 30
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                self.statuses.append(response.status)
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                self._stop.wait(0.05)
        except Exception as exc:  # reported by the test, with what it was
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def __enter__(self) -> PredictLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def exchange(s: socket.socket, request: bytes) -> bytes:
    """Send one request on an open connection and read its whole response (Content-Length framed)."""
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = s.recv(4096)
        assert chunk, "connection closed mid-response"
        body += chunk
    return head


MODEL = b"GET /model HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_silent_and_slow_header_clients_are_closed_while_predict_answers(
    service: Service, champion: dict[str, Any]
) -> None:
    service.mark()
    with PredictLoop(service.port, record_from(champion["test"], 0)) as client:
        idle = open_sockets(service.port, 200)
        partial = open_sockets(service.port, 100, PARTIAL_HEADERS)
        try:
            endings = wait_closed(idle + partial, within_s=HEADER_S + 3)
        finally:
            close_all(idle + partial)
    still_open = sum(e.after_s is None for e in endings)
    assert still_open == 0, f"{still_open} of 300 slow connections still open after {HEADER_S + 3:g} s"
    times = [e.after_s for e in endings if e.after_s is not None]
    assert min(times) >= HEADER_S - 0.2 and max(times) <= HEADER_S + 1, (min(times), max(times))
    assert all(e.received == b"" for e in endings[:200])  # nothing was asked: nothing is answered
    assert all(e.received.startswith(REQUEST_TIMEOUT) for e in endings[200:])
    assert not client.errors, client.errors
    assert len(client.statuses) >= 5 and set(client.statuses) == {200}, client.statuses
    assert client.slowest_s < 1.0
    assert "Traceback" not in service.log_since_mark()


def test_a_kept_alive_connection_idles_for_the_keep_alive_timeout_then_has_the_header_timeout(
    service: Service,
) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        assert exchange(s, HEALTH).startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_S + 0.5)  # idle past the header timeout, within the keep-alive one
        assert exchange(s, HEALTH).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        (ending,) = wait_closed([(s, time.monotonic())], within_s=HEADER_S + 2)
    assert ending.after_s is not None and HEADER_S - 0.2 <= ending.after_s <= HEADER_S + 1
    assert ending.received.startswith(REQUEST_TIMEOUT)


def test_a_partial_body_is_answered_408_after_the_body_timeout(service: Service) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(head + b"Content-Length: 1000\r\n\r\n" + b'{"dep_delay": ')
        (ending,) = wait_closed([(s, time.monotonic())], within_s=BODY_S + 2)
    assert ending.received.startswith(REQUEST_TIMEOUT), ending.received[:80]
    # the 408 closes the connection (the rest of the body will never be read)
    assert ending.after_s is not None and ending.after_s <= BODY_S + 1


def test_past_limit_concurrency_requests_get_a_quick_503_and_the_service_recovers(service: Service) -> None:
    service.mark()
    held = open_sockets(service.port, LIMIT)
    extra: list[tuple[socket.socket, float]] = []
    try:
        time.sleep(0.3)  # all accepted: each counts against limit_concurrency
        started = time.monotonic()
        assert http_status(f"{service.url}/model", timeout=5) == 503
        assert time.monotonic() - started < 0.5
        # the probes are answered all the same: a 503 liveness probe would get a healthy process restarted
        assert http_status(f"{service.url}/health", timeout=5) == 200
        assert http_status(f"{service.url}/ready", timeout=5) == 200
        # past max_connections a connection is closed at once; the ones before it stay open
        extra = open_sockets(service.port, MAX_CONNECTIONS - LIMIT + 20)
        endings = wait_closed(extra, within_s=0.5)
        dropped = sum(e.after_s is not None for e in endings)
        assert 20 <= dropped < len(extra), dropped
        # a burst of requests on the held connections: 503s, and uvicorn's warning at most once a second
        answers = []
        for s, _ in held[:200]:
            s.sendall(MODEL)
        for s, _ in held[:200]:
            s.settimeout(5)
            answers.append(s.recv(4096)[:12])
        assert answers.count(b"HTTP/1.1 503") == 200
    finally:
        close_all(held + extra)
    assert wait_for(lambda: http_status(f"{service.url}/health") == 200, HEADER_S + 2, "/health", every=0.1)
    log = service.log_since_mark()
    assert 1 <= log.count("Exceeded concurrency limit") <= 3, log[-2000:]


def test_a_stop_waits_the_graceful_shutdown_timeout_not_for_a_partial_body(
    limits_home: Path, champion: dict[str, Any]
) -> None:
    """``flywheel serve`` with the stack's limits; a client sent half a body and waits: SIGTERM, timed."""
    port = free_port()
    stack = write_stack(limits_home, "limits-serve", port, body_timeout_s=60)  # the shutdown must end it
    log_path = limits_home / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [FLYWHEEL, "serve", "--stack", str(stack), "--problem", "flights"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(f"{url}/ready") == 200, 60, "flywheel serve /ready", every=0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"dep_delay": '
            )
            time.sleep(0.3)
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=GRACE_S + 15)
            took = time.monotonic() - started
            (ending,) = wait_closed([(s, time.monotonic())], within_s=1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = log_path.read_text(errors="replace")
    assert GRACE_S - 0.3 <= took <= GRACE_S + 3, (took, text[-3000:])
    # a clean shutdown, then uvicorn re-raises the SIGTERM it caught (so the exit status says how it ended)
    assert "Finished server process" in text and proc.returncode in (0, -signal.SIGTERM), text[-3000:]
    assert ending.after_s is not None  # the client was let go, not left hanging
    assert "request cancelled: the graceful shutdown timeout passed" in text
    assert "Traceback" not in text, text[-5000:]


def test_the_h11_fallback_closes_slow_clients_too(limits_home: Path) -> None:
    """The protocol used when httptools is missing, under the real app (no model needed for this)."""
    port = free_port()
    stack = write_stack(limits_home, "limits-h11", port)
    env = {**os.environ, "FLYWHEEL_STACK": str(stack), "FLYWHEEL_MODEL": "no-such-model"}
    command = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(port)]
    command += ["--http", "serving.server_protocol:H11ServerProtocol"]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 60, "/health", every=0.2)
        idle = open_sockets(port, 20)
        partial = open_sockets(port, 20, PARTIAL_HEADERS)
        try:
            endings = wait_closed(idle + partial, within_s=HEADER_S + 3)
        finally:
            close_all(idle + partial)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=GRACE_S + 10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    times = [e.after_s for e in endings]
    assert None not in times, times
    assert all(HEADER_S - 0.2 <= t <= HEADER_S + 1 for t in times if t is not None), times
    assert all(e.received == b"" for e in endings[:20])
    assert all(e.received.startswith(REQUEST_TIMEOUT) for e in endings[20:])
