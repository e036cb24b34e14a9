"""Validate: required columns and types, NaN fractions, value ranges and label balance, with whylogs.

A failed check stops the flow with a report naming each failure: no model is produced from bad data.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.validation import CheckResult, ValidationReport
from stacks.components.data_validator import WhylogsValidator
from steps.data.features import FeatureError, label_classes, make_label


class DataValidationError(ValueError):
    """Raised with the full report; ``str()`` names every failed check."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def required_columns(spec: ProblemSpec) -> list[str]:
    """Columns the main source must have: raw features, the target's inputs, the time and join keys."""
    derived = set(spec.time.features) if spec.time else set()
    joined = {f"{j.prefix}{c}" for j in spec.joins for c in j.columns}
    names = [f for f in (spec.features or []) if f not in derived and f not in joined]
    names += spec.target_source_columns()
    if spec.time:
        names += [spec.time.column] + ([spec.time.add_minutes] if spec.time.add_minutes else [])
    for join in spec.joins:
        names += join.by
    return list(dict.fromkeys(names))


def validate(
    frame: pd.DataFrame,
    spec: ProblemSpec,
    validator: WhylogsValidator,
    dataset: str,
    missing_reference: dict[str, float] | None = None,
) -> ValidationReport:
    """Check a raw frame against the spec; the report says what passed and what failed, and why.

    ``missing_reference`` is each column's missing fraction in the champion's training data, when there
    is a champion: the evidence that a column's missingness is normal (see :func:`_with_remedy`).
    Every failed check names the spec key (or stack setting) that would change it.
    """
    report = ValidationReport(dataset=dataset, rows=len(frame))
    missing = [c for c in required_columns(spec) if c not in frame.columns]
    for column in missing:
        report.results.append(CheckResult("required column", column, False, "missing from the data"))
    if missing:
        return report
    checked = [c for c in frame.columns if c not in spec.exclude]
    if spec.features is not None:
        checked = [c for c in required_columns(spec) if c in frame.columns]
    categorical = set(spec.categorical or [])
    for column in checked:
        if column in spec.target_source_columns() or column in categorical:
            continue
        if spec.time and column == spec.time.column:
            continue
        series = frame[column]
        if spec.categorical is not None and not pd.api.types.is_numeric_dtype(series):
            bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
            if bad.any():
                example = series[bad].iloc[0]
                report.results.append(
                    CheckResult(
                        "type",
                        column,
                        False,
                        f"expected numbers, found {int(bad.sum()):,} non-numeric values such as {example!r}",
                    )
                )
    profiled = frame[checked].copy()
    try:
        classes = label_classes(frame, spec)  # once: the label and the class checks both use it
        labels = make_label(frame, spec, classes)
    except FeatureError as exc:
        report.results.append(CheckResult("target", spec.target.column, False, str(exc)))
        return report
    unlabelled = float(labels.isna().mean())
    report.results.append(
        CheckResult(
            "labelled rows",
            spec.label,
            unlabelled <= spec.validation.max_label_nan_fraction,
            f"{unlabelled:.1%} of rows have no label (at most {spec.validation.max_label_nan_fraction:.0%}"
            f"{'' if unlabelled <= spec.validation.max_label_nan_fraction else _KEY_LABEL_NAN})",
        )
    )
    label: str | None = None
    if spec.task != "regression":
        report.results.extend(_class_checks(labels, spec, validator.min_minority_fraction, classes))
        label = spec.label if spec.task == "binary" else None
    profiled[spec.label] = labels
    explicit = dict(spec.validation.max_nan_fraction)
    defaults = {c: validator.max_nan_fraction for c in checked if c not in spec.target_source_columns()}
    nan_limits = defaults | explicit
    view = validator.profile(profiled)
    constraints = validator.check_profile(
        view,
        dataset=dataset,
        rows=len(frame),
        nan_limits={c: v for c, v in nan_limits.items() if c in profiled.columns},
        ranges={c: r for c, r in spec.validation.ranges.items() if c in profiled.columns},
        label=label,
    )
    observed = validator.missing_fractions(view)
    for result in constraints.results:
        report.results.append(_with_remedy(result, spec, explicit, observed, missing_reference))
    missing_labels = int(labels.isna().sum())
    if missing_labels:
        report.notes.append(
            f"{missing_labels:,} rows have no label (the target or a column its rule reads is missing): "
            "they are reported here and left out of training"
        )
    return report


_KEY_LABEL_NAN = "; set validation.max_label_nan_fraction in the spec to allow more"
MISSINGNESS_MARGIN = 0.05
"""How much more often a column may be missing than in the champion's training data before the default
bound blocks (sampling noise on a few thousand rows is about a percent)."""


def _with_remedy(
    result: CheckResult,
    spec: ProblemSpec,
    explicit: dict[str, float],
    observed: dict[str, float],
    missing_reference: dict[str, float] | None,
) -> CheckResult:
    """Name the spec key that changes a failed check; a default NaN bound blocks only on evidence.

    A column without its own bound in the spec is held to the stack's default only where the data shows
    its missingness is not normal: with a champion, when it is missing more often than in the champion's
    training data (beyond a small margin); on a first training there is nothing to compare with, so a
    column beyond the default bound is a warning (XGBoost learns from missingness), not a stop. A column
    with no value at all is always an error: no data makes an empty feature normal.
    """
    if result.passed:
        return result
    column = result.column
    if result.name == "missing values":
        key = f"validation.max_nan_fraction.{column}"
        if column in explicit:
            return replace(result, detail=f"{result.detail}; raise {key} in the spec if this is expected")
        before = None if missing_reference is None else missing_reference.get(column)
        now = observed.get(column, 0.0)
        if now >= 1.0:  # nothing to learn from, and nothing in the data says it should be so
            return replace(
                result,
                detail=f"{result.detail}: the column is empty; leave it out (`exclude: [{column}]`) or set "
                f"{key}: 1.0 in the spec",
            )
        if before is not None and now > before + MISSINGNESS_MARGIN:
            return replace(
                result,
                detail=f"{result.detail}, {before:.1%} in the champion's training data; set {key} in the "
                "spec if this is expected",
            )
        why = (
            f"as in the champion's training data ({before:.1%})"
            if before is not None
            else "no earlier training data to compare with"
        )
        return replace(
            result,
            severity="warning",
            detail=f"{result.detail}: above the stack's default bound, not blocking ({why}); set {key} "
            "in the spec to make a bound binding",
        )
    if result.name == "value range":
        return replace(
            result, detail=f"{result.detail}; widen validation.ranges.{column} in the spec if expected"
        )
    if result.name == "label balance":
        return replace(
            result, detail=f"{result.detail}; the stack's data_validator.min_minority_fraction sets the bound"
        )
    if result.name == "row count":
        return replace(result, detail=f"{result.detail}; the stack's data_validator.min_rows sets the bound")
    return result


def _class_checks(
    labels: pd.Series, spec: ProblemSpec, min_fraction: float, classes: list[str] | None
) -> list[CheckResult]:
    """A classification label needs its classes present: two for binary, at least two for multiclass,
    and (multiclass) every listed class seen at least once, each above the stack's minority bound."""
    counts = labels.dropna().astype("int64").value_counts().sort_index()
    present = len(counts)
    names = [classes[int(c)] if classes and int(c) < len(classes) else str(int(c)) for c in counts.index[:20]]
    listed = f": {names}" if present else ""
    if spec.task == "binary":
        return [
            CheckResult(
                "label classes",
                spec.label,
                present == 2,
                f"{present} class(es) present{listed}"
                + ("" if present == 2 else " (a binary task needs both)"),
            )
        ]
    results = [
        CheckResult(
            "label classes",
            spec.label,
            present >= 2,
            f"{present} class(es) present{listed}"
            + ("" if present >= 2 else " (a classifier needs at least 2)"),
        )
    ]
    total = int(counts.sum())
    rare = {
        (classes[int(k)] if classes else str(k)): int(v)
        for k, v in counts.items()
        if total and v / total < min_fraction
    }
    if rare:
        results.append(
            CheckResult(
                "label balance",
                spec.label,
                False,
                f"class(es) {sorted(rare)} below {min_fraction:.1%} of labelled rows ({rare}); the stack's "
                "data_validator.min_minority_fraction sets the bound",
                severity="warning",
            )
        )
    return results
