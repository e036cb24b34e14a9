"""Validate: required columns and types, NaN fractions, value ranges and label balance, with whylogs.

A failed check stops the flow with a report naming each failure: no model is produced from bad data.
"""

from __future__ import annotations

import pandas as pd

from stacks.components.data_validator import CheckResult, ValidationReport, WhylogsValidator
from steps.data.features import FeatureError, make_label
from steps.problem import ProblemSpec


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
    frame: pd.DataFrame, spec: ProblemSpec, validator: WhylogsValidator, dataset: str
) -> ValidationReport:
    """Check a raw frame against the spec; the report says what passed and what failed, and why."""
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
    label: str | None = None
    try:
        labels = make_label(frame, spec)
    except FeatureError as exc:
        report.results.append(CheckResult("target", spec.target.column, False, str(exc)))
        return report
    unlabelled = float(labels.isna().mean())
    report.results.append(
        CheckResult(
            "labelled rows",
            spec.label,
            unlabelled <= spec.validation.max_label_nan_fraction,
            f"{unlabelled:.1%} of rows have no label (at most {spec.validation.max_label_nan_fraction:.0%})",
        )
    )
    if spec.task == "binary":
        classes = sorted(labels.dropna().unique().tolist())
        report.results.append(
            CheckResult(
                "label classes",
                spec.label,
                len(classes) == 2,
                f"classes present: {classes}"
                + ("" if len(classes) == 2 else " (a binary task needs exactly 2)"),
            )
        )
        label = spec.label
    profiled[spec.label] = labels
    nan_limits = {c: validator.max_nan_fraction for c in checked if c not in spec.target_source_columns()}
    nan_limits |= dict(spec.validation.max_nan_fraction)
    view = validator.profile(profiled)
    constraints = validator.check_profile(
        view,
        dataset=dataset,
        rows=len(frame),
        nan_limits={c: v for c, v in nan_limits.items() if c in profiled.columns},
        ranges={c: r for c, r in spec.validation.ranges.items() if c in profiled.columns},
        label=label,
    )
    report.results.extend(constraints.results)
    missing_labels = int(labels.isna().sum())
    if missing_labels:
        report.notes.append(
            f"{missing_labels:,} rows have no label (for flights: cancelled or diverted, no arrival): "
            "they are reported here and left out of training"
        )
    return report


def check_join_source(frame: pd.DataFrame, columns: list[str], dataset: str) -> ValidationReport:
    """A joined table needs its key, time and value columns; their values are checked after the join."""
    report = ValidationReport(dataset=dataset, rows=len(frame))
    for column in columns:
        ok = column in frame.columns
        report.results.append(CheckResult("required column", column, ok, "present" if ok else "missing"))
    return report
