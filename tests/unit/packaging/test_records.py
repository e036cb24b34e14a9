"""The wheel's record checks against the service's: the same errors (field, message, type, count) for a
table of bad records, and the same matrix for good ones."""

from __future__ import annotations

import collections
import decimal
import fractions
import types
from typing import Any

import numpy as np
import pytest

from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from flywheel.packaging import records as wheel_records
from flywheel.packaging.records import InvalidRecords, RecordChecker
from serving import errors as serving_errors
from serving import schemas as serving_schemas
from serving.batch_checks import check_records
from serving.encoding import RowEncoder
from serving.schemas import record_model
from serving.validation import FEW_KEYS, Invalid, validate

SCHEMA = FeatureSchema(
    columns=[
        FeatureColumn("distance", "numeric", minimum=10.0, maximum=5000.0, nullable=False),
        FeatureColumn("dep_delay", "numeric"),
        FeatureColumn("carrier", "categorical", [f"c{i:02d}" for i in range(15)], nullable=False),
        FeatureColumn("origin", "categorical", ["EWR", "JFK", "LGA"]),
    ],
    label="late",
    task="binary",
    classes=["0", "1"],
)
GOOD: dict[str, Any] = {"distance": 100.0, "dep_delay": -3, "carrier": "c01", "origin": "JFK"}


class Str(str):
    pass


class Floaty:
    def __float__(self) -> float:
        return 2.5


class Indexy:
    def __index__(self) -> int:
        return 7


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k not in names}


BAD: list[Any] = [
    _without("distance"),
    _without("carrier", "distance"),
    _with(distance="100"),
    _with(distance=True),
    _with(distance=None),
    _with(distance=float("nan")),
    _with(distance=float("-inf")),
    _with(distance=decimal.Decimal("nan")),
    _with(distance=1e39),
    _with(distance=-1e39),
    _with(distance=10**39),
    _with(distance=10**400),
    _with(distance=complex(1, 0)),
    _with(distance=b"1"),
    _with(distance=bytearray(b"1")),
    _with(distance=[1.0]),
    _with(distance={"x": 1}),
    _with(dep_delay="late"),
    _with(carrier=None),
    _with(carrier=3),
    _with(carrier=b"c01"),
    _with(carrier="C01"),
    _with(carrier="x" * 200),
    _with(carrier=Str("nope")),
    _with(origin="ORD"),
    _with(origin=1.5),
    _with(extra=1),
    {"zz": 1, 1: 2, "distance": "1", "yy": 2, 2: 3},
    {f"k{i}": i for i in range(FEW_KEYS + 5)},
    {**{f"k{i}": i for i in range(FEW_KEYS + 5)}, "distance": "far"},
    {**GOOD, **{f"k{i}": i for i in range(30)}},
    [GOOD],
    None,
    "a record",
    {},
]
GOOD_TOO: list[Any] = [
    GOOD,
    _with(distance=1),
    _with(distance=decimal.Decimal("2.5")),
    _with(distance=fractions.Fraction(1, 3)),
    _with(distance=np.float32(1.5)),
    _with(distance=np.int64(2**62)),
    _with(distance=np.bool_(True)),  # numpy's bool is a number to pydantic (Python's is not)
    _with(distance=Floaty()),
    _with(distance=Indexy()),
    _with(distance=2**53 + 1),
    _with(distance=3.4e38),
    _with(carrier=Str("c02"), origin=np.str_("EWR")),
    _with(dep_delay=None, origin=None),
    _without("dep_delay", "origin"),
    types.MappingProxyType(GOOD),
    collections.OrderedDict(GOOD),
]


def _service_errors(record: Any) -> tuple[list[dict[str, Any]], int]:
    try:
        validate(record_model(SCHEMA), record, ("records", 0))
    except Invalid as exc:
        return [{**e, "loc": e["loc"][1:]} for e in exc.errors], exc.total  # without "body"
    return [], 0


def test_the_copied_constants_are_the_services() -> None:
    assert wheel_records.MAX_ERRORS == serving_errors.MAX_ERRORS
    assert wheel_records.MAX_QUOTED == serving_errors.MAX_QUOTED
    assert wheel_records.FLOAT32_MAX == serving_schemas.FLOAT32_MAX
    assert wheel_records.FEW_KEYS == FEW_KEYS


@pytest.mark.parametrize("record", BAD, ids=lambda r: repr(r)[:50])
def test_a_bad_record_gets_the_services_errors(record: Any) -> None:
    expected, total = _service_errors(record)
    assert total > 0
    found, count = RecordChecker(SCHEMA.to_dict()).errors(record, ("records", 0))
    assert (found, count) == (expected, total)


@pytest.mark.parametrize("record", GOOD_TOO, ids=lambda r: repr(r)[:50])
def test_a_good_record_is_the_services_matrix_row(record: Any) -> None:
    assert _service_errors(record) == ([], 0)
    served = validate(record_model(SCHEMA), record).__dict__
    expected = RowEncoder(SCHEMA).encode([served])
    got = RecordChecker(SCHEMA.to_dict()).matrix([record])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_a_batch_stops_where_the_service_stops() -> None:
    """Errors gathered record after record, cut at MAX_ERRORS with the total so far and whether every
    record was checked, as the service's 422 counts them."""
    checker = RecordChecker(SCHEMA.to_dict())
    for batch in ([GOOD, *BAD[:3]], [*BAD, GOOD], [GOOD] * 5 + [BAD[1]] * 11, [BAD[1]] * 10 + [GOOD]):
        response = check_records(record_model(SCHEMA), RowEncoder(SCHEMA), {"records": batch}, 10_000)
        assert not isinstance(response, np.ndarray)
        body = __import__("orjson").loads(bytes(response.body))
        with pytest.raises(InvalidRecords) as raised:
            checker.matrix(batch)
        assert raised.value.errors == [{**e, "loc": e["loc"][1:]} for e in body["detail"]]
        assert raised.value.total == body.get("error_count", len(body["detail"]))
        assert raised.value.complete == (not body.get("error_count_is_lower_bound", False))
        assert str(raised.value).startswith(f"{raised.value.total}")


def test_records_must_be_a_list_of_records() -> None:
    checker = RecordChecker(SCHEMA.to_dict())
    with pytest.raises(TypeError, match="for one record pass"):
        checker.matrix(GOOD)
    assert checker.matrix([]).shape == (0, 4)
    assert checker.matrix(iter([GOOD])).shape == (1, 4)
