"""Splits: later months are the test set; without a time column a seeded stratified split."""

from __future__ import annotations

import pandas as pd

from flywheel.contracts.problem import load_spec
from steps.data.features import EVENT_TIME, build_dataset
from steps.data.split import split


def test_time_split_trains_on_the_past(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> None:
    spec = load_spec("flights")
    parts = split(build_dataset(flights_sample, spec, {"weather": weather}), spec)
    assert parts.train.frame[EVENT_TIME].max() <= parts.test.frame[EVENT_TIME].min()
    assert parts.fit.frame[EVENT_TIME].max() <= parts.valid.frame[EVENT_TIME].min()
    total = len(parts.train.frame) + len(parts.test.frame)
    assert abs(len(parts.test.frame) / total - 0.2) < 0.01
    assert parts.info["split.method"] == "time"
    assert parts.test.frame[EVENT_TIME].min().month >= 10  # the held-out period is the end of the year


def test_seeded_split_without_time_is_reproducible() -> None:
    from steps.data.sources import read_source

    spec = load_spec("diamonds")
    raw = read_source(spec.source).head(3000)
    ds = build_dataset(raw, spec, {})
    a, b = split(ds, spec), split(ds, spec)
    assert a.test.frame.index.equals(b.test.frame.index)
    assert a.info["split.method"] == "random"
    assert not set(a.train.frame.index) & set(a.test.frame.index)
