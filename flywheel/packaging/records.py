"""Checking records against a model's feature schema, with the service's rules and its words, and encoding
them into the booster's matrix.

This file is copied as it is into every model wheel (``flywheel package``), where neither pydantic nor the
service exists: it needs only the standard library and numpy. So the service's request-model rules are
written out here once more: unknown and non-string keys refused, a missing value only where training had
one, a number is a finite int or float within float32 range (never a bool or a string), a category is a
string of the training vocabulary. Each error is one entry of the service's 422 ``detail`` (the same
``field``, ``msg`` and ``type``; ``loc`` without its leading ``"body"``), at most ``MAX_ERRORS`` of them with
the total, as the service counts them; a test holds the two to the same errors on a table of bad records.

The matrix is what the service predicts on: numbers as float64 rounded once to float32, categories as their
position in the training vocabulary, a missing value NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from typing import Any

import numpy as np

MAX_ERRORS = 20
"""At most this many errors are named (the service's 422 lists as many)."""
MAX_QUOTED = 40
"""An error quotes at most this many characters of a value."""
FLOAT32_MAX = 3.4e38
"""Larger magnitudes would become infinity in the booster's float32 input."""
FEW_KEYS = 256
"""A record with more keys than this (and than the schema has fields) names its unknown keys first."""

_UPPER = f"Input should be less than or equal to {Decimal(repr(FLOAT32_MAX)):f}"
_LOWER = f"Input should be greater than or equal to {Decimal(repr(-FLOAT32_MAX)):f}"
_NUMBER = "Input should be a valid number"
_STRING = "Input should be a valid string"
_NOT_TEXT_OR_BOOL = (str, bytes, bytearray, bool)


class InvalidRecords(ValueError):
    """Records that break the model's input contract: the first ``MAX_ERRORS`` errors (each with ``loc``,
    ``field``, ``msg`` and ``type``, as in the service's 422), how many there are in all (``total``), and
    whether every record was checked (``complete``; checking stops once ``MAX_ERRORS`` are found)."""

    def __init__(self, errors: list[dict[str, Any]], total: int, complete: bool = True) -> None:
        self.errors = errors[:MAX_ERRORS]
        self.total = total
        self.complete = complete
        count = f"{total}{'' if complete else ' or more'} invalid value{'s' if total != 1 else ''}"
        shown = "; ".join(f"{e['field']}: {e['msg']}" for e in self.errors[:5])
        more = f" (and {total - 5} more)" if total > 5 else ""
        super().__init__(f"{count}: {shown}{more}")


def quoted(value: Any) -> str:
    """``repr(value)``, cut to ``MAX_QUOTED`` characters: an error never echoes a large input."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[: MAX_QUOTED - 3]}... ({len(text)} characters)"


def _error(loc: Sequence[Any], msg: str, kind: str) -> dict[str, Any]:
    path = [str(p) for p in loc]
    return {"loc": path, "field": ".".join(path) or "(body)", "msg": msg[:500], "type": kind}


class _Column:
    """One feature's rule: its kind, whether it may be missing, and its vocabulary's codes."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.name = str(spec["name"])
        self.categorical = spec["kind"] == "categorical"
        self.nullable = bool(spec.get("nullable", True))
        categories = [str(c) for c in spec.get("categories") or []]
        self.codes = {c: i for i, c in enumerate(categories)}
        allowed = sorted(set(categories))
        self.shown = ", ".join(allowed[:12]) + (" ..." if len(allowed) > 12 else "")

    def check(self, value: Any) -> tuple[float | None, tuple[str, str] | None]:
        """The value as the matrix holds it (None for missing), or the error (message, type)."""
        if value is None:
            if self.nullable:
                return None, None
            return None, (_STRING, "string_type") if self.categorical else (_NUMBER, "float_type")
        if self.categorical:
            if not isinstance(value, str):
                return None, (_STRING, "string_type")
            text = str.__str__(value)  # a str subclass is checked, and quoted, as its plain text
            code = self.codes.get(text)
            if code is None:
                why = (
                    f"Value error, unknown value {quoted(text)} for {self.name!r}; known values: {self.shown}"
                )
                return None, (why, "value_error")
            return float(code), None
        if isinstance(value, _NOT_TEXT_OR_BOOL):
            return None, (_NUMBER, "float_type")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None, (_NUMBER, "float_type")
        if number != number or number in (float("inf"), float("-inf")):
            return None, ("Input should be a finite number", "finite_number")
        if number > FLOAT32_MAX:
            return None, (_UPPER, "less_than_equal")
        if number < -FLOAT32_MAX:
            return None, (_LOWER, "greater_than_equal")
        return number, None


class RecordChecker:
    """Checks records against one feature schema (``FeatureSchema.to_dict()``) and encodes them."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.columns = [_Column(c) for c in schema["columns"]]
        self.names = [c.name for c in self.columns]
        self._by_name = {c.name: c for c in self.columns}

    def matrix(self, records: Iterable[Any]) -> np.ndarray:
        """The float32 matrix of ``records`` (a list of mappings), or :class:`InvalidRecords`."""
        if isinstance(records, (str, bytes, bytearray, Mapping)) or not isinstance(records, Iterable):
            raise TypeError(
                f"records is a list of records (dicts), not {type(records).__name__}; "
                "for one record pass [record]"
            )
        items = records if isinstance(records, Sequence) else list(records)
        out = np.empty((len(items), len(self.columns)), dtype=np.float64)
        errors: list[dict[str, Any]] = []
        total = 0
        for i, item in enumerate(items):
            found, count = self._record(item, ("records", i), out[i])
            total += count
            errors += found
            if len(errors) >= MAX_ERRORS:
                raise InvalidRecords(errors, total, complete=i == len(items) - 1)
        if errors:
            raise InvalidRecords(errors, total)
        return out.astype(np.float32)

    def errors(self, item: Any, prefix: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        """The first ``MAX_ERRORS`` errors of one record and how many there are in all."""
        return self._record(item, prefix, np.empty(len(self.columns)))

    def _record(self, item: Any, prefix: Sequence[Any], row: np.ndarray) -> tuple[list[dict[str, Any]], int]:
        if not isinstance(item, Mapping):
            return [
                _error(prefix, "Input should be a valid dictionary or instance of Record", "model_type")
            ], 1
        fields = self._by_name
        if type(item) is dict and len(item) > FEW_KEYS and len(item) > len(fields):
            # as the service: the first unknown keys are named, then the known fields are checked
            known = {k: item[k] for k in fields if k in item}
            unknown = len(item) - len(known)
            if unknown:
                named = islice((k for k in item if k not in fields), MAX_ERRORS)
                extra = [
                    _error([*prefix, k], "Extra inputs are not permitted", "extra_forbidden") for k in named
                ]
                found, count = self._fields(known, prefix, row)
                return extra + found[:MAX_ERRORS], unknown + count
        found, count = self._fields(item, prefix, row)
        return found[:MAX_ERRORS], count

    def _fields(
        self, item: Mapping[Any, Any], prefix: Sequence[Any], row: np.ndarray
    ) -> tuple[list[dict[str, Any]], int]:
        """Every error of a record: its fields in schema order, then its unknown keys in its own order."""
        errors: list[dict[str, Any]] = []
        for j, column in enumerate(self.columns):
            if column.name not in item:
                if column.nullable:
                    row[j] = np.nan
                else:
                    errors.append(_error([*prefix, column.name], "Field required", "missing"))
                continue
            value, problem = column.check(item[column.name])
            if problem is not None:
                errors.append(_error([*prefix, column.name], *problem))
            else:
                row[j] = np.nan if value is None else value
        for key in item:
            if not isinstance(key, str):
                errors.append(_error([*prefix, key], "Keys should be strings", "invalid_key"))
            elif key not in self._by_name:
                errors.append(_error([*prefix, key], "Extra inputs are not permitted", "extra_forbidden"))
        return errors, len(errors)
