"""Direct in-place prediction (serving.predictor) against XGBoost's public ``inplace_predict``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from serving.predictor import InplacePredictor


def _data(rows: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "gappy": np.where(rng.random(rows) < 0.2, np.nan, rng.normal(size=rows)),
            "kind": pd.Categorical(rng.choice(["a", "b", "c", "d"], rows), categories=["a", "b", "c", "d"]),
        }
    )
    signal = frame["x"] + np.nan_to_num(frame["gappy"].to_numpy()) + (frame["kind"] == "c") * 1.5
    return frame, (signal + rng.normal(scale=0.5, size=rows)).to_numpy()


def _codes(frame: pd.DataFrame) -> np.ndarray:
    """The service's input: float32, categories as training codes, missing as NaN."""
    out = frame.copy()
    out["kind"] = out["kind"].cat.codes.astype("float32")
    return out.to_numpy(dtype=np.float32)


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "multi:softprob"])
def test_direct_predictions_equal_the_booster(objective: str) -> None:
    frame, signal = _data()
    label = (signal > 0.5).astype(int) if objective.startswith("binary") else signal
    extra = {}
    if objective.startswith("multi"):
        label, extra = np.digitize(signal, [-0.5, 0.5, 1.5]), {"num_class": 4}
    booster = xgb.train(
        {"objective": objective, "max_depth": 4, "nthread": 1, **extra},
        xgb.DMatrix(frame, label, enable_categorical=True),
        30,
    )
    predictor = InplacePredictor(booster)
    assert predictor.direct
    matrix = _codes(frame)
    expected = booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    for rows in (matrix[:1], matrix[:7], matrix, np.asfortranarray(matrix[:50])):
        got = predictor(rows)
        assert got.dtype == np.float64 and got.shape == (len(rows), *expected.shape[1:])
        np.testing.assert_allclose(got, expected[: len(rows)], rtol=1e-6)
    first = predictor(matrix[:1])
    predictor(matrix[1:2])
    assert first[0] == pytest.approx(expected[0], rel=1e-6)  # a copy, not XGBoost's reused buffer


def test_without_the_binding_the_public_wrapper_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another XGBoost whose internals moved: same predictions, through the public method, and said."""
    frame, signal = _data(500)
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(frame, signal, enable_categorical=True), 10)

    def moved() -> None:
        raise ImportError("cannot import name 'c_bst_ulong' from 'xgboost.core'")

    monkeypatch.setattr("serving.predictor._binding", moved)
    with caplog.at_level(logging.WARNING, logger="flywheel.serving"):
        predictor = InplacePredictor(booster)
    assert not predictor.direct
    assert "public wrapper" in caplog.text
    np.testing.assert_allclose(predictor(_codes(frame)), booster.inplace_predict(_codes(frame)), rtol=1e-6)


def test_a_binding_that_disagrees_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    """The probe rows catch a direct call that computes something else (here: margins, not probabilities)."""
    frame, signal = _data(500)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(frame, (signal > 0).astype(int), enable_categorical=True),
        10,
    )

    class Margins(InplacePredictor):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "_args":
                value = value.replace(b'"type": 0', b'"type": 1')  # type: ignore[attr-defined]
            super().__setattr__(name, value)

    with caplog.at_level(logging.WARNING, logger="flywheel.serving"):
        predictor = Margins(booster)
    assert not predictor.direct
    assert "disagrees" in caplog.text
    np.testing.assert_allclose(predictor(_codes(frame)), booster.inplace_predict(_codes(frame)), rtol=1e-6)
