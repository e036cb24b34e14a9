"""Streaming end to end, with a real redis-server and ``flywheel stream serve`` processes: 10,000 records at
a steady rate, one bad record among them, the first consumer killed (SIGKILL, its whole process group, as a
container dies) mid-stream and a second one started, and the champion moved to another version while the
stream runs. Every record gets a prediction (duplicates allowed, counted), the bad one a dead letter with
the API's 422 body, predictions switch version once and for good, and the streamed predictions reach the
prediction log (``flywheel explain-request`` finds one). Each consumer serves its metrics on a free port
(``metrics_port: 0``), recorded while it runs and written to the stack's Prometheus targets; the killed
one's record is dropped, the stopped one's removed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import redis
import requests as requests_lib
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.contracts.model_version import CHAMPION
from flywheel.contracts.stream import (
    ERROR_FIELD,
    MODEL_VERSION_FIELD,
    PREDICTION_FIELD,
    RECORD_FIELD,
    SOURCE_ID_FIELD,
    STATUS_FIELD,
)
from serving.app import create_app
from serving.settings import ServiceSettings
from stacks.components import prometheus, stream_endpoints
from stacks.config import RedisStreamConfig
from stacks.loader import load_stack
from tests.e2e.support import Timeline, isolated_home, start_detached, wait_for
from tests.redis_server import redis_server
from tests.unit.serving.conftest import record_from, train_and_register

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
MODEL = "flight-delay"
RECORDS = 10_000
RATE = 1_000  # records per second: the stream lasts about ten seconds
BAD_AT = 5_000


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory, "stream-home") as home:
        yield home


@pytest.fixture(scope="module")
def versions(home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> dict[str, Any]:
    """v1 the champion, v2 registered beside it (the alias moves to it mid-stream)."""
    first = train_and_register(flights_sample, weather, rounds=30)
    second = train_and_register(flights_sample, weather, rounds=60)
    MlflowClient().set_registered_model_alias(MODEL, CHAMPION, first["version"])
    return {"v1": first["version"], "v2": second["version"], "test": first["test"]}


def _stack_file(home: Path, url: str) -> Path:
    doc = load_stack("local").to_dict()
    doc["components"]["stream"] = {
        "name": "redis-test",
        "flavor": "redis",
        "configuration": {
            "url": url,
            "claim_idle_ms": 1000,
            "block_ms": 100,
            "batch_size": 100,
            "metrics_port": 0,
        },
    }
    path = home / "stream-stack.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _consumer(stack: Path, name: str, home: Path) -> subprocess.Popen[bytes]:
    """A consumer in its own process group: the profiler child dies with it."""
    command = [FLYWHEEL, "stream", "serve", "--stack", str(stack), "--model", MODEL, "--name", name]
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_PROFILE_WINDOW_S": "2"}
    return start_detached([*command, "--watch-interval", "0.5"], home / f"{name}.log", env)


def _consumers_in_group(r: Any, stream: str) -> set[str]:
    try:
        return {c["name"].decode() for c in r.xinfo_consumers(stream, "flywheel")}
    except redis.ResponseError:
        return set()


def _pending_of(r: Any, stream: str, consumer: str) -> int:
    return sum(c["pending"] for c in r.xinfo_consumers(stream, "flywheel") if c["name"] == consumer.encode())


def test_a_stream_survives_a_killed_consumer_and_a_model_swap(home: Path, versions: dict[str, Any]) -> None:
    say = Timeline()
    test = versions["test"]
    good = [orjson.dumps(record_from(test, i % len(test.frame))) for i in range(RECORDS)]
    bad_record = {**record_from(test, 0), "distance": "far"}
    with redis_server() as url:
        stack = _stack_file(home, url)
        stack_name = load_stack(str(stack)).name
        requests, predictions, dead_letters = RedisStreamConfig(url=url).stream_names(MODEL)
        r: Any = redis.Redis.from_url(url)
        first = _consumer(stack, "c1", home)
        second: subprocess.Popen[bytes] | None = None
        sent: list[str] = []
        held = 0
        try:
            # the consumer joins the group on its first read; records sent before that are served too
            wait_for(lambda: "c1" in _consumers_in_group(r, requests), 90, "consumer c1 to join", every=0.2)
            say("c1 reading")
            (c1,) = stream_endpoints.recorded(stack_name, MODEL)
            scraped = requests_lib.get(f"{c1.url}/metrics", timeout=5).text
            assert c1.consumer == "c1" and "flywheel_stream_records_total" in scraped
            targets = json.loads((prometheus.folder_of(load_stack(str(stack))) / "targets.json").read_text())
            assert {"targets": [c1.address], "labels": {"model": MODEL, "stack": stack_name}} in targets

            def produce() -> None:
                start = time.monotonic()
                for i, body in enumerate(good):
                    if i == BAD_AT:
                        sent.append(r.xadd(requests, {RECORD_FIELD: orjson.dumps(bad_record)}).decode())
                    sent.append(r.xadd(requests, {RECORD_FIELD: body}).decode())
                    if i % 50 == 49:
                        time.sleep(max(0.0, start + (i + 1) / RATE - time.monotonic()))

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            wait_for(lambda: r.xlen(predictions) >= 1_500, 60, "1,500 predictions by c1", every=0.05)
            # stopped first: Redis hands the records that arrive to its waiting read (they are pending
            # for c1 from then on), which c1 never answers; then killed, as a container dies
            os.killpg(first.pid, signal.SIGSTOP)
            wait_for(lambda: _pending_of(r, requests, "c1") > 0, 30, "records pending for c1", every=0.05)
            held = _pending_of(r, requests, "c1")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            say(f"c1 killed (SIGKILL) holding {held} records, {r.xlen(predictions):,} predictions written")
            assert [
                c.consumer for c in stream_endpoints.recorded(stack_name, MODEL)
            ] == []  # c1's was dropped
            second = _consumer(stack, "c2", home)
            wait_for(lambda: r.xlen(predictions) >= 6_500, 120, "6,500 predictions", every=0.1)
            MlflowClient().set_registered_model_alias(MODEL, CHAMPION, versions["v2"])
            say(f"champion alias moved to v{versions['v2']} at {r.xlen(predictions):,} predictions")
            producer.join(60)
            say(f"producer done: {len(sent):,} records sent")

            def all_answered() -> bool:
                answered = {f[SOURCE_ID_FIELD.encode()] for _, f in r.xrange(predictions)}
                return len(answered) >= RECORDS and r.xlen(dead_letters) >= 1

            wait_for(all_answered, 120, "a prediction for every record", every=0.5)
            say("every record answered")
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        assert second is not None
        assert second.wait(60) == 0
        assert stream_endpoints.recorded(stack_name) == []  # c2 removed its record as it stopped
        assert not list(stream_endpoints.folder(stack_name).glob("*.json"))
        summary = (home / "c2.log").read_text().strip().splitlines()[-1]
        say(f"c2: {summary}")
        out = [(i.decode(), {k.decode(): v for k, v in f.items()}) for i, f in r.xrange(predictions)]
        dead = [{k.decode(): v for k, v in f.items()} for _, f in r.xrange(dead_letters)]
        r.close()

    bad_id = sent[BAD_AT]
    valid = set(sent) - {bad_id}
    answered = [o[SOURCE_ID_FIELD].decode() for _, o in out]
    assert set(answered) == valid  # none lost, none invented
    duplicates = len(answered) - len(set(answered))
    found = re.search(r"([\d,]+) claimed from other consumers", summary)
    assert found, summary
    claimed = int(found.group(1).replace(",", ""))
    say(f"{len(answered):,} predictions, {len(valid):,} records: {duplicates} duplicates, {claimed} claimed")
    assert claimed >= held  # what c1 held was claimed by c2 once it sat claim_idle_ms
    assert duplicates <= claimed  # a record is answered twice only if a consumer took over a held one

    (letter,) = dead
    assert letter[SOURCE_ID_FIELD].decode() == bad_id and int(letter[STATUS_FIELD]) == 422
    with TestClient(create_app(ServiceSettings(stack=None, model_name=MODEL, profiling=False))) as api:
        assert orjson.loads(letter[ERROR_FIELD]) == api.post("/predict", json=bad_record).json()

    served_by = [o[MODEL_VERSION_FIELD].decode() for _, o in out]
    switch = served_by.index(versions["v2"])
    assert set(served_by[:switch]) == {versions["v1"]} and set(served_by[switch:]) == {versions["v2"]}
    after = len(served_by) - switch
    say(f"v{versions['v1']} answered {switch:,}, v{versions['v2']} the {after:,} after the swap")

    rid = orjson.loads(out[-1][1][PREDICTION_FIELD])["request_id"]
    explained = CliRunner().invoke(app, ["explain-request", rid, "--model", MODEL])
    assert explained.exit_code == 0, explained.output
    assert f"v{versions['v2']}" in explained.output
