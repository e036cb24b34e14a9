"""The column-wise batch reader against the request model it accelerates: on anything JSON can carry, it
accepts exactly what the request model accepts, and encodes it to the same matrix as the row encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.responses import Response

from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from serving.batch_checks import check_columns, check_records
from serving.columns import BatchReader
from serving.encoding import RowEncoder
from serving.schemas import FLOAT32_MAX, batch_model, column_adapters, columns_model, record_model

SCHEMA = FeatureSchema(
    columns=[
        FeatureColumn("distance", "numeric", minimum=17.0, maximum=4983.0, nullable=False),
        FeatureColumn("wind_gust", "numeric", minimum=0.0, maximum=60.0, nullable=True),
        FeatureColumn("carrier", "categorical", categories=["9E", "AA", "B6", "UA"], nullable=False),
        FeatureColumn("dest", "categorical", categories=["", "ATL", "BOS"], nullable=True),
        FeatureColumn("hour", "numeric", minimum=5.0, maximum=23.0, nullable=False),
    ],
    label="late",
    task="binary",
)
MAX_BATCH = 6
READER = BatchReader(SCHEMA, MAX_BATCH)
ENCODER = RowEncoder(SCHEMA)
RECORD = record_model(SCHEMA)
BATCH = batch_model(RECORD, MAX_BATCH)
COLUMNS = columns_model(SCHEMA, MAX_BATCH)
ADAPTERS = column_adapters(SCHEMA, MAX_BATCH)
REQUIRED = frozenset(c.name for c in SCHEMA.columns if not c.nullable)


def expected(payload: Any) -> np.ndarray | None:
    """What the service did before the reader: the request model, then the row encoder."""
    try:
        batch = BATCH.model_validate(payload)
    except ValidationError:
        return None
    return ENCODER.encode([r.__dict__ for r in batch.records])  # type: ignore[attr-defined]


def expected_from_columns(payload: Any) -> np.ndarray | None:
    try:
        batch = COLUMNS.model_validate(payload)
    except ValidationError:
        return None
    given = batch.columns.__dict__  # type: ignore[attr-defined]
    rows = next(len(values) for values in given.values() if values is not None)
    return ENCODER.encode([{k: None if v is None else v[i] for k, v in given.items()} for i in range(rows)])


def assert_same(got: np.ndarray | Response, want: np.ndarray | None, payload: Any) -> None:
    """The slow path (serving.batch_checks) decides as the request model: a 422, or the same matrix."""
    if want is None:
        assert isinstance(got, Response) and got.status_code == 422, f"let through: {payload!r}"
    else:
        assert isinstance(got, np.ndarray), f"rejected a valid body: {payload!r}: {got.body!r}"
        np.testing.assert_array_equal(got, want)


# every kind of value JSON can carry, and the edges of what the schema allows (drawn more often)
EDGES = [0, 1, 0.0, 1.0, -0.0, FLOAT32_MAX, -FLOAT32_MAX, 3.5e38, -3.5e38, float("nan"), float("inf")]
EDGES += [2**64 - 1, 10**39, 10**400, True, False, None, "", "1", "nan", "AA", "BOS", [], {}]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGES),
    st.sampled_from(["AA", "B6", "ATL", "XXX"]),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
VALID = {
    "distance": st.one_of(st.floats(-FLOAT32_MAX, FLOAT32_MAX), st.integers(-(2**63), 2**64 - 1)),
    "wind_gust": st.one_of(st.none(), st.floats(0, 60)),
    "carrier": st.sampled_from(["9E", "AA", "B6", "UA"]),
    "dest": st.sampled_from([None, "", "ATL", "BOS"]),
    "hour": st.integers(5, 23),
}


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """A valid batch (nullable fields sometimes left out) with none, one or a few defects: a field set to
    any value or an edge, a field left out, an unknown field, a record that is not one; and now and then a
    body of another shape."""
    batch: list[Any] = []
    for _ in range(draw(st.integers(0, MAX_BATCH + 1))):
        record = {}
        for name, valid in VALID.items():
            if name not in ("wind_gust", "dest") or draw(st.integers(0, 5)):
                record[name] = draw(valid)
        batch.append(record)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2])) if batch else 0):
        i = draw(st.integers(0, len(batch) - 1))
        name = draw(st.sampled_from(list(VALID)))
        defect = draw(st.sampled_from(["edge", "edge", "any", "leave out", "unknown", "not a record"]))
        if defect == "not a record":
            batch[i] = draw(ANY_VALUE)
        elif isinstance(batch[i], dict):
            if defect == "leave out":
                batch[i].pop(name, None)
            elif defect == "unknown":
                batch[i][draw(st.sampled_from(["colour", "records", "Distance"]))] = draw(ANY_VALUE)
            else:
                batch[i][name] = draw(st.sampled_from(EDGES) if defect == "edge" else ANY_VALUE)
    shape = draw(st.sampled_from(["records"] * 8 + ["extra", "not a list", "other"]))
    if shape == "extra":
        return {"records": batch, "colour": 1}
    if shape == "not a list":
        return {"records": draw(ANY_VALUE)}
    if shape == "other":
        return draw(st.one_of(ANY_VALUE, st.just(batch)))
    return {"records": batch}


@given(payload=payloads())
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_reader_accepts_exactly_what_the_request_model_accepts(payload: Any) -> None:
    want = expected(payload)
    got = READER.from_records(payload)
    if want is None:
        assert got is None, f"the reader let through what the request model rejects: {payload!r}"
    else:
        assert got is not None, f"a valid batch missed the fast path: {payload!r}"
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN where null, the same codes, the same float32 values
    assert_same(check_records(RECORD, ENCODER, payload, MAX_BATCH), want, payload)


def test_typical_batch() -> None:
    batch = [
        {"distance": 1076.0, "wind_gust": None, "carrier": "B6", "dest": "BOS", "hour": 6},
        {"distance": 200, "wind_gust": 19.5, "carrier": "UA", "dest": None, "hour": 23.0},
        {"distance": 300.5, "carrier": "AA", "hour": 7},  # nullable fields left out
    ]
    got = READER.from_records({"records": batch})
    assert got is not None
    np.testing.assert_array_equal(
        got,
        np.array(
            [[1076, np.nan, 2, 2, 6], [200, 19.5, 3, np.nan, 23], [300.5, np.nan, 1, np.nan, 7]],
            dtype=np.float32,
        ),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"distance": True},
        {"distance": "1076"},
        {"wind_gust": "1"},
        {"distance": None},
        {"distance": float("nan")},
        {"distance": 3.5e38},
        {"wind_gust": float("inf")},
        {"carrier": "XXX"},
        {"carrier": None},
        {"carrier": 7},
        {"dest": ["BOS"]},
        {"colour": "red"},
    ],
    ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values()))),
)
def test_bad_values_leave_the_fast_path(change: dict[str, Any]) -> None:
    good = {"distance": 1076.0, "wind_gust": None, "carrier": "B6", "dest": "BOS", "hour": 6}
    assert READER.from_records({"records": [good, good]}) is not None
    assert READER.from_records({"records": [good, good | change]}) is None
    assert expected({"records": [good, good | change]}) is None


def test_missing_required_field_and_batch_limits() -> None:
    good = {"distance": 1076.0, "wind_gust": None, "carrier": "B6", "dest": "BOS", "hour": 6}
    short = {k: v for k, v in good.items() if k != "hour"}
    assert READER.from_records({"records": [good, short]}) is None
    assert READER.from_records({"records": []}) is None
    assert READER.from_records({"records": [good] * (MAX_BATCH + 1)}) is None
    assert READER.from_records({"records": [good] * MAX_BATCH}) is not None


@st.composite
def column_payloads(draw: st.DrawFn) -> Any:
    """Valid columns (those that may be null sometimes left out or null) with none, one or a few defects: a
    value set to any value or an edge, a column left out, one value more or less, an unknown column, a column
    that is not an array; and now and then a body of another shape."""
    rows = draw(st.integers(0, MAX_BATCH + 1))
    columns: dict[str, Any] = {}
    for name, valid in VALID.items():
        if name in ("wind_gust", "dest") and not draw(st.integers(0, 4)):
            if draw(st.booleans()):
                columns[name] = None
            continue
        columns[name] = [draw(valid) for _ in range(rows)]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        name = draw(st.sampled_from(list(VALID)))
        defect = draw(
            st.sampled_from(["edge", "edge", "any", "leave out", "length", "unknown", "not a list"])
        )
        values = columns.get(name)
        if defect == "leave out":
            columns.pop(name, None)
        elif defect == "unknown":
            columns[draw(st.sampled_from(["colour", "columns", "Distance"]))] = [1.0] * rows
        elif defect == "not a list":
            columns[name] = draw(ANY_VALUE)
        elif isinstance(values, list) and defect == "length":
            columns[name] = values[1:] if values and draw(st.booleans()) else [*values, draw(VALID[name])]
        elif isinstance(values, list) and values:
            i = draw(st.integers(0, len(values) - 1))
            values[i] = draw(st.sampled_from(EDGES) if defect == "edge" else ANY_VALUE)
    shape = draw(st.sampled_from(["columns"] * 8 + ["extra", "other"]))
    if shape == "extra":
        return {"columns": columns, "records": []}
    if shape == "other":
        return draw(st.one_of(ANY_VALUE, st.just(columns)))
    return {"columns": columns}


@given(payload=column_payloads())
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_columns_accepted_exactly_as_the_request_model_accepts_them(payload: Any) -> None:
    want = expected_from_columns(payload)
    got = READER.from_columns(payload)
    if want is None:
        assert got is None, f"the reader let through what the request model rejects: {payload!r}"
    else:
        assert got is not None, f"valid columns missed the fast path: {payload!r}"
        np.testing.assert_array_equal(got, want)
    assert_same(check_columns(ADAPTERS, REQUIRED, ENCODER, payload, MAX_BATCH), want, payload)


def test_typical_columns() -> None:
    columns = {"distance": [1076.0, 200, 300.5], "carrier": ["B6", "UA", "AA"], "dest": ["BOS", None, None]}
    got = READER.from_columns({"columns": columns | {"hour": [6, 23.0, 7]}})
    assert got is not None
    np.testing.assert_array_equal(
        got,
        np.array(
            [[1076, np.nan, 2, 2, 6], [200, np.nan, 3, np.nan, 23], [300.5, np.nan, 1, np.nan, 7]],
            dtype=np.float32,
        ),
    )
    assert READER.from_columns({"columns": columns | {"hour": [6, 23.0]}}) is None  # one value short
    assert expected_from_columns({"columns": columns | {"hour": [6, 23.0]}}) is None
