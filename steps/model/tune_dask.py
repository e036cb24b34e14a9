"""Optuna trials on Dask workers, all in one study: the same trials, pruning and search as ``tune``.

Each trial is one Dask task (``n_trials`` tasks in all, so the count is exact and a slow worker does not
hold a fixed share), scheduled onto whichever worker thread is free. The training frames are sent to
every worker once; each worker thread builds its XGBoost matrices once and reuses them for every trial it
runs. Trials share the study through the stack's storage: an in-memory or SQLite study is wrapped in
optuna-integration's ``DaskStorage`` (the study lives on the scheduler, so workers on other machines and
SQLite's single writer are no problem); a server database (PostgreSQL) is reached by each worker directly.

Nothing here imports Prefect: a Dask worker only ever runs plain functions.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import optuna
import pandas as pd
import xgboost as xgb

from flywheel.contracts.problem import ProblemSpec
from steps.data.features import Dataset
from steps.model.trial import ProgressCallback, ProgressCounter, make_objective, make_pruner, make_sampler
from steps.model.xgb import eval_metric, matrix

# per worker process: (cache key, thread id) -> (fit matrix, validation matrix)
_MATRICES: dict[tuple[str, int], tuple[xgb.DMatrix, xgb.DMatrix]] = {}
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str
    value: float | None


def shared_storage(client: Any, storage: str | None) -> Any:
    """What workers open the study with: a DaskStorage for in-memory/SQLite, the URL for a server DB."""
    if storage is not None and not storage.startswith("sqlite"):
        return storage
    from optuna_integration import DaskStorage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return DaskStorage(storage, client=client)


def _open_storage(storage: Any) -> Any:
    """A worker's handle on the study storage (one RDB engine per URL per worker process)."""
    if not isinstance(storage, str):
        return storage
    with _LOCK:
        if storage not in _STORAGES:
            _STORAGES[storage] = optuna.storages.RDBStorage(storage)
        return _STORAGES[storage]


def _matrices(
    key: str, fit_x: pd.DataFrame, fit_y: pd.Series, valid_x: pd.DataFrame, valid_y: pd.Series
) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    slot = (key, threading.get_ident())  # a matrix is not shared by two trials training at once
    if slot not in _MATRICES:
        dfit = matrix(fit_x, fit_y)
        _MATRICES[slot] = (dfit, matrix(valid_x, valid_y, ref=dfit))
    return _MATRICES[slot]


def forget(key: str) -> None:
    """Free a finished study's matrices on a worker (run on every worker by ``optimize``)."""
    for slot in [s for s in _MATRICES if s[0] == key]:
        _MATRICES.pop(slot, None)


def run_trial(
    key: str,
    fit_x: pd.DataFrame,
    fit_y: pd.Series,
    valid_x: pd.DataFrame,
    valid_y: pd.Series,
    spec: ProblemSpec,
    fixed: dict[str, Any],
    *,
    study_name: str,
    storage: Any,
    sampler: str,
    pruner: str,
    pruning: bool,
    seed: int,
    deadline: float | None,
) -> TrialOutcome | None:
    """One trial on a Dask worker: ask the shared study, train, tell; None when the time budget is spent."""
    from distributed import get_worker

    if deadline is not None and time.time() > deadline:
        return None
    dfit, dvalid = _matrices(key, fit_x, fit_y, valid_x, valid_y)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=study_name,
        storage=_open_storage(storage),
        sampler=make_sampler(sampler, seed, parallel=True),
        pruner=make_pruner(pruner, pruning),
    )
    trial = study.ask()
    trial.set_user_attr("dask_worker", get_worker().address)  # which worker ran it, for the record
    objective = make_objective(dfit, dvalid, spec, fixed, pruning)
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return TrialOutcome(trial.number, "PRUNED", None)
    except Exception:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    study.tell(trial, value)
    return TrialOutcome(trial.number, "COMPLETE", value)


def optimize(
    client: Any,
    fit: Dataset,
    valid: Dataset,
    spec: ProblemSpec,
    *,
    study_name: str,
    storage: str | None,
    direction: Literal["minimize", "maximize"],
    n_trials: int,
    timeout_s: float | None,
    pruning: bool,
    pruner: str,
    sampler: str,
    seed: int,
    fixed: dict[str, Any],
    on_trial: ProgressCallback | None = None,
) -> optuna.Study:
    """Run ``n_trials`` trials of the study on the client's workers; return the study seen from here.

    ``on_trial`` hears of each trial here, in the client's process, as its result comes back (in the
    order they finish), with the best value so far among this run's trials.
    """
    from distributed import as_completed

    shared = shared_storage(client, storage)
    study = optuna.create_study(
        study_name=study_name, storage=shared, direction=direction, load_if_exists=True
    )
    key = f"{study_name}-{uuid.uuid4().hex[:8]}"
    data = client.scatter([fit.X, fit.y, valid.X, valid.y], broadcast=True)
    deadline = time.time() + timeout_s if timeout_s else None
    futures = [
        client.submit(
            run_trial,
            key,
            *data,
            spec,
            fixed,
            study_name=study_name,
            storage=shared,
            sampler=sampler,
            pruner=pruner,
            pruning=pruning,
            seed=seed + slot,  # distinct random start-up trials on every task
            deadline=deadline,
            pure=False,
            key=f"optuna-trial-{key}-{slot}",
        )
        for slot in range(n_trials)
    ]
    counter = ProgressCounter(eval_metric(spec), n_trials, direction == "maximize")
    try:
        for future in as_completed(futures, loop=client.loop):  # this client, default or not
            outcome: TrialOutcome | None = future.result()
            if outcome is None:
                continue
            progress = counter.record(outcome.number, outcome.value)
            if on_trial is not None:
                on_trial(progress)
    finally:
        client.cancel([f for f in futures if not f.done()])  # after a failure: no orphan trials
        client.run(forget, key)
    return study
