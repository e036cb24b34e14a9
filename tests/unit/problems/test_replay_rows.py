"""Which rows `flywheel replay` sends: after the training period by the spec's time column, a --from/--to
window, or a --source file; a problem without a time column is told to pass --source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.contracts.problem import ProblemSpec
from flywheel.replay import ReplayError, build_records, later_rows, rows_between, select_rows

runner = CliRunner()


def spec(**changes: Any) -> ProblemSpec:
    raw: dict[str, Any] = {
        "name": "toy",
        "model_name": "toy-model",
        "source": "unused.csv",
        "task": "binary",
        "target": {"column": "delay", "rule": "delay > 15", "name": "late"},
        "features": ["x", "carrier"],
        "time": {"column": "at"},
        "split": {"test_fraction": 0.2},
    }
    raw.update(changes)
    return ProblemSpec.model_validate(raw)


@pytest.fixture
def frame() -> pd.DataFrame:
    """100 labelled rows an hour apart, shuffled, plus 5 late rows without a label (a cancelled flight)."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
    labelled = pd.DataFrame(
        {
            "at": times,
            "x": np.arange(100.0),
            "carrier": ["AA", "UA"] * 50,
            "delay": rng.normal(10, 10, 100),
        }
    )
    unlabelled = pd.DataFrame(
        {
            "at": pd.date_range("2024-01-04 10:30", periods=5, freq="h", tz="UTC"),
            "x": [-1.0] * 5,
            "carrier": ["AA"] * 5,
            "delay": [np.nan] * 5,
        }
    )
    both = pd.concat([labelled, unlabelled], ignore_index=True)
    return both.sample(frac=1.0, random_state=1)


def test_later_rows_are_those_after_the_training_period(frame: pd.DataFrame) -> None:
    later = later_rows(frame, spec())
    # the training period is the first 80 labelled hours (as the split holds out the latest 20 %), so
    # the later rows are hours 80..99 and every unlabelled row after hour 79
    cutoff = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=79)
    expected = frame[frame["at"] > cutoff]
    assert sorted(later["x"]) == sorted(expected["x"])
    assert sorted(later.loc[later["delay"].notna(), "x"]) == [float(h) for h in range(80, 100)]
    assert (later["at"] > cutoff).all() and len(later) == 20 + (expected["delay"].isna()).sum()
    assert list(later.index) == [i for i in frame.index if i in set(later.index)]  # input order kept


def test_the_time_column_plus_minutes_is_the_event_time(frame: pd.DataFrame) -> None:
    shifted = frame.assign(minute=0)
    shifted.loc[shifted["x"] == 10.0, "minute"] = 100 * 60  # hour 10 + 100 h: now the latest row
    later = later_rows(shifted, spec(time={"column": "at", "add_minutes": "minute"}))
    assert 10.0 in set(later["x"]) and 80.0 not in set(later["x"])


def test_a_window_in_the_spec_time_zone(frame: pd.DataFrame) -> None:
    zoned = spec(time={"column": "at", "timezone": "America/New_York"})
    day = rows_between(frame, zoned, "2024-01-02", "2024-01-02")
    local = day["at"].dt.tz_convert("America/New_York")
    assert len(day) == 24 and (local.dt.day == 2).all()
    assert len(rows_between(frame, zoned, "2024-01-04", None)) == len(
        frame[frame["at"] >= "2024-01-04 05:00Z"]
    )
    assert len(rows_between(frame, spec(), None, "2024-01")) == len(frame)
    with pytest.raises(ReplayError, match="is after --to"):
        rows_between(frame, zoned, "2024-02", "2024-01")
    with pytest.raises(ReplayError, match="not a date, month or year"):
        rows_between(frame, zoned, "last tuesday", None)


def test_without_a_time_column_replay_asks_for_a_source(frame: pd.DataFrame, tmp_path: Path) -> None:
    untimed = spec(time=None)
    with pytest.raises(ReplayError, match=r"has no time column .*pass --source FILE_OR_URI"):
        later_rows(frame, untimed)
    with pytest.raises(ReplayError, match="pass --source"):
        select_rows(untimed)  # says so before reading the spec's source (which does not exist here)
    later = tmp_path / "later.csv"
    frame.head(7).to_csv(later, index=False)
    assert len(select_rows(untimed, str(later))) == 7


def test_records_and_labels_as_the_service_takes_them(frame: pd.DataFrame) -> None:
    features = [{"name": "x", "kind": "numeric"}, {"name": "carrier", "kind": "categorical"}]
    rows = frame.sort_values("at").tail(7)
    records, labels = build_records(rows, features, spec())
    assert records[0] == {"x": float(rows["x"].iloc[0]), "carrier": rows["carrier"].iloc[0]}
    expected = [None if pd.isna(d) else int(d > 15) for d in rows["delay"]]
    assert labels == expected and all(type(v) is int for v in labels if v is not None)
    regression = spec(task="regression", target={"column": "delay"}, threshold=0.5)
    _, numbers = build_records(rows, features, regression)
    assert numbers == [None if pd.isna(d) else pytest.approx(d) for d in rows["delay"]]


@pytest.fixture
def untimed_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLYWHEEL_PROBLEM", raising=False)
    path = tmp_path / "untimed.yaml"
    body = spec(time=None, source=str(tmp_path / "absent.csv")).model_dump(mode="json", exclude_defaults=True)
    path.write_text(yaml.safe_dump({**body, "task": "binary"}))
    yield path


def test_replay_cli_without_time_column_says_to_pass_source(untimed_spec: Path, tmp_path: Path) -> None:
    for problem in (str(untimed_spec), "diamonds"):
        result = runner.invoke(app, ["replay", "--problem", problem])
        assert result.exit_code == 1, result.output
        assert "has no time column" in result.output and "pass --source FILE_OR_URI" in result.output
        assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    later = tmp_path / "later.csv"
    pd.DataFrame({"at": ["2024-01-01"], "x": [1.0], "carrier": ["AA"], "delay": [3.0]}).to_csv(later)
    down = runner.invoke(
        app, ["replay", "--problem", str(untimed_spec), "--source", str(later), "--url", "http://127.0.0.1:9"]
    )
    assert down.exit_code == 1 and "no service answers at http://127.0.0.1:9" in down.output
