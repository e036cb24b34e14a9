"""Fixtures for the stack tests: an isolated flywheel home, a clean environment, local HTTP servers.

Every test here runs with `FLYWHEEL_HOME` in a temporary folder and without the variables
that select a stack or hold secrets, so nothing depends on (or writes to) the developer's
machine, and no test reaches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

# Environment variables the shipped stacks' references point to, plus the selectors.
ENV_TO_CLEAR = (
    "FLYWHEEL_STACK",
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_USERNAME",
    "MLFLOW_PASSWORD",
    "SERVING_AUTH_TOKEN",
    "FLYWHEEL_OPTUNA_DB_URL",
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh flywheel home for each test; the stack selectors and secrets unset."""
    folder = tmp_path / "flywheel-home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(folder))
    for var in ENV_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    return folder


def _minimal_stack(**components: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "stack_name": "mini",
        "components": {
            "orchestrator": {"name": "runner", "flavor": "prefect", "configuration": {}},
            "artifact_store": {"name": "store", "flavor": "local", "configuration": {"path": "artifacts"}},
        },
    }
    doc["components"].update(components)
    return doc


@pytest.fixture
def minimal() -> Callable[..., dict[str, Any]]:
    """Build the smallest valid stack document, with extra or replaced components as keywords."""
    return _minimal_stack


@pytest.fixture
def write_stack(tmp_path: Path) -> Callable[..., Path]:
    """Write a stack document to a YAML file in tmp_path and return its path."""

    def write(doc: dict[str, Any], name: str = "stack.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class _Health(http.server.BaseHTTPRequestHandler):
    healthy_paths: tuple[str, ...] = ("/health", "/api/health")

    def do_GET(self) -> None:
        ok = self.path in self.healthy_paths
        body = b"true" if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def health_server() -> Iterator[str]:
    """A local HTTP server answering 200 on /health and /api/health; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PrefectBlocks:
    """A stand-in Prefect API: its URL, the Secret blocks it holds, the requests it received."""

    url: str
    blocks: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)


def _block_document(name: str, value: Any) -> dict[str, Any]:
    """A block document as Prefect's server returns it for a Secret block read with its secrets."""
    return {
        "id": str(uuid.uuid4()),
        "created": "2025-01-01T00:00:00Z",
        "updated": "2025-01-01T00:00:00Z",
        "name": name,
        "data": {"value": value},
        "block_schema_id": str(uuid.uuid4()),
        "block_type_id": str(uuid.uuid4()),
        "block_type_name": "Secret",
        "block_document_references": {},
        "is_anonymous": False,
    }


@contextlib.contextmanager
def _serve_prefect_blocks() -> Iterator[PrefectBlocks]:
    prefix = "/api/block_types/slug/secret/block_documents/name/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Authorization")))
            path, _, query = self.path.partition("?")
            name = path.removeprefix(prefix) if path.startswith(prefix) else None
            if name in state.blocks and "include_secrets=true" in query.lower():
                status, body = 200, json.dumps(_block_document(name, state.blocks[name])).encode()
            else:
                status, body = 404, b'{"detail": "Block document not found"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = PrefectBlocks(url=f"http://127.0.0.1:{server.server_address[1]}/api")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def start_prefect_blocks() -> Iterator[Callable[[], PrefectBlocks]]:
    """Start stand-in Prefect APIs on demand (see `prefect_blocks`); all are stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(_serve_prefect_blocks())


@pytest.fixture
def prefect_blocks(start_prefect_blocks: Callable[[], PrefectBlocks]) -> PrefectBlocks:
    """A local HTTP server speaking the one Prefect endpoint a secret lookup uses (read a block by name).

    `GET /api/block_types/slug/secret/block_documents/name/<name>?include_secrets=true` answers the
    block document of `blocks[name]`, else 404 as Prefect does; every request is recorded.
    """
    return start_prefect_blocks()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """The URL of a port that accepts connections and never answers (a hung server); yields its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # the kernel completes the handshakes; nothing ever reads or replies
        yield f"http://127.0.0.1:{s.getsockname()[1]}/api"
