"""Compare two data sets: what changed in the schema, the rows, each column and the label.

Pure: two frames (a bounded sample of each side) and their whylogs profiles in, a :class:`DataDiff` out;
reading snapshots, sources and model versions is the CLI's job (``flywheel/data_cli.py``) and drawing it
is :mod:`steps.data.diff_report`'s. Drift is scored by the validator monitoring uses
(``WhylogsValidator.drift_scores``, Hellinger by default), on profiles of both sides, so a distance here
means what it means in a monitoring report; the spec's ``monitoring.ignore_drift`` columns (clock
columns) are scored but never flagged, as there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from stacks.components.data_validator import WhylogsValidator
from steps.data.features import FeatureError, label_keys, make_label

Kind = Literal["numeric", "categorical", "other"]

TOP_VALUES = 5
"""Top values shown per categorical column and side."""
LISTED_CATEGORIES = 20
"""New or vanished categories listed per column; the rest are counted."""
HISTOGRAM_BINS = 30
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FEEDBACK_COLUMNS = ("request_id", "served_at", "label")
"""A feedback snapshot's meta columns (steps.data.feedback): its label is 0/1 or the class index."""


@dataclass(frozen=True)
class Side:
    """One data set: how it was named, where it came from, how many rows it has and how many were read."""

    name: str
    origin: str
    rows: int
    sampled: int
    profile_note: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retyped:
    column: str
    before: str
    after: str


@dataclass(frozen=True)
class NumericStats:
    count: int
    missing_fraction: float
    mean: float
    std: float
    quantiles: dict[float, float]
    minimum: float
    maximum: float


@dataclass(frozen=True)
class CategoricalStats:
    count: int
    missing_fraction: float
    distinct: int
    top: list[tuple[str, float]]
    """(value, share of the non-missing rows), most frequent first."""


Stats = NumericStats | CategoricalStats


@dataclass(frozen=True)
class Histogram:
    """Shared bin edges and each side's share of rows per bin (for the page's overlaid histograms)."""

    edges: list[float]
    a: list[float]
    b: list[float]


@dataclass(frozen=True)
class ColumnDiff:
    column: str
    kind: Kind
    a: Stats | None
    b: Stats | None
    drift: float | None = None
    """Hellinger distance (or the stack's algorithm's statistic) of B against A; None: not comparable."""
    drifted: bool = False
    watched: bool = True
    """False for the spec's ``monitoring.ignore_drift`` columns: scored, never flagged."""
    new_categories: list[str] = field(default_factory=list)
    vanished_categories: list[str] = field(default_factory=list)
    new_count: int = 0
    vanished_count: int = 0
    histogram: Histogram | None = None


@dataclass(frozen=True)
class LabelBalance:
    label: str
    a: dict[str, float]
    b: dict[str, float]
    """Class -> share of the labelled rows, per side."""
    a_missing: float
    b_missing: float
    note: str = ""


@dataclass(frozen=True)
class DataDiff:
    a: Side
    b: Side
    added: list[str]
    removed: list[str]
    retyped: list[Retyped]
    columns: list[ColumnDiff]
    algorithm: str
    threshold: float
    label: LabelBalance | None = None
    label_note: str = ""
    schema_a: dict[str, str] = field(default_factory=dict)
    schema_b: dict[str, str] = field(default_factory=dict)
    """Column -> dtype of each side."""

    @property
    def drifted(self) -> list[ColumnDiff]:
        """The watched columns at or beyond the threshold, largest distance first."""
        return sorted((c for c in self.columns if c.drifted), key=lambda c: -(c.drift or 0.0))

    def by_drift(self) -> list[ColumnDiff]:
        """Every column, largest distance first; the columns that could not be scored last."""
        return sorted(self.columns, key=lambda c: (c.drift is None, -(c.drift or 0.0), c.column))


def kind_of(values: pd.Series) -> Kind:
    """Numbers (booleans are categories) are numeric; text, categoricals and booleans categorical."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        return "other"
    return "categorical"


def _missing(values: pd.Series) -> float:
    return float(values.isna().mean()) if len(values) else 0.0


def numeric_stats(values: pd.Series) -> NumericStats:
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    finite = numbers[np.isfinite(numbers.to_numpy())]
    empty = finite.empty
    return NumericStats(
        count=len(values),
        missing_fraction=_missing(numbers),
        mean=math.nan if empty else float(finite.mean()),
        std=math.nan if len(finite) < 2 else float(finite.std()),
        quantiles={q: math.nan if empty else float(finite.quantile(q)) for q in QUANTILES},
        minimum=math.nan if empty else float(finite.min()),
        maximum=math.nan if empty else float(finite.max()),
    )


def _as_text(values: pd.Series) -> pd.Series:
    return values.dropna().astype(str)


def categorical_stats(values: pd.Series) -> CategoricalStats:
    text = _as_text(values)
    shares = text.value_counts(normalize=True)
    return CategoricalStats(
        count=len(values),
        missing_fraction=_missing(values),
        distinct=int(shares.size),
        top=[(str(k), float(v)) for k, v in shares.head(TOP_VALUES).items()],
    )


def _stats(values: pd.Series, kind: Kind) -> Stats | None:
    if kind == "numeric":
        return numeric_stats(values)
    if kind == "categorical":
        return categorical_stats(values)
    return categorical_stats(values.astype("string")) if len(values) else None


def histogram(a: pd.Series, b: pd.Series, bins: int = HISTOGRAM_BINS) -> Histogram | None:
    """Both sides over shared bins between the 1st and 99th percentile of the two together."""
    xa = pd.to_numeric(a, errors="coerce").to_numpy("float64")
    xb = pd.to_numeric(b, errors="coerce").to_numpy("float64")
    xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
    if not len(xa) or not len(xb):
        return None
    both = np.concatenate([xa, xb])
    low, high = np.quantile(both, [0.01, 0.99])
    if not high > low:
        low, high = float(both.min()), float(both.max())
    if not high > low:
        return None
    edges = np.linspace(low, high, bins + 1)
    ha = np.histogram(np.clip(xa, low, high), edges)[0] / len(xa)
    hb = np.histogram(np.clip(xb, low, high), edges)[0] / len(xb)
    return Histogram([float(e) for e in edges], ha.tolist(), hb.tolist())


def _categories(a: pd.Series, b: pd.Series) -> tuple[list[str], list[str], int, int]:
    """Categories of B that A lacks (new) and of A that B lacks (vanished), most frequent first."""
    counts_a, counts_b = _as_text(a).value_counts(), _as_text(b).value_counts()
    seen_a, seen_b = set(counts_a.index), set(counts_b.index)
    new = [str(v) for v in counts_b.index if v not in seen_a]
    vanished = [str(v) for v in counts_a.index if v not in seen_b]
    return new[:LISTED_CATEGORIES], vanished[:LISTED_CATEGORIES], len(new), len(vanished)


def schema_changes(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[str], list[str], list[Retyped]]:
    """Columns only in B (added), only in A (removed), and in both with another dtype (retyped)."""
    added = [str(c) for c in b.columns if c not in a.columns]
    removed = [str(c) for c in a.columns if c not in b.columns]
    retyped = [
        Retyped(str(c), str(a[c].dtype), str(b[c].dtype))
        for c in a.columns
        if c in b.columns and _type_name(a[c]) != _type_name(b[c])
    ]
    return added, removed, retyped


def _type_name(values: pd.Series) -> str:
    """A dtype as a schema change sees it: object and pandas' string dtype are both text."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_string_dtype(dtype):
        return "text"
    return str(dtype)


def label_values(frame: pd.DataFrame, spec: ProblemSpec) -> tuple[pd.Series | None, str]:
    """The spec's label on a frame as class keys (binary 0/1, multiclass the class), or None and why.

    A feedback snapshot holds it as ``label`` (0/1 or the class index); a source as the target column,
    or through the target rule (``arr_delay > 15``), which is evaluated as training evaluates it."""
    if spec.task == "regression":
        return None, "regression: the label's statistics are in the column table"
    if all(c in frame.columns for c in FEEDBACK_COLUMNS):
        keys = label_keys(frame["label"])
        classes = spec.target.classes
        if spec.task == "multiclass" and classes is not None:
            names = {str(i): str(c) for i, c in enumerate(classes)}
            keys = keys.map(lambda k: names.get(k, k) if k is not None else None)
        return keys, ""
    if spec.task == "multiclass" and spec.target.expression is None:
        if spec.target.column in frame.columns:
            return label_keys(frame[spec.target.column]), ""
        return None, f"no label column {spec.target.column!r}"
    if spec.label in frame.columns and spec.label not in spec.target_source_columns():
        return label_keys(frame[spec.label]), ""
    try:
        return label_keys(make_label(frame, spec)), ""
    except FeatureError as exc:
        return None, str(exc)


def _shares(keys: pd.Series) -> tuple[dict[str, float], float]:
    missing = _missing(keys)
    shares = keys.dropna().value_counts(normalize=True)
    return {str(k): float(v) for k, v in sorted(shares.items(), key=lambda kv: str(kv[0]))}, missing


def label_balance(a: pd.DataFrame, b: pd.DataFrame, spec: ProblemSpec) -> tuple[LabelBalance | None, str]:
    """Each side's class shares when both hold the spec's label, else None and why not."""
    la, why_a = label_values(a, spec)
    lb, why_b = label_values(b, spec)
    if la is None or lb is None:
        return None, f"label balance not compared: {why_a or why_b}"
    sa, ma = _shares(la)
    sb, mb = _shares(lb)
    return LabelBalance(spec.label, sa, sb, ma, mb), ""


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    side_a: Side,
    side_b: Side,
    validator: WhylogsValidator,
    *,
    profile_a: Any | None = None,
    profile_b: Any | None = None,
    spec: ProblemSpec | None = None,
    ignore_drift: Sequence[str] = (),
) -> DataDiff:
    """The diff of B against A (A is the reference, as training is to monitoring).

    ``profile_a``/``profile_b`` are whylogs profile views (a snapshot's stored profile of all its rows);
    a side without one is profiled from its frame."""
    added, removed, retyped = schema_changes(a, b)
    changed = {r.column for r in retyped}
    view_a = profile_a if profile_a is not None else validator.profile(a)
    view_b = profile_b if profile_b is not None else validator.profile(b)
    scores = validator.drift_scores(view_a, view_b)
    ignored = set(ignore_drift)
    columns: list[ColumnDiff] = []
    for name in [*a.columns, *(c for c in b.columns if c not in a.columns)]:
        in_a, in_b = name in a.columns, name in b.columns
        kind = kind_of(a[name] if in_a else b[name])
        if in_a and in_b and name in changed:
            columns.append(
                ColumnDiff(
                    str(name), kind, _stats(a[name], kind_of(a[name])), _stats(b[name], kind_of(b[name]))
                )
            )
            continue
        stats_a = _stats(a[name], kind) if in_a else None
        stats_b = _stats(b[name], kind) if in_b else None
        if not (in_a and in_b):
            columns.append(ColumnDiff(str(name), kind, stats_a, stats_b))
            continue
        score = scores.get(str(name))
        statistic = None if score is None or math.isnan(score["statistic"]) else float(score["statistic"])
        watched = str(name) not in ignored
        new: list[str] = []
        vanished: list[str] = []
        n_new = n_vanished = 0
        if kind == "categorical":
            new, vanished, n_new, n_vanished = _categories(a[name], b[name])
        columns.append(
            ColumnDiff(
                str(name),
                kind,
                stats_a,
                stats_b,
                drift=statistic,
                drifted=watched and statistic is not None and bool(score and score["drifted"]),
                watched=watched,
                new_categories=new,
                vanished_categories=vanished,
                new_count=n_new,
                vanished_count=n_vanished,
                histogram=histogram(a[name], b[name]) if kind == "numeric" else None,
            )
        )
    label, label_note = (None, "") if spec is None else label_balance(a, b, spec)
    return DataDiff(
        a=side_a,
        b=side_b,
        added=added,
        removed=removed,
        retyped=retyped,
        columns=columns,
        algorithm=validator.drift_algorithm,
        threshold=validator.drift_threshold,
        label=label,
        label_note=label_note,
        schema_a={str(c): str(t) for c, t in a.dtypes.items()},
        schema_b={str(c): str(t) for c, t in b.dtypes.items()},
    )
