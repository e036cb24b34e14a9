"""Features: the label, the event time, point-in-time joins and model-ready columns, all from the spec.

Categoricals become pandas categoricals with a fixed vocabulary so XGBoost handles them natively and the
serving schema can name the allowed values. The feature schema built here is what the signature, the
serving request model and the monitoring reference all follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stacks.components.model_registry import FeatureColumn, FeatureSchema
from steps.expression import ExpressionError
from steps.problem import JoinSpec, ProblemSpec, TimeSpec

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


def make_label(frame: pd.DataFrame, spec: ProblemSpec) -> pd.Series:
    """The label as floats, NaN where a column the rule reads is missing (no label, not a negative).

    The rule is evaluated by :mod:`steps.expression`, never as code: true/false becomes 1.0/0.0 and a
    numeric rule (regression) stays numeric. A row gets no label when the rule's answer is unknown, or when
    a column it reads is missing; only a column read solely inside ``isnull()``/``notnull()`` may be missing
    (testing for that is the point of those checks).
    """
    target = spec.target
    missing_cols = [c for c in spec.target_source_columns() if c not in frame.columns]
    if missing_cols:
        raise FeatureError(f"the target needs column(s) {missing_cols} that the data does not have")
    expression = target.expression
    if expression is None:
        values = pd.to_numeric(frame[target.column], errors="coerce")
        return values.astype("float64").rename(target.label)
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


def derive(raw: pd.DataFrame, spec: ProblemSpec, joined: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Everything the spec derives from raw rows: label (where known), event time, calendar features, joins.

    Shared by training and batch inference, so both see exactly the same features.
    """
    frame = raw.copy()
    if all(c in frame.columns for c in spec.target_source_columns()):
        frame[spec.label] = make_label(frame, spec)
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


def infer_schema(frame: pd.DataFrame, spec: ProblemSpec, names: list[str]) -> FeatureSchema:
    """The contract learned from training rows: kinds, vocabularies, nullability and ranges."""
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
    return FeatureSchema(columns, spec.label, spec.task)


def build_dataset(raw: pd.DataFrame, spec: ProblemSpec, joined: dict[str, pd.DataFrame]) -> Dataset:
    """Turn a validated raw frame (and the frames it joins) into labelled, model-ready rows."""
    frame = derive(raw, spec, joined)
    if spec.label not in frame.columns:
        raise FeatureError(f"the target needs column(s) {spec.target_source_columns()} that the data lacks")
    names = feature_names(frame, spec)
    unlabelled = int(frame[spec.label].isna().sum())
    frame = frame[frame[spec.label].notna()]
    schema = infer_schema(frame, spec, names)
    features = encode(frame, schema)
    label = frame[spec.label].astype("int64") if spec.task == "binary" else frame[spec.label]
    extra = [EVENT_TIME] if spec.time else []
    extra += [s for s in spec.slices if s not in names and s in frame.columns and s not in extra]
    out = pd.concat([features, label.rename(spec.label), frame[extra]], axis=1)
    notes = [f"{unlabelled:,} rows without a label (a column the target reads is missing) were left out"]
    return Dataset(out, schema, unlabelled, notes)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
