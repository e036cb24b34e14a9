"""The stream consumer against a real redis-server: records judged and answered as ``POST /predict`` judges
and answers them, dead letters with the API's error text, ids that ``/feedback`` accepts, a record that
keeps killing its consumers set aside, and a Redis restart waited out."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from flywheel.contracts.rollout import RolloutState
from flywheel.contracts.stream import (
    ERROR_FIELD,
    MODEL_VERSION_FIELD,
    POISON_STATUS,
    PREDICTION_FIELD,
    RECORD_FIELD,
    SOURCE_ID_FIELD,
    STATUS_FIELD,
)
from serving.app import create_app
from serving.holder import ModelHolder
from serving.request_ids import RequestIds, stack_key
from serving.settings import ServiceSettings
from serving.stream.consumer import StreamConsumer, StreamMetrics
from serving.stream.records import judge
from stacks.components import model_versions
from stacks.config import RedisStreamConfig
from stacks.loader import load_stack
from steps.rollout import guardrails
from tests.redis_server import free_port, redis_server
from tests.unit.serving.conftest import record_from, train_and_register, wait_for

MODEL = "flight-delay"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def training_data(flights_sample: Any, weather: Any) -> tuple[Any, Any]:
    """What a second version of the champion's model learns from (a rollout's candidate)."""
    return flights_sample, weather


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    yield r
    r.close()


def _consumer(url: str, champion: dict[str, Any], **config: Any) -> StreamConsumer:
    cfg = RedisStreamConfig(url=url, block_ms=50, **config)
    metrics = StreamMetrics()
    holder = ModelHolder(MODEL, metrics, 1000)
    holder.load(champion["version"])
    ids = RequestIds(stack_key(load_stack("local")), 86400, MODEL)
    return StreamConsumer(cfg, url, MODEL, holder, ids, metrics, consumer_name="test")


def _running(consumer: StreamConsumer) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def _entries(r: Any, stream: str) -> list[dict[str, bytes]]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in r.xrange(stream)]


def _api(champion: dict[str, Any]) -> TestClient:
    return TestClient(create_app(ServiceSettings(stack=None, model_name=MODEL, profiling=False)))


def _serve_until(
    consumer: StreamConsumer, client: Any, outputs: int, then: Callable[[], bool] | None = None
) -> None:
    """Run ``consumer`` on a thread until ``outputs`` predictions are written (and ``then`` holds), then
    stop it."""
    stop, thread = _running(consumer)
    try:
        assert wait_for(lambda: client.xlen(consumer.output) >= outputs, 30)
        if then is not None:
            assert wait_for(then, 10)
    finally:
        stop.set()
        thread.join(10)


@contextlib.contextmanager
def _rollout(
    consumer: StreamConsumer,
    champion: dict[str, Any],
    data: tuple[Any, Any],
    stage: Literal["shadow", "canary"],
    fraction: float,
    key: str | None = None,
) -> Iterator[RolloutState]:
    """A second version in a rollout step beside the champion, loaded by ``consumer``'s holder; the
    champion alone again afterwards."""
    candidate = train_and_register(*data, rounds=33)["version"]
    model_versions.make_champion(MODEL, champion["version"])
    state = RolloutState(candidate, champion["version"], stage, fraction, 1, 2, time.time(), key=key)
    model_versions.set_rollout(MODEL, state)
    try:
        consumer.holder.refresh_rollout()
        rollout = consumer.holder.rollout
        assert rollout is not None and rollout.candidate.version == candidate
        yield state
    finally:
        model_versions.set_rollout(MODEL, None)
        model_versions.make_champion(MODEL, champion["version"])


def _series(consumer: StreamConsumer, name: str, version: str, role: str) -> float:
    labels = {"version": version, "role": role}
    return consumer.metrics.registry.get_sample_value(name, labels) or 0.0


ROWS = "flywheel_version_scored_rows_total"


def test_records_are_answered_as_the_api_answers_them(
    champion: dict[str, Any], client: Any, redis_url: str, serving_home: Path
) -> None:
    consumer = _consumer(redis_url, champion, batch_size=64)
    records = [record_from(champion["test"], i) for i in range(300)]
    ids = [client.xadd(consumer.input, {RECORD_FIELD: orjson.dumps(r)}).decode() for r in records]
    try:
        _serve_until(consumer, client, 300)
    finally:
        consumer.close()
    out = _entries(client, consumer.output)
    assert [o[SOURCE_ID_FIELD].decode() for o in out] == ids  # one each, in the order sent
    assert {o[MODEL_VERSION_FIELD].decode() for o in out} == {champion["version"]}
    assert client.xinfo_groups(consumer.input)[0]["pending"] == 0  # every record acknowledged
    with _api(champion) as api:
        for record, entry in list(zip(records, out, strict=True))[:50]:
            streamed = orjson.loads(entry[PREDICTION_FIELD])
            answered = api.post("/predict", json=record).json()
            assert streamed["prediction"] == answered["prediction"]
            assert (
                streamed["decision"] == answered["decision"]
                and streamed["threshold"] == answered["threshold"]
            )
            assert streamed["model_version"] == answered["model_version"]
        # a streamed prediction's request id is one the service's /feedback takes
        rid = orjson.loads(out[7][PREDICTION_FIELD])["request_id"]
        assert rid.endswith(":7") or ":" in rid
        sent = api.post("/feedback", json={"request_id": rid, "label": 1})
        assert sent.status_code == 202, sent.text


def test_bad_records_go_to_the_dead_letters_with_the_apis_error(
    champion: dict[str, Any], client: Any, redis_url: str, serving_home: Path
) -> None:
    consumer = _consumer(redis_url, champion, max_record_bytes=4096)
    good = record_from(champion["test"], 0)
    wrong_type = {**good, "distance": "far"}
    unknown = {**good, "colour": "red"}
    bad = {
        "wrong type": orjson.dumps(wrong_type),
        "unknown field": orjson.dumps(unknown),
        "not JSON": b"{nope",
        "too big": b'{"x": "' + b"a" * 5000 + b'"}',
    }
    sent = {client.xadd(consumer.input, {RECORD_FIELD: body}).decode(): why for why, body in bad.items()}
    sent[client.xadd(consumer.input, {"something": b"else"}).decode()] = "no record"
    client.xadd(consumer.input, {RECORD_FIELD: orjson.dumps(good)})
    stop, thread = _running(consumer)
    try:
        assert wait_for(lambda: client.xlen(consumer.dead_letters) >= 5 and client.xlen(consumer.output) >= 1)
    finally:
        stop.set()
        thread.join(10)
        consumer.close()
    dead = {d[SOURCE_ID_FIELD].decode(): d for d in _entries(client, consumer.dead_letters)}
    assert set(dead) == set(sent)
    status = {sent[i]: int(d[STATUS_FIELD]) for i, d in dead.items()}
    assert status == {
        "wrong type": 422,
        "unknown field": 422,
        "not JSON": 400,
        "too big": 413,
        "no record": 400,
    }
    errors = {sent[i]: orjson.loads(d[ERROR_FIELD]) for i, d in dead.items()}
    with _api(champion) as api:  # the same body the API gives the same record
        for why, record in (("wrong type", wrong_type), ("unknown field", unknown)):
            assert errors[why] == api.post("/predict", json=record).json(), why
        assert (
            errors["not JSON"]
            == api.post("/predict", content=b"{nope", headers={"content-type": "application/json"}).json()
        )
    assert errors["too big"] == {"detail": "request body over 4096 bytes"}
    assert RECORD_FIELD not in next(d for i, d in dead.items() if sent[i] == "too big")  # never copied
    assert next(d for i, d in dead.items() if sent[i] == "not JSON")[RECORD_FIELD] == b"{nope"
    assert "'record' field" in errors["no record"]["detail"]


def test_a_record_that_keeps_killing_consumers_is_set_aside(
    champion: dict[str, Any], client: Any, redis_url: str, serving_home: Path
) -> None:
    consumer = _consumer(redis_url, champion, claim_idle_ms=100, max_deliveries=3)
    consumer._ensure_group()
    good = orjson.dumps(record_from(champion["test"], 0))
    poison = client.xadd(consumer.input, {RECORD_FIELD: good})
    # taken by consumers that died with it: delivered once, then claimed three more times
    client.xreadgroup("flywheel", "ghost", {consumer.input: ">"}, count=1)
    for n in range(3):
        client.xclaim(consumer.input, "flywheel", f"ghost-{n}", 0, [poison])
    client.xadd(consumer.input, {RECORD_FIELD: good})
    stop, thread = _running(consumer)
    try:
        assert wait_for(lambda: client.xlen(consumer.dead_letters) >= 1 and client.xlen(consumer.output) >= 1)
    finally:
        stop.set()
        thread.join(10)
        consumer.close()
    (dead,) = _entries(client, consumer.dead_letters)
    assert dead[SOURCE_ID_FIELD] == poison and int(dead[STATUS_FIELD]) == POISON_STATUS
    assert "taken 5 times without an outcome (max_deliveries 3)" in orjson.loads(dead[ERROR_FIELD])["detail"]
    assert client.xinfo_groups(consumer.input)[0]["pending"] == 0
    assert consumer.counts.claimed == 1 and consumer.metrics.stream_claimed._value.get() == 1


def test_the_judge_takes_only_the_record_field(champion: dict[str, Any], serving_home: Path) -> None:
    holder = ModelHolder(MODEL, StreamMetrics(), 10)
    served = holder.load(champion["version"])
    record = record_from(champion["test"], 0)
    judged = judge((b"1-0", {b"record": orjson.dumps(record)}), served, 10_000)
    assert isinstance(judged, dict) and set(judged) == set(served.record.model_fields)


def test_a_redis_that_goes_away_is_waited_for(champion: dict[str, Any], serving_home: Path) -> None:
    port = free_port()
    good = orjson.dumps(record_from(champion["test"], 0))
    with redis_server(port) as url:
        consumer = _consumer(url, champion)
        stop, thread = _running(consumer)
        r: Any = redis.Redis.from_url(url)
        r.xadd(consumer.input, {RECORD_FIELD: good})
        assert wait_for(lambda: r.xlen(consumer.output) == 1)
    try:  # the server is gone: the loop counts the failures and keeps trying
        assert wait_for(lambda: consumer.metrics.stream_errors._value.get() >= 1)
        assert thread.is_alive()
        with redis_server(port):  # a new, empty server: the group is made again, the record served
            r = redis.Redis.from_url(url)
            wait_for(lambda: r.exists(consumer.input), 30)
            r.xadd(consumer.input, {RECORD_FIELD: good})
            assert wait_for(lambda: r.xlen(consumer.output) == 1, 30)
            r.close()
    finally:
        stop.set()
        thread.join(15)
        consumer.close()
    assert not thread.is_alive()


def _stream_stack(tmp_path: Path, url: str) -> Path:
    doc = load_stack("local").to_dict()
    doc["components"]["stream"] = {"name": "r", "flavor": "redis", "configuration": {"url": url}}
    path = tmp_path / "stream-stack.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_send_status_and_peek(
    champion: dict[str, Any], client: Any, redis_url: str, serving_home: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from flywheel.cli import app

    stack = str(_stream_stack(tmp_path, redis_url))
    table = champion["test"].frame.head(20).copy()
    table["not_a_feature"] = 1  # left out: only the champion's feature columns are sent
    table.to_csv(tmp_path / "rows.csv", index=False)
    lines = tmp_path / "records.jsonl"
    lines.write_bytes(orjson.dumps(record_from(champion["test"], 0)) + b"\n\n{nope\n")
    runner = CliRunner()
    sent = runner.invoke(app, ["stream", "send", str(tmp_path / "rows.csv"), "--stack", stack, "-m", MODEL])
    assert sent.exit_code == 0, sent.output
    assert "sent 20 records to flywheel:flight-delay:requests" in sent.output
    sent = runner.invoke(app, ["stream", "send", str(lines), "--stack", stack, "-m", MODEL])
    assert "sent 2 records" in sent.output  # the blank line is no record; the bad one is the consumer's call
    names = champion["schema"].names
    records = [f[b"record"] for _, f in client.xrange("flywheel:flight-delay:requests")]
    assert all(list(orjson.loads(r)) == names for r in records[:20]) and records[21] == b"{nope"
    consumer = _consumer(redis_url, champion)
    assert consumer.step(consumer.holder.current) == 22  # type: ignore[arg-type]
    consumer.close()
    status = runner.invoke(app, ["stream", "status", "--stack", stack, "-m", MODEL])
    assert status.exit_code == 0, status.output
    assert "predictions   flywheel:flight-delay:predictions: 21 entries" in status.output
    assert "dead letters  flywheel:flight-delay:dead-letter: 1 entry" in status.output
    assert "0 pending" in status.output and "consumer      test: 0 pending" in status.output
    peeked = runner.invoke(app, ["stream", "peek", "--dead-letters", "--stack", stack, "-m", MODEL])
    (letter,) = [orjson.loads(line) for line in peeked.output.splitlines()]
    assert letter["status"] == "400" and letter["record"] == "{nope"
    doc = load_stack("local").to_dict()
    del doc["components"]["stream"]
    (tmp_path / "no-stream.yaml").write_text(yaml.safe_dump(doc))
    no_stream = runner.invoke(
        app, ["stream", "status", "--stack", str(tmp_path / "no-stream.yaml"), "-m", MODEL]
    )
    assert no_stream.exit_code == 1 and "the stack names no stream component; add one" in no_stream.output


def test_a_shadow_step_scores_a_copy_of_each_read(
    champion: dict[str, Any],
    client: Any,
    redis_url: str,
    serving_home: Path,
    training_data: tuple[Any, Any],
) -> None:
    """During a rollout's shadow step the champion still answers every record, and the candidate scores the
    same rows off the loop: counted by version and role as the REST service counts them."""
    consumer = _consumer(redis_url, champion, batch_size=50)
    with _rollout(consumer, champion, training_data, "shadow", 0.0) as state:
        for i in range(200):
            client.xadd(consumer.input, {RECORD_FIELD: orjson.dumps(record_from(champion["test"], i))})
        try:
            _serve_until(
                consumer, client, 200, lambda: _series(consumer, ROWS, state.candidate, "shadow") == 200
            )
        finally:
            consumer.close()
    assert _series(consumer, ROWS, champion["version"], "champion") == 200
    answered = {o[MODEL_VERSION_FIELD].decode() for o in _entries(client, consumer.output)}
    assert answered == {champion["version"]}
    agreed = consumer.metrics.registry.get_sample_value("flywheel_shadow_decisions_total", {"agree": "true"})
    assert (agreed or 0.0) > 150  # two models of the same data mostly decide alike


def test_a_canary_step_answers_its_share_with_the_candidate(
    champion: dict[str, Any],
    client: Any,
    redis_url: str,
    serving_home: Path,
    training_data: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a canary step the candidate answers the records whose key hashes under the fraction (the spec's
    key field: one carrier, one version), each prediction names its version and the read's order is kept;
    a candidate that fails to score is answered for by the champion, counted against the candidate."""
    consumer = _consumer(redis_url, champion, batch_size=50)
    records = [record_from(champion["test"], i) for i in range(300)]
    with _rollout(consumer, champion, training_data, "canary", 0.5, key="carrier") as state:
        candidate = state.candidate
        sent = [client.xadd(consumer.input, {RECORD_FIELD: orjson.dumps(r)}).decode() for r in records]
        _serve_until(consumer, client, 300)
        outputs = _entries(client, consumer.output)
        assert [o[SOURCE_ID_FIELD].decode() for o in outputs] == sent  # in the order read
        by_carrier: dict[str, set[str]] = {}
        for record, out in zip(records, outputs, strict=True):
            version = out[MODEL_VERSION_FIELD].decode()
            assert orjson.loads(out[PREDICTION_FIELD])["model_version"] == version
            by_carrier.setdefault(str(record["carrier"]), set()).add(version)
            assert version == (candidate if state.answers(record["carrier"]) else champion["version"])
        assert all(len(versions) == 1 for versions in by_carrier.values())  # a stable hash of the key
        answered = {v for versions in by_carrier.values() for v in versions}
        assert answered == {candidate, champion["version"]}, by_carrier
        canary_rows = _series(consumer, ROWS, candidate, "canary")
        assert (
            canary_rows > 0 and canary_rows + _series(consumer, ROWS, champion["version"], "champion") == 300
        )

        def broken(matrix: Any) -> Any:
            raise RuntimeError("injected fault in the candidate")

        assert consumer.holder.rollout is not None
        monkeypatch.setattr(consumer.holder.rollout.candidate, "predict", broken)
        client.delete(consumer.output)
        for r in records:
            client.xadd(consumer.input, {RECORD_FIELD: orjson.dumps(r)})
        try:
            _serve_until(consumer, client, 300)
        finally:
            consumer.close()
    again = {o[MODEL_VERSION_FIELD].decode() for o in _entries(client, consumer.output)}
    assert again == {champion["version"]}  # every record answered, by the champion
    failed = _series(consumer, "flywheel_version_errors_total", candidate, "canary")
    assert failed >= 1  # one per read whose canary share failed, as a failed batch request counts once
    assert client.xlen(consumer.dead_letters) == 0
    page = guardrails.parse(generate_latest(consumer.metrics.registry).decode())
    figures = page[(candidate, "canary")]
    assert figures.errors == failed and figures.error_rate > 0.3  # the guardrail sees the broken canary
