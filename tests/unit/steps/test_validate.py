"""Validation: each kind of bad data fails with a report naming the column and the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stacks.components.data_validator import WhylogsValidator
from steps.data.validate import validate
from steps.problem import load_spec

SPEC = load_spec("flights")


@pytest.fixture
def validator() -> WhylogsValidator:
    return WhylogsValidator(max_nan_fraction=0.2, min_rows=50, min_minority_fraction=0.01)


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


def test_label_with_one_class(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.assign(arr_delay=flights_sample["arr_delay"].clip(upper=0))
    found = failures(frame, validator)
    assert "label classes:delayed" in found and "exactly 2" in found["label classes:delayed"]
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


def test_too_many_unlabelled(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    frame = flights_sample.copy()
    frame.loc[frame.index[: len(frame) // 2], "arr_delay"] = np.nan
    found = failures(frame, validator)
    assert "labelled rows:delayed" in found
    assert "missing values:arr_delay" in found


def test_too_few_rows(flights_sample: pd.DataFrame, validator: WhylogsValidator) -> None:
    found = failures(flights_sample.head(10), validator)
    assert "row count:*" in found
