"""The slow path of a batch: a body :class:`serving.columns.BatchReader` could not vouch for, checked by the
request model one record (or one column) at a time, stopping once ``MAX_ERRORS`` errors are found.

Validating a whole rejected batch with one pydantic model made the cost of a 422 grow with the number of
errors in it (1,000 empty records: 18,000 errors, 1.36 MB, 38 ms). Checked piece by piece with an early stop,
rejecting a batch costs at most what validating it would, and a body full of errors is rejected after its
first few records. The shape of the body (an object with one list) is checked first, without pydantic, so a
wrong shape costs nothing.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from serving.encoding import RowEncoder
from serving.errors import MAX_ERRORS, field_error, pydantic_errors, unprocessable
from serving.validation import Invalid, validate


def _shape(payload: Any, key: str, kind: type, max_batch: int) -> Response | None:
    """A 422 unless ``payload`` is ``{key: <kind>}`` (and, for a list, 1 to ``max_batch`` long)."""
    if type(payload) is not dict:
        return unprocessable(
            [field_error([], "Input should be a valid dictionary or object", "model_type")], 1
        )
    problems = [
        field_error([k], "Extra inputs are not permitted", "extra_forbidden")
        for k in islice((k for k in payload if k != key), MAX_ERRORS)
    ]
    value = payload.get(key)
    if key not in payload:
        problems.append(field_error([key], "Field required", "missing"))
    elif type(value) is not kind:
        name = "list" if kind is list else "dictionary or object"
        problems.append(field_error([key], f"Input should be a valid {name}", f"{kind.__name__}_type"))
    elif kind is list and not 1 <= len(payload[key]) <= max_batch:
        size = len(payload[key])
        msg = f"give 1 to {max_batch} records, not {size}"
        problems.append(field_error([key], msg, "too_long" if size else "too_short"))
    unknown = len(payload) - (key in payload)
    return unprocessable(problems, unknown + len(problems) - min(unknown, MAX_ERRORS)) if problems else None


def check_records(
    record: type[BaseModel], encoder: RowEncoder, payload: Any, max_batch: int
) -> np.ndarray | Response:
    """``{"records": [...]}`` to the booster's matrix, or a 422 naming the first offending records."""
    rejected = _shape(payload, "records", list, max_batch)
    if rejected is not None:
        return rejected
    records = payload["records"]
    valid: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    total = 0
    for i, item in enumerate(records):
        try:
            valid.append(validate(record, item, ("records", i)).__dict__)
        except Invalid as exc:
            total += exc.total
            errors += exc.errors
            if len(errors) >= MAX_ERRORS:
                return unprocessable(errors, total, complete=i == len(records) - 1)
    if errors:
        return unprocessable(errors, total)
    return encoder.encode(valid)


def check_columns(
    adapters: dict[str, TypeAdapter[Any]],
    required: frozenset[str],
    encoder: RowEncoder,
    payload: Any,
    max_batch: int,
) -> np.ndarray | Response:
    """``{"columns": {feature: [...]}}`` to the booster's matrix, or a 422 naming the first offending values
    (a feature that may be null may be left out, or given as null: all null)."""
    rejected = _shape(payload, "columns", dict, max_batch)
    if rejected is not None:
        return rejected
    given: dict[str, Any] = payload["columns"]
    unknown = islice((name for name in given if name not in adapters), MAX_ERRORS)
    errors = [
        field_error(["columns", name], "Extra inputs are not permitted", "extra_forbidden")
        for name in unknown
    ]
    missing = [name for name in sorted(required) if given.get(name) is None]
    errors += [field_error(["columns", name], "Field required", "missing") for name in missing]
    total = len(given.keys() - adapters.keys()) + len(missing)
    columns: dict[str, list[Any]] = {}
    for name, adapter in adapters.items():
        if len(errors) >= MAX_ERRORS:
            return unprocessable(errors, total, complete=False)
        values = given.get(name)
        if values is None:
            continue
        if type(values) is list and len(values) > max_batch:  # refused by its length, not item by item
            errors.append(field_error(["columns", name], f"give 1 to {max_batch} values", "too_long"))
            total += 1
            continue
        try:
            columns[name] = adapter.validate_python(values)
        except ValidationError as exc:
            total += exc.error_count()
            errors += pydantic_errors(exc, ("columns", name))
    if errors:
        return unprocessable(errors, total)
    lengths = {name: len(values) for name, values in columns.items()}
    if not lengths:
        return unprocessable([field_error(["columns"], "give at least one column", "value_error")], 1)
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{name} {n}" for name, n in lengths.items())
        msg = f"every column needs the same number of values; got {counts}"
        return unprocessable([field_error(["columns"], msg, "value_error")], 1)
    rows = next(iter(lengths.values()))
    return encoder.encode([{name: values[i] for name, values in columns.items()} for i in range(rows)])
