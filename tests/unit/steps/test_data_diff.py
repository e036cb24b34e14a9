"""The pure data diff: schema changes, categories, drift through the monitoring validator, label balance,
and how it reads (numbers formatted, the page self-contained)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.problem import load_spec
from stacks.components.data_validator import WhylogsValidator
from steps.data.diff import DataDiff, Side, compare, label_balance, schema_changes
from steps.data.diff_report import num, to_html, to_text

N = 4_000


def _diff(a: pd.DataFrame, b: pd.DataFrame, ignore_drift: Sequence[str] = ()) -> DataDiff:
    sides = Side("A", "a", len(a), len(a)), Side("B", "b", len(b), len(b))
    return compare(a, b, *sides, WhylogsValidator(), ignore_drift=ignore_drift)


def test_added_removed_and_retyped_columns() -> None:
    a = pd.DataFrame({"kept": [1, 2], "gone": [1.0, 2.0], "code": [1, 2], "text": ["x", "y"]})
    b = pd.DataFrame({"kept": [3, 4], "code": ["1", "2"], "text": pd.Series(["x", "z"], dtype="string")})
    b["new"] = [0.5, 0.7]
    added, removed, retyped = schema_changes(a, b)
    assert added == ["new"] and removed == ["gone"]
    # object and pandas' string dtype are both text: not a schema change
    assert [(r.column, r.before, r.after) for r in retyped] == [("code", "int64", str(b["code"].dtype))]
    diff = _diff(a, b)
    assert diff.schema_a["gone"] == "float64" and diff.schema_b["new"] == "float64"
    code = next(c for c in diff.columns if c.column == "code")
    assert code.drift is None  # a retyped column is not scored against its old self


def test_new_and_vanished_categories() -> None:
    a = pd.DataFrame({"carrier": ["UA"] * 50 + ["AA"] * 30 + ["OO"] * 20})
    b = pd.DataFrame({"carrier": ["UA"] * 50 + ["AA"] * 30 + ["ZZ"] * 15 + ["YY"] * 5})
    (carrier,) = _diff(a, b).columns
    assert carrier.kind == "categorical"
    assert carrier.new_categories == ["ZZ", "YY"] and carrier.new_count == 2  # most frequent first
    assert carrier.vanished_categories == ["OO"] and carrier.vanished_count == 1


def test_drift_orders_columns_by_the_size_of_the_shift() -> None:
    # whylogs' KLL sketches are randomised: the Hellinger distances move by about 0.01-0.02 from run to
    # run, so each shift is chosen well clear of its neighbours and of the 0.15 threshold (small ~0.11)
    rng = np.random.default_rng(0)
    a = pd.DataFrame({c: rng.normal(0, 1, N) for c in ("big", "small", "none", "clock")})
    b = pd.DataFrame(
        {
            "big": rng.normal(2.0, 1, N),
            "small": rng.normal(0.3, 1, N),
            "none": rng.normal(0, 1, N),
            "clock": rng.normal(3.0, 1, N),
        }
    )
    diff = _diff(a, b, ignore_drift=["clock"])
    scores = {c.column: c.drift for c in diff.columns}
    assert all(s is not None for s in scores.values())
    assert scores["clock"] > scores["big"] > scores["small"] > scores["none"]  # type: ignore[operator]
    assert [c.column for c in diff.by_drift()] == ["clock", "big", "small", "none"]
    # the same threshold monitoring applies; a clock column is scored but never flagged
    assert [c.column for c in diff.drifted] == ["big"]
    assert diff.algorithm == "hellinger" and diff.threshold == WhylogsValidator().drift_threshold
    clock = next(c for c in diff.columns if c.column == "clock")
    assert not clock.watched and not clock.drifted
    big = next(c for c in diff.columns if c.column == "big")
    assert big.histogram is not None and sum(big.histogram.b) == pytest.approx(1.0)
    assert big.b is not None and big.b.mean == pytest.approx(2.0, abs=0.1)  # type: ignore[union-attr]


def test_label_balance_from_the_rule_and_from_feedback() -> None:
    spec = load_spec("flights")  # target: arr_delay > 15, labelled 'delayed'
    source = pd.DataFrame({"arr_delay": [0.0, 20.0, 30.0, 40.0, np.nan]})
    feedback = pd.DataFrame(
        {"request_id": list("abcd"), "served_at": [1.0, 2.0, 3.0, 4.0], "label": [0, 0, 0, 1]}
    )
    balance, note = label_balance(source, feedback, spec)
    assert note == "" and balance is not None and balance.label == "delayed"
    assert balance.a == {"0": pytest.approx(0.25), "1": pytest.approx(0.75)}
    assert balance.a_missing == pytest.approx(0.2)  # a missing arrival delay has no label
    assert balance.b == {"0": pytest.approx(0.75), "1": pytest.approx(0.25)} and balance.b_missing == 0.0
    none, why = label_balance(source, pd.DataFrame({"other": [1]}), spec)
    assert none is None and "arr_delay" in why


def test_regression_has_no_label_balance() -> None:
    spec = load_spec("diamonds")
    frame = pd.DataFrame({spec.target.column: [1.0, 2.0]})
    balance, why = label_balance(frame, frame, spec)
    assert balance is None and "regression" in why


def test_the_text_and_the_page_read_as_numbers_for_people() -> None:
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"distance": rng.normal(1500, 100, N), "origin": rng.choice(["EWR", "JFK"], N)})
    b = pd.DataFrame(
        {"distance": rng.normal(2500, 100, N + 1234), "origin": rng.choice(["JFK", "LGA"], N + 1234)}
    )
    text = to_text(_diff(a, b))
    assert text.startswith("4,000 -> 5,234 rows (+1,234, +30.9%)")
    assert "2 of 2 watched column(s) moved" in text and "LGA" in text and "EWR" in text
    page = to_html(_diff(a, b))
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") >= 3
    for heading in ("Data sets", "Drift per column", "Numeric columns", "Categorical columns"):
        assert f"<h2>{heading}</h2>" in page
    assert num(1234) == "1,234" and num(1234.56) == "1,234.6" and num(0.12345) == "0.1235"
    assert num(float("nan")) == "-"


@pytest.mark.slow
def test_flights_first_half_against_second_names_what_monitoring_flags_and_no_clock_column() -> None:
    """The issue's check on the real flights: January-June against July-December."""
    from steps.data.sources import read_source

    spec = load_spec("flights")
    flights = read_source(spec.source)
    first, second = flights[flights["month"] <= 6], flights[flights["month"] > 6]
    validator = WhylogsValidator()
    view_a, view_b = validator.profile(first), validator.profile(second)
    diff = compare(
        first,
        second,
        Side("Jan-Jun", spec.source, len(first), len(first)),
        Side("Jul-Dec", spec.source, len(second), len(second)),
        validator,
        profile_a=view_a,
        profile_b=view_b,
        spec=spec,
        ignore_drift=spec.monitoring.ignore_drift,
    )
    flagged = {c.column for c in diff.drifted}
    # monitoring's rule on the same profiles: the drift score at or past the threshold, clock columns ignored
    scores = validator.drift_scores(view_a, view_b)
    monitored = {
        column
        for column, score in scores.items()
        if score["drifted"] and column not in spec.monitoring.ignore_drift
    }
    assert "month" in flagged and flagged == monitored & set(first.columns)
    assert not flagged & set(spec.monitoring.ignore_drift)
