"""A batch straight to the booster's matrix, checked column by column instead of record by record.

Validating 1,000 records one by one with the request model (and then encoding them) cost more than the
booster's own prediction. Here a decoded ``{"records": [...]}`` body is transposed into columns once, and each
column is checked in one pass: the set of Python types in it (a number is an int or a float, never a bool or
a string; a category is a string), nulls only where the schema allows them, finite numbers within float32
range, categories looked up in the training vocabulary. The lookups are the booster's codes, so the checked
columns are the matrix.

A batch may also come as ``{"columns": {feature: [...]}}``, already one array per feature: no transposition,
and a third of the JSON to decode.

This is an accelerator, not a second contract: :class:`BatchReader` returns ``None`` for anything it
cannot vouch for (a wrong type anywhere, an unknown or missing field, a null where none is allowed, a body
of another shape), and the caller then validates with the request model, which accepts or rejects and names
each offending record and field exactly as it always did. Whatever this module accepts, the request model
accepts and encodes to the same matrix (a property test holds the two to that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from flywheel.contracts.schema import FeatureSchema
from serving.schemas import FLOAT32_MAX

_NONE = type(None)
_NUMBER = frozenset({float, int})
_NUMBER_OR_NULL = frozenset({float, int, _NONE})


class BatchReader:
    """Checks and encodes whole batches for one model version (built once per version, like the request
    models)."""

    def __init__(self, schema: FeatureSchema, max_batch: int) -> None:
        self.max_batch = max_batch
        self.names = schema.names
        self._known = frozenset(self.names)
        self._required = [(c.name, not c.nullable) for c in schema.columns]
        # numbers: (position, allowed types); categories: (position, nullable, codes of the vocabulary)
        self._numbers = [
            (j, _NUMBER_OR_NULL if c.nullable else _NUMBER)
            for j, c in enumerate(schema.columns)
            if c.kind != "categorical"
        ]
        self._categories = [
            (j, c.nullable, {v: i for i, v in enumerate(c.categories or [])})
            for j, c in enumerate(schema.columns)
            if c.kind == "categorical"
        ]
        self._number_positions = [j for j, _ in self._numbers]
        names = self.names
        self._row: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            itemgetter(*names) if len(names) > 1 else lambda record: (record[names[0]],)
        )

    def from_records(self, payload: Any) -> np.ndarray | None:
        """The float32 matrix of a valid ``{"records": [...]}`` body, or None where the request model must
        decide (and, for an invalid body, say what is wrong)."""
        if type(payload) is not dict or len(payload) != 1:
            return None
        records = payload.get("records")
        if type(records) is not list or not 1 <= len(records) <= self.max_batch:
            return None
        if set(map(type, records)) != {dict}:
            return None
        try:
            columns = self._transpose(records)
            return None if columns is None else self._encode(columns, len(records))
        except (KeyError, TypeError, ValueError, OverflowError):
            return None  # a missing field, an unhashable category, an integer beyond any float

    def from_columns(self, payload: Any) -> np.ndarray | None:
        """The float32 matrix of a valid ``{"columns": {feature: [...]}}`` body (a feature that may be null
        left out or null: all null), or None where the request model must decide."""
        if type(payload) is not dict or len(payload) != 1:
            return None
        given = payload.get("columns")
        if type(given) is not dict or not self._known.issuperset(given):
            return None
        columns: list[list[Any] | None] = []
        for name, required in self._required:
            values = given.get(name)
            if values is None and not required:
                columns.append(None)
            elif type(values) is list:
                columns.append(values)
            else:
                return None
        lengths = {len(c) for c in columns if c is not None}
        if len(lengths) != 1:
            return None
        rows = lengths.pop()
        if not 1 <= rows <= self.max_batch:
            return None
        try:
            return self._encode([[None] * rows if c is None else c for c in columns], rows)
        except (TypeError, ValueError, OverflowError):
            return None

    def _transpose(self, records: list[dict[str, Any]]) -> Sequence[Sequence[Any]] | None:
        """The records' values, one sequence per feature in schema order; None if a record has an unknown
        field. A missing required field raises KeyError."""
        if set(map(len, records)) == {len(self.names)}:
            # as many keys as features and every feature found: exactly the features, no unknown one
            return list(zip(*map(self._row, records), strict=True))
        if not all(map(self._known.issuperset, records)):
            return None
        return [
            list(map(itemgetter(name), records)) if required else list(map(dict.get, records, repeat(name)))
            for name, required in self._required
        ]

    def _encode(self, columns: Sequence[Sequence[Any]], rows: int) -> np.ndarray | None:
        out = np.empty((rows, len(self.names)), dtype=np.float32)
        numbers = np.empty((len(self._numbers), rows), dtype=np.float64)
        for i, (j, allowed) in enumerate(self._numbers):
            if not set(map(type, columns[j])) <= allowed:
                return None
            numbers[i] = columns[j]  # null -> NaN
        finite = np.isfinite(numbers)
        if not finite.all():
            # NaN only where the value was null (JSON has neither NaN nor infinity, but be sure of it)
            for k in np.flatnonzero(~finite.all(axis=1)):
                if np.count_nonzero(~finite[k]) != columns[self._numbers[k][0]].count(None):
                    return None
        if np.any(np.abs(numbers) > FLOAT32_MAX):  # NaN compares false
            return None
        out[:, self._number_positions] = numbers.T
        for j, nullable, vocabulary in self._categories:
            codes = list(map(vocabulary.get, columns[j]))  # TypeError for an unhashable value
            unknown = codes.count(None)
            # a string of the vocabulary has a code; the rest must be nulls, and only where allowed
            if unknown and (not nullable or unknown != columns[j].count(None)):
                return None
            out[:, j] = np.array(codes, dtype=np.float32)  # null -> NaN
        return out
