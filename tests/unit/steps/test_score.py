"""steps/inference/score.py: chunked scoring with a writer thread: the same files, and loud failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.problem import load_spec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.components.model_registry import LoadedModel
from steps.data import features
from steps.inference.score import score_chunks
from steps.model.train import train

SPEC = load_spec("flights")


@pytest.fixture(scope="module")
def model_and_rows(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> tuple[LoadedModel, pd.DataFrame]:
    dataset = features.build_dataset(flights_sample, SPEC, {"weather": weather})
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 4, "max_cat_to_onehot": 1}
    model = LoadedModel("m", "1", "r", train(dataset, params, 10), dataset.schema, 0.3, "binary", "d")
    return model, dataset.X.head(2_500).reset_index(drop=True)


class FailingStore(ArtifactStore):
    """An artifact store whose third part cannot be written (a full disk, a lost connection)."""

    def write_bytes(self, relative: str, data: bytes) -> str:
        if relative.endswith("part-00002.parquet"):
            raise OSError("no space left on device")
        return super().write_bytes(relative, data)


def test_parts_rows_and_profile(model_and_rows: tuple[LoadedModel, pd.DataFrame], tmp_path: Path) -> None:
    model, rows = model_and_rows
    keys = pd.DataFrame({"id": np.arange(len(rows)) + 1_000})
    result = score_chunks(
        model, rows, ArtifactStore(str(tmp_path)), WhylogsValidator(), "out", keys=keys, chunk_rows=1_000
    )
    assert [Path(p).name for p in result.parts] == [f"part-0000{i}.parquet" for i in range(3)]
    scored = pd.concat([pd.read_parquet(p) for p in result.parts], ignore_index=True)
    assert list(scored.columns) == ["row", "id", "prediction", "decision"]
    assert scored["row"].tolist() == list(range(2_500)) and scored["id"].tolist() == keys["id"].tolist()
    expected = model.booster.inplace_predict(rows)
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-6)
    assert (scored["decision"] == (scored["prediction"] >= 0.3)).all()
    assert result.positive_rate == pytest.approx(float(scored["decision"].mean()))
    profile = WhylogsValidator.from_bytes(Path(result.profile_uri).read_bytes()).to_pandas()
    assert int(profile.loc["prediction", "counts/n"]) == 2_500


def test_a_failed_write_stops_scoring(
    model_and_rows: tuple[LoadedModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, rows = model_and_rows
    store = FailingStore(str(tmp_path))
    with pytest.raises(OSError, match="no space left on device"):
        score_chunks(model, rows, store, WhylogsValidator(), "out", chunk_rows=500)
    assert not store.exists("out/profile.bin")  # no profile claims rows that were never written
