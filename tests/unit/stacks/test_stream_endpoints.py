"""The stream consumers' metrics endpoints: recorded while a consumer runs, read by Prometheus' targets and
the rollout's guardrails; a record of a process that is gone, or one that does not parse, is dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.components import prometheus, stream_endpoints
from stacks.loader import load_stack


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_STACK", raising=False)
    return tmp_path


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_running_consumer_is_a_target_and_a_gone_one_is_not(home: Path) -> None:
    path = stream_endpoints.record("local", "flight-delay", "host-1:42", "127.0.0.1", 40123)
    other = stream_endpoints.record("local", "diamond-price", "c", "127.0.0.1", 40124)
    (found,) = stream_endpoints.recorded("local", "flight-delay")
    assert found.address == "127.0.0.1:40123" and found.url == "http://127.0.0.1:40123"
    assert found.consumer == "host-1:42" and path.parent == stream_endpoints.folder("local")
    assert len(stream_endpoints.recorded("local")) == 2 and stream_endpoints.recorded("staging") == []
    targets = prometheus.recorded_targets(load_stack("local"))
    assert prometheus.Target("127.0.0.1:40123", "flight-delay", "local") in targets
    gone = json.loads(other.read_text()) | {"pid": _dead_pid()}
    other.write_text(json.dumps(gone))
    (path.parent / "garbage.json").write_text("{not json")
    assert [c.model for c in stream_endpoints.recorded("local")] == ["flight-delay"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # the dead and the garbage removed
    stream_endpoints.forget(path)
    stream_endpoints.forget(path)  # twice is fine
    assert stream_endpoints.recorded("local") == []


def test_two_consumer_names_never_share_a_record(home: Path) -> None:
    a = stream_endpoints.record("local", "m", "Consumer A", "127.0.0.1", 1)
    b = stream_endpoints.record("local", "m", "consumer-a", "127.0.0.1", 2)
    assert a != b and {c.address for c in stream_endpoints.recorded("local", "m")} == {
        "127.0.0.1:1",
        "127.0.0.1:2",
    }


def test_the_targets_file_is_rewritten_when_the_last_target_goes(home: Path) -> None:
    stack = load_stack("local")
    path = stream_endpoints.record("local", "flight-delay", "c1", "127.0.0.1", 40125)
    prometheus.refresh(stack)
    targets_file = prometheus.folder_of(stack) / prometheus.TARGETS_FILE
    assert json.loads(targets_file.read_text())[0]["targets"] == ["127.0.0.1:40125"]
    stream_endpoints.forget(path)
    prometheus.refresh(stack)
    assert json.loads(targets_file.read_text()) == []


def test_the_rollout_scrapes_the_consumers_too(home: Path) -> None:
    from flows.rollout import service_urls

    stream_endpoints.record("local", "flight-delay", "c1", "127.0.0.1", 40126)
    assert service_urls(load_stack("local"), "flight-delay") == ["http://127.0.0.1:40126"]  # no service here
