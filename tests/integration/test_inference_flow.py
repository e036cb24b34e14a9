"""Batch inference on the local stack: the champion scores a source in chunks into Parquet, with a profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.inference import inference
from flows.training import training
from flywheel.contracts.problem import load_spec
from stacks.components.data_validator import WhylogsValidator
from stacks.components.lineage import recorded_events
from stacks.components.model_registry import load_model
from steps.data import features
from steps.data.sources import read_source

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_batch_scores_match_the_model(module_home: Path, tmp_path: Path) -> None:
    trained = training(problem="flights", n_trials=1, sample_rows=6000, seed=3)
    spec = load_spec("flights")
    flights = read_source(spec.source)
    later = flights[flights["month"] == 12].head(7000)  # unlabelled rows are scored too
    later = later.assign(arr_delay=np.nan)
    source = tmp_path / "december.parquet"
    later.to_parquet(source, index=False)
    result = inference(
        problem="flights", source=str(source), chunk_rows=3000, keep_columns=["carrier", "tailnum"]
    )
    assert result["version"] == trained["version"] and result["rows"] == 7000
    assert len(result["parts"]) == 3
    scored = pd.concat([pd.read_parquet(p) for p in result["parts"]], ignore_index=True)
    assert len(scored) == 7000 and {"row", "prediction", "decision", "carrier", "tailnum"} <= set(
        scored.columns
    )
    assert scored["row"].tolist() == list(range(7000))
    model = load_model("flight-delay", trained["version"])
    weather = read_source(spec.joins[0].source)
    expected = model.booster.inplace_predict(
        features.encode(
            features.derive(later.reset_index(drop=True), spec, {"weather": weather}), model.schema
        )
    )
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-6)
    with open(result["profile"], "rb") as handle:
        profile = WhylogsValidator.from_bytes(handle.read())
    assert (
        int(profile.to_pandas().loc["prediction", "counts/n"]) == 7000
    )  # 3 chunks, each under the sample cap
    *_, start, done = recorded_events(module_home / "lineage" / "openlineage.jsonl", "flights.inference")
    assert (start["eventType"], done["eventType"]) == ("START", "COMPLETE")
    inputs = {i["name"]: i["facets"]["version"]["datasetVersion"] for i in done["inputs"]}
    assert inputs[f"models:/flight-delay/{trained['version']}"] == trained["version"]
    assert result["snapshot"] in inputs.values()
    assert [o["name"] for o in done["outputs"]] == [result["output"]]


def test_no_champion_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(ValueError, match="no version of 'flight-delay' has the alias 'champion'"):
        inference(problem="flights", sample_rows=100)
