"""Checking ground truth sent to ``POST /feedback`` before it can reach monitoring.

Labels become realized metrics and, later, training data, so one bad body must not poison them: a label
``2`` for a binary model once made the next monitoring run fail. A label is accepted only

- in the form the model's task allows (binary: 0 or 1; regression: a finite number, as a JSON number;
  multiclass: a class name or its index);
- for a request id this service issued (:mod:`serving.request_ids`), not past the feedback window;
- for as many rows as that request had (``labels`` in batch order, or ``label`` for one row, which in a batch
  is named ``<request_id>:<row>``);
- once: a repeat is refused with 409 (per process; monitoring keeps the first label of an id as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from serving.errors import error, field_error, quoted, unprocessable
from serving.request_ids import ROW_SEPARATOR, IssuedId, LabelledIds, RequestIds
from serving.schemas import feedback_models
from serving.validation import Invalid, validate


@dataclass(frozen=True)
class AcceptedFeedback:
    """Labels to store: ``request_id`` as the prediction log names the row (or the batch, for ``labels``)."""

    request_id: str
    labels: list[float]


@lru_cache(maxsize=8)
def _models(
    task: str, max_labels: int, classes: tuple[str, ...] | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    return feedback_models(task, max_labels, classes)


def _problem(field: str, msg: str, kind: str = "value_error") -> Response:
    return unprocessable([field_error([field], msg, kind)], 1)


class FeedbackChecker:
    def __init__(self, ids: RequestIds, labelled: LabelledIds) -> None:
        self.ids = ids
        self.labelled = labelled

    def check(
        self, payload: Any, task: str, max_labels: int, classes: list[str] | None = None
    ) -> AcceptedFeedback | Response:
        """The labels to store (at most ``max_labels``: the largest batch), or the 4xx that says why not.

        A classifier's label may name a class of ``classes`` (multiclass: or give its index; binary: 0 or
        1); it is stored as the index.
        """
        one, many = _models(task, max_labels, tuple(classes) if classes and task != "regression" else None)
        if type(payload) is not dict:
            return _problem("", "send an object: {request_id, label} or {request_id, labels}", "model_type")
        if "label" in payload and "labels" in payload:
            return _problem("labels", "give label (one row) or labels (every row of a batch), not both")
        model = many if "labels" in payload else one
        try:
            item = validate(model, payload)
        except Invalid as exc:
            return unprocessable(exc.errors, exc.total)
        given: str = item.request_id  # type: ignore[attr-defined]
        labels: list[float] = item.labels if model is many else [item.label]  # type: ignore[attr-defined]
        base, _, row = given.partition(ROW_SEPARATOR)
        issued = self.ids.check(base)
        if isinstance(issued, str):
            return error(404, f"request id {quoted(given)}: {issued}")
        keys = self._keys(issued, row, labels, model is many)
        if isinstance(keys, Response):
            return keys
        repeated = self.labelled.claim(keys)
        if repeated:
            shown = ", ".join(repeated[:5]) + (" ..." if len(repeated) > 5 else "")
            return error(409, f"already labelled: {shown}", repeated=len(repeated))
        return AcceptedFeedback(keys[0] if len(keys) == 1 else issued.request_id, labels)

    @staticmethod
    def _keys(issued: IssuedId, row: str, labels: list[float], many: bool) -> list[str] | Response:
        """The prediction-log ids the labels are for, one per label."""
        rid, rows = issued.request_id, issued.rows
        if row:
            if not row.isdigit() or int(row) >= rows:
                return _problem("request_id", f"request {rid} had {rows} row(s): no row {quoted(row)}")
            if len(labels) != 1:
                return _problem("labels", "one row of a batch takes one label")
            # a one-row request's only row is the request itself: the prediction log keeps it by its id
            return [rid] if rows == 1 else [f"{rid}{ROW_SEPARATOR}{int(row)}"]
        if len(labels) != rows:
            hint = f"send labels with {rows} values in batch order, or label one row as {rid}:<row>"
            what = "labels" if many else "label"
            return _problem(what, f"request {rid} had {rows} rows, got {len(labels)} label(s): {hint}")
        return [rid] if rows == 1 else [f"{rid}{ROW_SEPARATOR}{i}" for i in range(rows)]


def feedback_schema(
    task: str, max_labels: int, classes: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI body schema of ``/feedback`` for a task (``oneOf`` the two shapes) and its definitions."""
    one, many = _models(task, max_labels, tuple(classes) if classes and task != "regression" else None)
    definitions = {
        m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}") for m in (one, many)
    }
    body = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in definitions]}
    return body, definitions
