"""The service's request limits against a real uvicorn, started the way the local deployer starts it.

One small champion and one server for the module (always stopped): a 1 GB chunked body, 1,000 empty records,
eight clients flooding it with them beside a normal client, bodies that are not JSON, and a client that goes
away in the middle of its body. The clients are ``benchmarks/hardening_attacks.py``'s (raw sockets), as in
``make bench ARGS="hardening"``.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks import hardening_attacks as attacks
from benchmarks.hardening import BENCH_LIMITS, start_service, write_stack
from benchmarks.serving_procs import Processes, Server, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@dataclass
class Service:
    server: Server
    record: dict[str, Any]
    home: Path
    model: str

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("hardening-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.setenv("FLYWHEEL_STACK", "local")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("WHYLOGS_NO_ANALYTICS", "True")
        from benchmarks import serving_setup as setup
        from stacks.components.tracking import configure_mlflow
        from stacks.loader import load_stack

        configure_mlflow(load_stack("local"))
        trained = setup.train_model(8_000, 20, 5, seed=1)
        setup.register_model(trained, promote=True, reason="hardening e2e")
        record = setup.complete_record(trained.parts.test.X)
        stack = write_stack(home / "hardening-e2e.yaml", "hardening-e2e", free_port(), BENCH_LIMITS)
        with Processes(home / "logs") as procs:
            server, _ = start_service(
                procs, "service", stack, home, trained.spec.model_name, FLYWHEEL_PROFILING="off"
            )
            wait_ready(server, "/ready", 120)
            yield Service(server, record, home, trained.spec.model_name)


def _log_lines(server: Server) -> list[str]:
    return server.log.read_text(errors="replace").splitlines()


def test_gigabyte_chunked_body_is_refused_without_memory_growth(service: Service) -> None:
    with attacks.RssSampler(service.pid, children=False) as rss:
        upload = attacks.chunked_upload(service.port, "/predict", 1 << 30, stop_on_answer=True, limit_s=30)
    assert upload.status == 413, upload
    assert upload.sent_bytes < 100_000_000, f"the server read {upload.sent_bytes:,} bytes before answering"
    assert rss.peak_growth_mb < 50, f"the server process grew {rss.peak_growth_mb:.1f} MB"


def test_thousand_empty_records_get_a_small_422(service: Service) -> None:
    body = json.dumps({"records": [{}] * 1000}).encode()
    assert len(body) < 5_000
    answer = attacks.send(service.port, attacks.request_bytes(service.port, "POST", "/predict/batch", body))
    assert answer.status == 422, answer
    assert len(answer.body) < 10_000, f"a {len(answer.body):,}-byte 422 for a {len(body):,}-byte request"
    assert json.loads(answer.body)["detail"], "the 422 names no error"


def test_rejecting_a_flood_costs_no_more_than_serving_one(service: Service, tmp_path: Path) -> None:
    """Eight clients sending 1,000 empty records (3 KB) once cut a normal client from 2,437 to 2.8 req/s
    (0.001x). A rejected body must cost no more than a scored one, measured twice:

    - the serving process's CPU per request, each body alone on one connection: a 422 of 1,000 empty
      records costs no more than scoring 1,000 valid rows (the body it would be), nor more than scoring the
      cheapest valid request (one row) by half again (it costs about what one row does);
    - beside the 422 flood a normal client keeps more than beside eight clients of valid 1,000-row batches,
      and at least half of what it keeps beside eight clients of single rows (0.8 of it in the benchmark,
      ``make bench ARGS="hardening"``, with longer phases: on two shared cores this ratio moves by a fifth
      from run to run, 0.79x once in CI, when the amplification it guards against was 0.001x).

    (Half its solo throughput is out of reach for any request: a closed-loop client sharing one worker with
    eight others waits for theirs.)"""
    single = json.dumps(service.record).encode()
    bodies = {
        "empty": {"records": [{}] * 1000},
        "valid batch": {"records": [service.record] * 1000},
        "valid row": service.record,
    }
    paths = {"empty": "/predict/batch", "valid batch": "/predict/batch", "valid row": "/predict"}
    answered = {name: {"422" if name == "empty" else "200"} for name in bodies}
    raw = {name: json.dumps(body).encode() for name, body in bodies.items()}
    for name, body in raw.items():
        tmp_path.joinpath(f"{name}.json").write_bytes(body)
    attacks.closed_loop(service.port, "/predict", single, 0.5)  # warm-up
    cpu_ms: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(3):
        for name in bodies:
            cost, loop = attacks.server_cpu_ms(service.pid, service.port, paths[name], raw[name], 1.0)
            assert set(loop.statuses) == answered[name] and loop.hangs == 0 and loop.errors == 0, loop
            cpu_ms[name].append(cost)
    cost_ms = {name: statistics.median(values) for name, values in cpu_ms.items()}
    costs = ", ".join(f"{n} {ms:.3f} ms" for n, ms in cost_ms.items())
    assert cost_ms["empty"] <= cost_ms["valid batch"], f"server CPU per request: {costs}"
    assert cost_ms["empty"] <= 1.5 * cost_ms["valid row"], f"server CPU per request: {costs}"

    alone = attacks.closed_loop(service.port, "/predict", single, 3)
    samples: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(3):  # interleaved rounds, medians
        for name in bodies:
            flood = attacks.start_flood(service.port, paths[name], tmp_path / f"{name}.json", 8, 4.5)
            time.sleep(1)
            beside = attacks.closed_loop(service.port, "/predict", single, 3)
            flooded = attacks.finish_flood(flood, 4.5)
            assert beside.statuses == {"200": beside.requests}, beside
            clean = flooded.hangs == 0 and flooded.errors == 0
            assert set(flooded.statuses) == answered[name] and clean, flooded
            samples[name].append(beside.rps / alone.rps)
    kept = {name: statistics.median(values) for name, values in samples.items()}
    shown = ", ".join(f"beside {n}: {r:.2f}x" for n, r in kept.items())
    context = f"alone {alone.rps:,.0f} req/s; {shown}; server CPU per request: {costs}"
    assert kept["empty"] > kept["valid batch"], context
    assert kept["empty"] >= 0.5 * kept["valid row"], context


@pytest.mark.parametrize("path", ["/predict", "/feedback"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", None), ("application/x-www-form-urlencoded", b"request_id=x&label=1")],
)
def test_bodies_that_are_not_json_get_415(
    service: Service, path: str, content_type: str, body: bytes | None
) -> None:
    payload = body if body is not None else json.dumps(service.record).encode()
    answer = attacks.send(
        service.port, attacks.request_bytes(service.port, "POST", path, payload, content_type)
    )
    assert answer.status == 415, answer


def test_client_gone_mid_body_is_one_log_line_and_no_traceback(service: Service) -> None:
    before = len(_log_lines(service.server))
    attacks.disconnect_mid_body(service.port, "/predict")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(_log_lines(service.server)) == before:
        time.sleep(0.1)
    time.sleep(1)  # anything else the disconnect leads to is logged by now
    lines = _log_lines(service.server)
    added = lines[before:]
    assert len(added) == 1, f"{len(added)} log lines for one client gone mid-body: {added}"
    assert "Traceback" not in "\n".join(lines)
    assert attacks.post(service.port, "/predict", service.record).status == 200


def test_a_request_cut_off_by_the_shutdown_timeout_is_a_503_with_connection_close(service: Service) -> None:
    """A second service from the same home, with a body timeout longer than its graceful-shutdown timeout:
    a client sends its headers and part of its body, the service gets SIGTERM. At the shutdown timeout the
    request is cancelled and answered 503 (uvicorn's answer was a 500), the connection closed, the process
    gone soon after."""
    grace_s = 2
    limits = {**BENCH_LIMITS, "body_timeout_s": 30.0, "graceful_shutdown_timeout_s": grace_s}
    stack = write_stack(service.home / "shutdown-e2e.yaml", "shutdown-e2e", free_port(), limits)
    with Processes(service.home / "logs-shutdown") as procs:
        server, _ = start_service(
            procs, "shutdown", stack, service.home, service.model, FLYWHEEL_PROFILING="off"
        )
        wait_ready(server, "/ready", 120)
        sock = attacks.partial_body_client(server.port)
        try:
            time.sleep(0.3)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            sock.settimeout(grace_s + 10)
            received = b""
            while chunk := sock.recv(65536):  # to the server's close
                received += chunk
            answered_s = time.monotonic() - signalled
        finally:
            sock.close()
        server.process.wait(timeout=10)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 503"), received[:300]
    assert headers.get("connection") == "close" and headers.get("retry-after") == "1", headers
    assert "shutting down" in json.loads(body)["detail"]
    assert grace_s - 0.3 <= answered_s <= grace_s + 3, answered_s
    log = server.log.read_text(errors="replace")
    assert "request cancelled: the graceful shutdown timeout passed" in log and "Traceback" not in log, log[
        -3000:
    ]
