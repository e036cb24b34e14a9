"""stacks/components/data_validator.py: the faster profiling paths give whylogs' own statistics."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from stacks.components.data_validator import ProfileAccumulator, WhylogsValidator, _whylogs

EXACT = ["counts/n", "counts/null", "counts/nan", "counts/inf", "types/fractional", "types/integral"]
EXACT += ["types/string", "types/object", "distribution/mean", "distribution/max", "distribution/min"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = pd.DataFrame(
        {
            "x": rng.normal(size=3_000),
            "f32": rng.normal(size=3_000).astype("float32"),
            "n": rng.integers(0, 9, 3_000),
            "c": pd.Categorical(rng.choice(["a", "b", None], 3_000), categories=["a", "b", "z"]),
            "s": pd.Series(rng.choice(["u", "v"], 3_000)).astype("str"),
        }
    )
    out.loc[::7, "x"] = np.nan
    out.loc[::11, "x"] = np.inf
    out.loc[::13, "f32"] = -np.inf
    return out


def _summary(view: object) -> pd.DataFrame:
    return view.to_pandas()[EXACT].sort_index()  # type: ignore[attr-defined]


def test_vectorised_float_split_matches_whylogs(frame: pd.DataFrame) -> None:
    _whylogs()
    from whylogs.core.preprocessing import PreprocessedColumn

    fast = _summary(WhylogsValidator().profile(frame))
    patched = PreprocessedColumn._pandas_split
    original = importlib.reload(importlib.import_module("whylogs.core.preprocessing"))
    try:  # whylogs' own per-value code, freshly imported
        PreprocessedColumn._pandas_split = original.PreprocessedColumn._pandas_split
        slow = _summary(WhylogsValidator().profile(frame))
    finally:
        PreprocessedColumn._pandas_split = patched
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.loc["x", "counts/nan"] == 390 and fast.loc["x", "counts/inf"] == 273


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # whylogs merging the infinite mean of column x
def test_accumulator_equals_profiles_merged(frame: pd.DataFrame) -> None:
    validator = WhylogsValidator()
    parts = [frame.iloc[:1_000], frame.iloc[1_000:2_200], frame.iloc[2_200:]]
    merged = validator.merge([validator.profile(p) for p in parts])
    accumulated = ProfileAccumulator()
    for part in parts:
        accumulated.track(part)
    assert accumulated.rows == 3_000
    pd.testing.assert_frame_equal(_summary(accumulated.view()), _summary(merged))
