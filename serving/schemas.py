"""Request and response models generated from the model's feature schema.

Every field of the training contract is declared: unknown fields are rejected (``extra="forbid"``), types are
strict (a string is not a number), categoricals must be in the training vocabulary, and a missing value is
allowed only where training data had missing values. Pydantic's 422 body then names each offending field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator

from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from serving.errors import quoted

FLOAT32_MAX = 3.4e38


def _vocabulary_check(column: FeatureColumn) -> AfterValidator:
    allowed = frozenset(column.categories or [])
    shown = ", ".join(sorted(allowed)[:12]) + (" ..." if len(allowed) > 12 else "")

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise ValueError(f"unknown value {quoted(value)} for {column.name!r}; known values: {shown}")
        return value

    return AfterValidator(check)


def _field(column: FeatureColumn) -> tuple[Any, Any]:
    if column.kind == "categorical":
        base: Any = Annotated[
            str, Field(json_schema_extra={"enum": list(column.categories or [])}, strict=True)
        ]
        kind: Any = (
            Annotated[base | None, _vocabulary_check(column)]
            if column.nullable
            else Annotated[base, _vocabulary_check(column)]
        )
    else:
        # the booster reads float32: larger magnitudes would become inf, which XGBoost rejects
        number: Any = Annotated[
            float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)
        ]
        kind = number | None if column.nullable else number
    description = (
        f"{column.kind}"
        + (f", one of {len(column.categories or [])} values" if column.categories else "")
        + (
            f", seen in training from {column.minimum} to {column.maximum}"
            if column.minimum is not None
            else ""
        )
        + ("; may be null" if column.nullable else "; required")
    )
    default = None if column.nullable else ...
    return kind, Field(default=default, description=description)


NUMBER_CHARS = 32
"""A number's JSON text at most, as the bound below counts it (``-1.7976931348623157e+308`` is 24)."""
RECORD_SLACK_BYTES = 4096


def record_bytes_bound(schema: FeatureSchema) -> int:
    """The most bytes a valid record of ``schema`` can take as JSON, generously: every field with its
    longest value (the longest category as an ASCII-escaping encoder writes it, which is the longer of the
    two; a number; null), quoted and separated, twice over for a pretty-printer's whitespace, plus 4 KB.

    Unknown fields are refused and every value is bounded, so a larger body cannot be a valid record: it is
    refused (413) before it is read, where decoding it only to list what is wrong with it cost more than
    scoring a valid one (a 1.7 MB body of 100,000 unknown keys: 10 ms, most of it JSON decoding)."""

    def text(value: str) -> int:
        return max(len(json.dumps(value)), len(json.dumps(value, ensure_ascii=False).encode()))

    total = 2
    for column in schema.columns:
        longest = max((text(c) for c in column.categories or []), default=0)
        value = max(longest, 4) if column.kind == "categorical" else NUMBER_CHARS
        total += text(column.name) + 2 + value + 2
    return 2 * total + RECORD_SLACK_BYTES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def record_model(schema: FeatureSchema, name: str = "Record") -> type[BaseModel]:
    fields = {c.name: _field(c) for c in schema.columns}
    return create_model(name, __base__=_Strict, **fields)  # type: ignore[call-overload,no-any-return]


def batch_model(record: type[BaseModel], max_batch: int) -> type[BaseModel]:
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Batch",
        __base__=_Strict,
        records=(list[record], Field(min_length=1, max_length=max_batch)),  # type: ignore[valid-type]
    )


class _SameLength(_Strict):
    """Columns of one batch: as many values in each."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "every array the same length (one value per row); a ragged batch is a 422",
            "x-same-length": True,
        }
    )

    @model_validator(mode="after")
    def _same_length(self) -> _SameLength:
        lengths = {name: len(values) for name, values in self.__dict__.items() if values is not None}
        if not lengths:
            raise ValueError("give at least one column")
        if len(set(lengths.values())) > 1:
            counts = ", ".join(f"{name} {n}" for name, n in lengths.items())
            raise ValueError(f"every column needs the same number of values; got {counts}")
        return self


def columns_model(schema: FeatureSchema, max_batch: int) -> type[BaseModel]:
    """``{"columns": {feature: [values, ...]}}``: a batch as one array per feature, each value under the same
    rules as in a record; a feature that may be null may be left out (all null)."""
    fields: dict[str, Any] = {}
    for c in schema.columns:
        kind, field = _field(c)
        values: Any = list[kind]  # type: ignore[valid-type]
        fields[c.name] = (
            values | None if c.nullable else values,
            Field(
                default=None if c.nullable else ...,
                min_length=1,
                max_length=max_batch,
                description=f"{field.description}; one value per row"
                + ("; left out or null: all null" if c.nullable else ""),
            ),
        )
    columns = create_model("Columns", __base__=_SameLength, **fields)
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ColumnBatch",
        __base__=_Strict,
        columns=(columns, Field(description="one array per feature, all the same length")),
    )


def column_adapters(schema: FeatureSchema, max_batch: int) -> dict[str, TypeAdapter[Any]]:
    """One validator per feature for a column of values, under the same rules as ``columns_model``: a
    rejected column batch is checked column by column, stopping once enough errors are found."""
    adapters: dict[str, TypeAdapter[Any]] = {}
    for c in schema.columns:
        kind, _ = _field(c)
        values: Any = Annotated[list[kind], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
        adapters[c.name] = TypeAdapter(values)
    return adapters


_PREDICTION = Field(
    description="probability of the positive class (binary), the predicted value (regression), or the "
    "probability of the predicted class (multiclass)"
)
_PREDICTED_CLASS = Field(default=None, description="multiclass only: the most probable class")
_PROBABILITIES = Field(default=None, description="multiclass only: each class's probability")


class Prediction(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    prediction: float = _PREDICTION
    decision: bool | None = Field(description="prediction >= threshold (binary tasks only)")
    threshold: float | None
    predicted_class: str | None = _PREDICTED_CLASS
    probabilities: dict[str, float] | None = _PROBABILITIES


class BatchItem(BaseModel):
    prediction: float = _PREDICTION
    decision: bool | None
    predicted_class: str | None = _PREDICTED_CLASS
    probabilities: dict[str, float] | None = _PROBABILITIES


class BatchPrediction(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    threshold: float | None
    predictions: list[BatchItem]


class Contribution(BaseModel):
    feature: str
    value: Any
    contribution: float


class Explanation(BaseModel):
    request_id: str
    model_version: str
    prediction: float = _PREDICTION
    base_value: float = Field(description="the model's bias term, in margin (log-odds for binary) units")
    top: list[Contribution] = Field(
        description="the largest contributions (multiclass: to the predicted class)"
    )
    contributions: dict[str, float]
    predicted_class: str | None = _PREDICTED_CLASS
    class_contributions: dict[str, dict[str, float]] | None = Field(
        default=None,
        description="multiclass only: every class's contributions to its own margin, with its base value "
        "under the key 'bias'",
    )


_REQUEST_ID = Field(
    min_length=1,
    max_length=200,
    description="the request_id the service returned with the prediction; one row of a batch as "
    "<request_id>:<row>",
)


def _binary_label(value: float) -> float:
    if value not in (0, 1):
        raise ValueError(f"a binary label is 0 or 1, not {quoted(value)}")
    return value


def _class_label(classes: tuple[str, ...]) -> Any:
    """A multiclass label: the class's name, or its index in the model's class order; stored as the index."""
    index = {name: i for i, name in enumerate(classes)}

    def check(value: int | str) -> float:
        if isinstance(value, str):
            if value in index:
                return float(index[value])
            shown = ", ".join(quoted(c) for c in classes[:20]) + (" ..." if len(classes) > 20 else "")
            raise ValueError(f"{quoted(value)} is not a class of this model ({shown})")
        if 0 <= value < len(classes):
            return float(value)
        raise ValueError(f"a class index is 0..{len(classes) - 1}, not {quoted(value)}")

    return Annotated[
        Annotated[int, Field(strict=True)] | Annotated[str, Field(strict=True, max_length=1_000)],
        Field(json_schema_extra={"description": f"one of {list(classes)[:50]} or its index"}),
        AfterValidator(check),
    ]


def _named_binary_label(classes: tuple[str, ...]) -> Any:
    """A binary label of a model whose classes have names (``good``/``bad``): 0 or 1, or the name."""
    index = {name: i for i, name in enumerate(classes)}

    def check(value: float | str) -> float:
        if isinstance(value, str):
            if value in index:
                return float(index[value])
            raise ValueError(
                f"{quoted(value)} is not a class of this model ({quoted(classes[0])} or {quoted(classes[1])})"
            )
        return _binary_label(value)

    return Annotated[
        Annotated[float, Field(strict=True)] | Annotated[str, Field(strict=True, max_length=1_000)],
        Field(json_schema_extra={"description": f"0 or 1, or the class name: one of {list(classes)}"}),
        AfterValidator(check),
    ]


def label_type(task: str, classes: tuple[str, ...] | None = None) -> Any:
    """A label as the model's task allows it: 0 or 1 for binary (or its class names, where the classes have
    names), a class name or index for multiclass, a finite float32 for regression (a JSON number, never a
    boolean; text only as a class name)."""
    if task == "multiclass":
        return _class_label(classes or ())
    if task == "binary" and classes and len(classes) == 2 and list(classes) != ["0", "1"]:
        return _named_binary_label(classes)
    if task == "binary":
        return Annotated[
            float, Field(strict=True, json_schema_extra={"enum": [0, 1]}), AfterValidator(_binary_label)
        ]
    return Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


def feedback_models(
    task: str, max_labels: int, classes: tuple[str, ...] | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The two feedback bodies: ``FeedbackOne`` (``label``: one row) and ``FeedbackMany`` (``labels``: every
    row of a batch, in order). A body is exactly one of them: both or neither is rejected."""
    label = label_type(task, classes)
    one = create_model(
        "FeedbackOne",
        __base__=_Strict,
        request_id=(str, _REQUEST_ID),
        label=(label, Field(description="ground truth of a one-row request, or of one row of a batch")),
    )
    many = create_model(
        "FeedbackMany",
        __base__=_Strict,
        request_id=(str, _REQUEST_ID),
        labels=(
            list[label],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_labels, description="ground truth of every row, batch order"),
        ),
    )
    return one, many  # type: ignore[return-value]
