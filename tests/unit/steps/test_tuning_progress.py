"""Tuning reports each finished trial to a progress callback: its value and the best so far.

A flow shows these in Prefect's UI; here they are collected in a list, on a small slice of the real
flights data, in one process and on a real two-worker Dask cluster.
"""

from __future__ import annotations

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from flywheel.contracts.problem import load_spec
from steps.data.features import build_dataset
from steps.data.split import Splits, split
from steps.model.trial import ProgressCounter, TrialProgress
from steps.model.tune import tune

SPEC = load_spec("flights")


@pytest.fixture(scope="module")
def parts(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> Splits:
    return split(build_dataset(flights_sample.head(4000), SPEC, {"weather": weather}), SPEC)


def _check_running_best(seen: list[TrialProgress], n: int) -> None:
    """One report per trial, counted 1..n, each with the best completed value up to it (AUC: highest)."""
    assert [p.done for p in seen] == list(range(1, n + 1))
    assert all(p.total == n and p.metric == "auc" for p in seen)
    assert len({p.number for p in seen}) == n
    best: float | None = None
    for p in seen:
        if p.value is not None:
            best = p.value if best is None else max(best, p.value)
        assert p.best == best
        assert p.elapsed_s >= 0
    assert seen[-1].fraction == 1.0


def test_each_trial_reports_its_value_and_the_best_so_far(parts: Splits) -> None:
    seen: list[TrialProgress] = []
    result = tune(
        parts.fit, parts.valid, SPEC, study_name="p", n_trials=5, timeout_s=120, seed=2, on_trial=seen.append
    )
    _check_running_best(seen, 5)
    assert seen[-1].best == pytest.approx(result.best_value)
    line = seen[-1].describe()
    assert line.startswith("trial 5/5 (#") and f"best auc {result.best_value:.4f}" in line


@pytest.mark.slow
def test_trials_on_dask_workers_report_in_the_client_process(parts: Splits) -> None:
    seen: list[TrialProgress] = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        result = tune(
            parts.fit,
            parts.valid,
            SPEC,
            study_name="pd",
            n_trials=4,
            seed=3,
            client=client,
            on_trial=seen.append,
        )
    _check_running_best(seen, 4)
    assert seen[-1].best == pytest.approx(result.best_value)


def test_a_pruned_trial_keeps_the_best_and_lower_is_better_counts_down() -> None:
    counter = ProgressCounter("logloss", total=3, maximize=False)
    first = counter.record(0, None)
    assert first.best is None and "pruned" in first.describe() and "none completed yet" in first.describe()
    assert counter.record(1, 0.5).best == 0.5
    last = counter.record(2, 0.7)
    assert last.best == 0.5 and last.value == 0.7 and last.fraction == 1.0


def test_a_shared_study_best_overrides_the_running_one() -> None:
    counter = ProgressCounter("auc", total=2, maximize=True)
    assert counter.record(4, 0.70, best=0.75).best == 0.75  # another worker's trial was better
