"""Features: the label, the event time, point-in-time joins and model-ready columns, all from the spec.

Categoricals become pandas categoricals with a fixed vocabulary so XGBoost handles them natively and the
serving schema can name the allowed values. The feature schema built here is what the signature, the
serving request model and the monitoring reference all follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts.expression import ExpressionError
from flywheel.contracts.problem import MAX_CLASSES, JoinSpec, ProblemSpec, TimeSpec, label_key
from flywheel.contracts.schema import FeatureColumn, FeatureSchema

EVENT_TIME = "_event_time"


class FeatureError(ValueError):
    """The data does not fit the spec (a missing column, a time that cannot be parsed ...)."""


@dataclass
class Dataset:
    """Model-ready rows: features (categoricals as pandas categoricals), the label and the event time."""

    frame: pd.DataFrame
    schema: FeatureSchema
    dropped_unlabelled: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.schema.names]

    @property
    def y(self) -> pd.Series:
        return self.frame[self.schema.label]

    def subset(self, index: pd.Index) -> Dataset:
        return Dataset(self.frame.loc[index], self.schema, 0, [])


def label_keys(values: pd.Series) -> pd.Series:
    """Each label value's canonical text (``1``/``1.0``/``"1"`` alike), None where the label is missing."""
    return values.map(lambda v: None if pd.isna(v) else label_key(v), na_action="ignore").astype(object)


def label_classes(frame: pd.DataFrame, spec: ProblemSpec) -> list[str] | None:
    """The classes of a classification label in the model's output order, from the spec and the data.

    Binary: ``[negative, positive]``; the positive class is ``target.positive``, or 1/true when the values
    are 0/1 or true/false; any other pair without ``target.positive`` is an error that lists the values
    seen and names the key. Multiclass: ``target.classes``, or every value seen (numbers in numeric
    order, text sorted). Regression: None. Raises :class:`FeatureError` with the remedy in the message.
    """
    if spec.task == "regression":
        return None
    raw = _label_values(frame, spec)
    seen = class_order(set(label_keys(raw).dropna()))
    if spec.task == "binary":
        if spec.target.expression is not None and not is_text(raw):
            return ["0", "1"]
        return _binary_classes(seen, spec)
    if spec.target.classes is not None:
        classes = [label_key(c) for c in spec.target.classes]
        unknown = [v for v in seen if v not in classes]
        if unknown:
            raise FeatureError(
                f"label {spec.target.column!r} holds value(s) {_shown(unknown)} that target.classes "
                f"{classes} does not list: add them to target.classes"
            )
        return classes
    if len(seen) > MAX_CLASSES:
        raise FeatureError(
            f"label {spec.target.column!r} has {len(seen):,} distinct values (at most {MAX_CLASSES} "
            f"classes), such as {_shown(seen)}: is it a regression target (task: regression) or an "
            "identifier?"
        )
    return seen


def make_label(frame: pd.DataFrame, spec: ProblemSpec, classes: list[str] | None = None) -> pd.Series:
    """The label as floats: 0/1 (binary), the class index (multiclass) or the number (regression);
    NaN where it is unknown (no label, not a negative).

    ``classes`` is the model's class order (a registered model's schema); without it the order comes from
    :func:`label_classes`, so training decides it once and every later reader uses the model's.
    A rule is evaluated by :mod:`flywheel.contracts.expression`, never as code: true/false becomes 1/0. A
    row gets no label when the rule's answer is unknown, or when a column it reads is missing; only a
    column read solely inside ``isnull()``/``notnull()`` may be missing (testing for that is the point of
    those checks).
    """
    values = _label_values(frame, spec)
    if spec.task == "regression":
        if is_text(values):
            numbers = pd.to_numeric(values, errors="coerce")
            text = values[numbers.isna() & values.notna()]
            if len(text):
                raise FeatureError(
                    f"label {spec.target.column!r} holds text such as {_shown(text.unique()[:5])}: a "
                    "regression label is a number (for classes use task: binary or multiclass)"
                )
        return pd.to_numeric(values, errors="coerce").astype("float64").rename(spec.label)
    if spec.task == "binary" and spec.target.expression is not None and not is_text(values):
        return values.astype("float64").rename(spec.label)
    order = classes if classes is not None else label_classes(frame, spec)
    assert order is not None
    keys = label_keys(values)
    codes = keys.map({c: float(i) for i, c in enumerate(order)})
    stray = keys.notna() & codes.isna()
    if stray.any() and spec.task == "binary":  # a third value: not a binary label
        raise FeatureError(
            f"a binary label has two values; {spec.target.column!r} also holds "
            f"{_shown(class_order(set(keys[stray])))} besides {order}: for more classes use task: multiclass"
        )
    return codes.astype("float64").rename(spec.label)


def _label_values(frame: pd.DataFrame, spec: ProblemSpec) -> pd.Series:
    """The label's raw values: the target column, or the rule's result (NaN where it is unknown)."""
    target = spec.target
    missing_cols = [c for c in spec.target_source_columns() if c not in frame.columns]
    if missing_cols:
        raise FeatureError(f"the target needs column(s) {missing_cols} that the data does not have")
    expression = target.expression
    if expression is None:
        return frame[target.column]
    try:
        result = expression.evaluate(frame)
    except ExpressionError as exc:
        raise FeatureError(f"target rule {target.rule!r} failed: {exc}") from exc
    if not (pd.api.types.is_bool_dtype(result.dtype) or pd.api.types.is_numeric_dtype(result.dtype)):
        raise FeatureError(f"target rule {target.rule!r} gives text; a label is a number or true/false")
    masked = (set(spec.target_source_columns()) - expression.columns) | expression.value_columns
    unknown = frame[sorted(masked)].isna().any(axis=1)
    label = pd.Series(result.to_numpy(dtype="float64", na_value=np.nan), index=frame.index, name=target.label)
    return label.mask(unknown)


def _binary_classes(seen: list[str], spec: ProblemSpec) -> list[str]:
    positive = spec.target.positive
    if positive is not None:
        key = label_key(positive)
        if seen and key not in seen:
            raise FeatureError(
                f"target.positive {positive!r} is not a value of {spec.target.column!r}; values seen: "
                f"{_shown(seen)}"
            )
        others = [v for v in seen if v != key]
        if len(others) > 1:
            raise FeatureError(
                f"a binary label has two values; {spec.target.column!r} holds {_shown(seen)}: "
                "for more classes use task: multiclass"
            )
        negative = others[0] if others else {"1": "0", "true": "false"}.get(key, f"not {key}")
        return [negative, key]
    for pair in (["0", "1"], ["false", "true"]):
        if set(seen) <= set(pair):
            return pair
    raise FeatureError(
        f"label {spec.target.column!r} holds {_shown(seen)}, not 0/1 or true/false: set target.positive to "
        f"the value that is the positive class (e.g. positive: {seen[-1] if seen else 'yes'})"
    )


def is_text(values: pd.Series) -> bool:
    """Neither numbers nor booleans: labels of this kind are matched by their text."""
    return not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype))


def class_order(keys: Iterable[str]) -> list[str]:
    """Label keys in the model's class order: numbers numerically, then text alphabetically."""

    def order(key: str) -> tuple[int, float, str]:
        try:
            return (0, float(key), key)
        except ValueError:
            return (1, 0.0, key)

    return sorted(keys, key=order)


def _shown(values: Any, limit: int = 10) -> str:
    items = [str(v) for v in list(values)[:limit]]
    more = len(list(values)) - len(items)
    return "[" + ", ".join(repr(v) for v in items) + (f", ... {more} more" if more > 0 else "") + "]"


def event_time(frame: pd.DataFrame, time: TimeSpec) -> pd.Series:
    """The UTC event time of each row (the time column, plus minutes when the spec says so)."""
    if time.column not in frame.columns:
        raise FeatureError(f"time column {time.column!r} is missing from the data")
    try:
        stamps = pd.to_datetime(frame[time.column], utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise FeatureError(f"time column {time.column!r} could not be parsed as times: {exc}") from exc
    if time.add_minutes:
        stamps = stamps + pd.to_timedelta(pd.to_numeric(frame[time.add_minutes]), unit="min")
    return stamps.astype("datetime64[ns, UTC]").rename(EVENT_TIME)


def point_in_time_join(
    left: pd.DataFrame, right: pd.DataFrame, join: JoinSpec, left_time: str = EVENT_TIME
) -> pd.DataFrame:
    """Attach, to each left row, the latest right row of the same key observed at or before its time.

    ``merge_asof(direction="backward")`` guarantees nothing observed after the left row's time leaks in;
    ``tolerance`` keeps stale observations out (they become missing values, which XGBoost handles).
    """
    needed = [*join.by, join.time_column, *join.columns]
    missing = [c for c in needed if c not in right.columns]
    if missing:
        raise FeatureError(f"join {join.name!r}: the joined data lacks column(s) {missing}")
    renamed = {c: f"{join.prefix}{c}" for c in join.columns}
    clash = [n for n in renamed.values() if n in left.columns]
    if clash:
        raise FeatureError(f"join {join.name!r}: column(s) {clash} exist on both sides; set a prefix")
    observed = f"_{join.name}_observed_at"
    rhs = right[needed].rename(columns=renamed).copy()
    rhs[observed] = pd.to_datetime(rhs[join.time_column], utc=True, format="mixed").astype(
        "datetime64[ns, UTC]"
    )
    rhs = rhs.drop(columns=[join.time_column]).dropna(subset=[observed]).sort_values(observed)
    lhs = left.reset_index(names="_row")
    lhs[left_time] = lhs[left_time].astype("datetime64[ns, UTC]")
    for key in join.by:  # CSV, Parquet and SQL give strings different dtypes; merge_asof wants one
        lhs[key] = lhs[key].astype(object)
        rhs[key] = rhs[key].astype(object)
    lhs = lhs.sort_values(left_time)
    merged = pd.merge_asof(
        lhs,
        rhs,
        left_on=left_time,
        right_on=observed,
        by=join.by,
        direction="backward",
        tolerance=pd.Timedelta(join.tolerance),
        allow_exact_matches=True,
    )
    return merged.set_index("_row").sort_index().rename_axis(left.index.name)


def feature_names(frame: pd.DataFrame, spec: ProblemSpec) -> list[str]:
    """The spec's features, or every column but the excluded, the target's and the time's."""
    derived = list(spec.time.features) if spec.time else []
    joined = [f"{j.prefix}{c}" for j in spec.joins for c in j.columns]
    if spec.features is not None:
        names = [*spec.features, *derived, *joined]
    else:
        blocked = set(spec.exclude) | set(spec.target_source_columns()) | {spec.label, EVENT_TIME}
        if spec.time:
            blocked |= {spec.time.column}
        names = [c for c in frame.columns if c not in blocked and not str(c).startswith("_")]
    leaking = sorted(set(names) & set(spec.target_source_columns()))
    if leaking:
        raise FeatureError(f"feature(s) {leaking} are read by the target rule: that would leak the label")
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise FeatureError(f"required feature column(s) missing from the data: {missing}")
    return list(dict.fromkeys(names))


def derive(
    raw: pd.DataFrame,
    spec: ProblemSpec,
    joined: dict[str, pd.DataFrame],
    classes: list[str] | None = None,
    *,
    strict_label: bool = True,
) -> pd.DataFrame:
    """Everything the spec derives from raw rows: label (where known), event time, calendar features, joins.

    Shared by training and batch inference, so both see exactly the same features. ``classes`` is the
    model's class order when a registered model's rows are derived (see :func:`make_label`). Scoring
    passes ``strict_label=False``: rows to score need no label, so one that cannot be made (a class the
    model never saw) leaves the label column out instead of stopping the run.
    """
    frame = raw.copy()
    if all(c in frame.columns for c in spec.target_source_columns()):
        try:
            frame[spec.label] = make_label(frame, spec, classes)
        except FeatureError:
            if strict_label:
                raise
    if spec.time:
        frame[EVENT_TIME] = event_time(frame, spec.time)
        local = (
            frame[EVENT_TIME].dt.tz_convert(spec.time.timezone) if spec.time.timezone else frame[EVENT_TIME]
        )
        for part in spec.time.features:
            frame[part] = getattr(local.dt, part).astype("int64")
    for join in spec.joins:
        if not spec.time:
            raise FeatureError(f"join {join.name!r} needs the spec's time section (a point-in-time join)")
        frame = point_in_time_join(frame, joined[join.name], join)
    return frame


def encode(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Model-ready feature columns under a fixed schema: numbers as floats, categoricals with its vocabulary.

    A value outside the vocabulary becomes missing here (batch scoring keeps the row); the service, which
    can answer the client, rejects it instead.
    """
    missing = [c for c in schema.names if c not in frame.columns]
    if missing:
        raise FeatureError(f"required feature column(s) missing from the data: {missing}")
    out = pd.DataFrame(index=frame.index)
    for column in schema.columns:
        series = frame[column.name]
        if column.kind == "categorical":
            values = series.astype("string").astype(object)
            out[column.name] = pd.Categorical(
                values.where(series.notna(), None), categories=column.categories
            )
        else:
            try:
                out[column.name] = pd.to_numeric(series, errors="raise").astype("float64")
            except (ValueError, TypeError) as exc:
                raise FeatureError(f"feature {column.name!r} is not numeric: {exc}") from exc
    return out


def infer_schema(
    frame: pd.DataFrame, spec: ProblemSpec, names: list[str], classes: list[str] | None = None
) -> FeatureSchema:
    """The contract learned from training rows: kinds, vocabularies, nullability, ranges and classes."""
    categorical = set(spec.categorical) if spec.categorical is not None else None
    columns: list[FeatureColumn] = []
    for name in names:
        series = frame[name]
        is_cat = name in categorical if categorical is not None else not pd.api.types.is_numeric_dtype(series)
        nullable = bool(series.isna().any())
        if is_cat:
            categories = sorted(series.dropna().astype("string").unique().tolist())
            columns.append(FeatureColumn(name, "categorical", categories=categories, nullable=nullable))
            continue
        try:
            numeric = pd.to_numeric(series, errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise FeatureError(
                f"feature {name!r} is not numeric and not declared categorical: {exc}"
            ) from exc
        columns.append(
            FeatureColumn(
                name,
                "numeric",
                minimum=_finite(numeric.min()),
                maximum=_finite(numeric.max()),
                nullable=nullable,
            )
        )
    return FeatureSchema(columns, spec.label, spec.task, classes)


def build_dataset(raw: pd.DataFrame, spec: ProblemSpec, joined: dict[str, pd.DataFrame]) -> Dataset:
    """Turn a validated raw frame (and the frames it joins) into labelled, model-ready rows.

    The label's classes (binary and multiclass) are decided here, once, from the spec and these rows, and
    recorded in the schema: every later reader of the model uses that order.
    """
    classes = (
        label_classes(raw, spec) if all(c in raw.columns for c in spec.target_source_columns()) else None
    )
    frame = derive(raw, spec, joined, classes)
    if spec.label not in frame.columns:
        raise FeatureError(f"the target needs column(s) {spec.target_source_columns()} that the data lacks")
    names = feature_names(frame, spec)
    unlabelled = int(frame[spec.label].isna().sum())
    frame = frame[frame[spec.label].notna()]
    schema = infer_schema(frame, spec, names, classes)
    features = encode(frame, schema)
    label = frame[spec.label].astype("int64") if classes is not None else frame[spec.label]
    extra = [EVENT_TIME] if spec.time else []
    kept = [*spec.slices, *spec.fairness.sensitive]  # judged by group, even when not a feature
    extra += [s for s in dict.fromkeys(kept) if s not in names and s in frame.columns and s not in extra]
    out = pd.concat([features, label.rename(spec.label), frame[extra]], axis=1)
    notes = [f"{unlabelled:,} rows without a label (a column the target reads is missing) were left out"]
    return Dataset(out, schema, unlabelled, notes)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
