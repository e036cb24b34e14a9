"""How a canary step splits a stream read: the same stable hash as the REST service's, on the spec's key
field when the record has it, else on the entry's id; the read's order restored from the ids."""

from __future__ import annotations

import orjson

from flywheel.contracts.rollout import RolloutState
from flywheel.contracts.stream import RECORD_FIELD
from serving.stream.records import Entry, canary_key, split_canary, stream_order

LIMIT = 10_000


def _entry(n: int, record: object) -> Entry:
    return (f"{1_700_000_000_000 + n}-{n % 3}".encode(), {RECORD_FIELD.encode(): orjson.dumps(record)})


def _state(fraction: float, key: str | None) -> RolloutState:
    return RolloutState("2", "1", "canary", fraction, 2, 3, 0.0, key=key)


def test_the_key_field_decides_as_it_does_for_rest_requests() -> None:
    state = _state(0.5, "carrier")
    entries = [_entry(i, {"carrier": c, "distance": i}) for i, c in enumerate(["AA", "B6", "DL", "UA"] * 25)]
    champion, candidate = split_canary(entries, state, LIMIT)
    assert len(champion) + len(candidate) == 100
    for entry in candidate:
        assert state.answers(orjson.loads(entry[1][RECORD_FIELD.encode()])["carrier"])
    for entry in champion:
        assert not state.answers(orjson.loads(entry[1][RECORD_FIELD.encode()])["carrier"])


def test_without_the_key_the_entry_id_decides_and_a_redelivery_gets_the_same_version() -> None:
    state = _state(0.3, "carrier")
    entries = [_entry(i, {"distance": i}) for i in range(2_000)]
    _, candidate = split_canary(entries, state, LIMIT)
    assert 0.25 < len(candidate) / len(entries) < 0.35
    assert split_canary(entries, state, LIMIT)[1] == candidate
    assert canary_key(entries[0], "carrier", LIMIT) == entries[0][0].decode()


def test_records_the_api_would_refuse_still_get_a_version_and_are_not_parsed_when_too_large() -> None:
    malformed: Entry = (b"1-0", {RECORD_FIELD.encode(): b"{not json"})
    huge: Entry = (b"2-0", {RECORD_FIELD.encode(): orjson.dumps({"carrier": "x" * LIMIT})})
    missing: Entry = (b"3-0", {b"other": b"1"})
    for entry in (malformed, huge, missing):
        assert canary_key(entry, "carrier", LIMIT) == entry[0].decode()


def test_fractions_zero_and_one_and_a_widening_step_only_adds_records() -> None:
    entries = [_entry(i, {"distance": i}) for i in range(500)]
    assert split_canary(entries, _state(0.0, None), LIMIT)[1] == []
    assert split_canary(entries, _state(1.0, None), LIMIT)[0] == []
    narrow = {e[0] for e in split_canary(entries, _state(0.1, None), LIMIT)[1]}
    wide = {e[0] for e in split_canary(entries, _state(0.5, None), LIMIT)[1]}
    assert narrow < wide


def test_stream_ids_sort_in_the_order_redis_gave_them() -> None:
    ids = ["1700000000001-0", "1700000000000-10", "1700000000000-2", "1700000000002-0"]
    assert sorted(ids, key=stream_order) == [
        "1700000000000-2",
        "1700000000000-10",
        "1700000000001-0",
        "1700000000002-0",
    ]
