"""Validation: each kind of bad data fails with a report naming the column and the problem."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.problem import load_spec
from stacks.components.data_validator import WhylogsValidator
from stacks.config import WhylogsConfig
from steps.data.validate import validate

SPEC = load_spec("flights")


@pytest.fixture
def validator() -> WhylogsValidator:
    return WhylogsValidator(WhylogsConfig(max_nan_fraction=0.2, min_rows=50, min_minority_fraction=0.01))


def failures(frame: pd.DataFrame, validator: WhylogsValidator) -> dict[str, str]:
    report = validate(frame, SPEC, validator, "test")
    return {f"{r.name}:{r.column}": r.detail for r in report.failures}


def test_real_sample_passes(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    report = validate(flights_sample, SPEC, validator, "sample")
    assert report.passed, report.summary()
    assert any("no label" in n for n in report.notes)  # cancelled flights are reported, not hidden
    assert "PASSED" in report.to_markdown()


def test_missing_required_column(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    found = failures(flights_sample.drop(columns=["carrier"]), validator)
    assert found == {"required column:carrier": "missing from the data"}


def test_all_nan_column(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.assign(distance=np.nan)
    found = failures(frame, validator)
    assert "missing values:distance" in found
    assert "observed 100.0%" in found["missing values:distance"]
    assert "exclude: [distance]" in found["missing values:distance"]  # the remedy, as spec keys


def test_label_with_one_class(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.assign(arr_delay=flights_sample["arr_delay"].clip(upper=0))
    found = failures(frame, validator)
    assert "label classes:delayed" in found and "needs both" in found["label classes:delayed"]
    assert "label balance:delayed" in found


def test_wrong_types(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.astype({"distance": object})
    frame.loc[frame.index[:5], "distance"] = "far"
    found = failures(frame, validator)
    assert "type:distance" in found and "'far'" in found["type:distance"]


def test_out_of_range(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.copy()
    frame.loc[frame.index[0], "month"] = 13
    found = failures(frame, validator)
    assert "value range:month" in found and "[1, 13]" in found["value range:month"]
    assert "validation.ranges.month" in found["value range:month"]


def test_too_many_unlabelled(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.copy()
    frame.loc[frame.index[: len(frame) // 2], "arr_delay"] = np.nan
    found = failures(frame, validator)
    assert "labelled rows:delayed" in found
    assert "missing values:arr_delay" in found


def test_too_few_rows(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    found = failures(flights_sample.head(10), validator)
    assert "row count:*" in found


def _mostly_missing(flights_sample: pd.DataFrame, fraction: float = 0.9) -> pd.DataFrame:
    frame = flights_sample.copy()
    frame.loc[frame.index[: int(len(frame) * fraction)], "distance"] = np.nan
    return frame


def test_natural_missingness_warns_on_a_first_training(
    flights_sample: pd.DataFrame, validator: WhylogsValidator
) -> None:
    """90% missing and no earlier data to say otherwise: reported with the key, not a stop."""
    report = validate(_mostly_missing(flights_sample), SPEC, validator, "test")
    assert report.passed, report.summary()
    (warning,) = [w for w in report.warnings if w.column == "distance"]
    assert "observed 90.0%" in warning.detail and "validation.max_nan_fraction.distance" in warning.detail
    assert "warning" in report.to_markdown()


def test_missingness_like_the_champions_passes_and_a_rise_blocks(
    flights_sample: pd.DataFrame, validator: WhylogsValidator
) -> None:
    frame = _mostly_missing(flights_sample)
    as_before = validate(frame, SPEC, validator, "test", missing_reference={"distance": 0.88})
    assert as_before.passed and "champion's training data (88.0%)" in as_before.warnings[0].detail
    risen = validate(frame, SPEC, validator, "test", missing_reference={"distance": 0.1})
    (failure,) = risen.failures
    assert failure.column == "distance" and "10.0% in the champion's training data" in failure.detail
    assert "validation.max_nan_fraction.distance" in failure.detail


def test_a_bound_the_spec_sets_is_binding(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    strict = SPEC.model_copy(
        update={"validation": SPEC.validation.model_copy(update={"max_nan_fraction": {"distance": 0.5}})}
    )
    (failure,) = validate(_mostly_missing(flights_sample), strict, validator, "test").failures
    assert failure.column == "distance" and "raise validation.max_nan_fraction.distance" in failure.detail


def _labelled(
    values: Sequence[object], task: str = "binary", **target: object
) -> tuple[pd.DataFrame, object]:
    from flywheel.contracts.problem import ProblemSpec

    n = len(values)
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": values})
    spec = ProblemSpec.model_validate(
        {"name": "t", "model_name": "t", "source": "x", "task": task, "target": {"column": "y", **target}}
    )
    return frame, spec


def test_text_labels_without_positive_name_the_values_and_the_key(validator: WhylogsValidator) -> None:
    frame, spec = _labelled(["good", "bad"] * 50)
    (failure,) = validate(frame, spec, validator, "t").failures  # type: ignore[arg-type]
    assert failure.name == "target" and "['bad', 'good']" in failure.detail
    assert "target.positive" in failure.detail
    frame, spec = _labelled(["good", "bad"] * 50, positive="bad")
    assert validate(frame, spec, validator, "t").passed  # type: ignore[arg-type]


def test_multiclass_classes_are_checked(validator: WhylogsValidator) -> None:
    frame, spec = _labelled(["a", "b", "c"] * 40, task="multiclass")
    report = validate(frame, spec, validator, "t")  # type: ignore[arg-type]
    assert report.passed and any(r.detail == "3 class(es) present: ['a', 'b', 'c']" for r in report.results)
    rare = ["a", "b"] * 299 + ["c"] * 2
    frame, spec = _labelled(rare, task="multiclass")
    report = validate(frame, spec, validator, "t")  # type: ignore[arg-type]
    assert report.passed and "min_minority_fraction" in report.warnings[0].detail
    frame, spec = _labelled(["a", "b", "d"] * 40, task="multiclass", classes=["a", "b", "c"])
    (failure,) = validate(frame, spec, validator, "t").failures  # type: ignore[arg-type]
    assert "['d']" in failure.detail and "target.classes" in failure.detail
