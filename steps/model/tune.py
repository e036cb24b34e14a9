"""Tune: Optuna TPE over XGBoost parameters, with pruning through XGBoost's callback and early stopping.

One Optuna trial is one booster trained with early stopping on the validation period; unpromising trials
are pruned mid-training. The study lives in the stack's tuner storage, so several workers can share it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from stacks.sqlite_init import sqlite_schema_lock
from steps.data.features import Dataset
from steps.model import tune_dask
from steps.model.trial import (
    ProgressCallback,
    ProgressCounter,
    TrialProgress,
    make_objective,
    make_pruner,
    make_sampler,
)
from steps.model.xgb import base_params, eval_lower_is_better, eval_metric, matrix

log = logging.getLogger(__name__)


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    best_rounds: int
    n_trials: int
    n_pruned: int
    duration_s: float
    study_name: str
    trials: pd.DataFrame = field(repr=False)


def create_storage_tables(storage: str | None) -> None:
    """Open a SQLite study storage once under its schema lock, so that its tables exist before the study
    opens it: two trainings tuning on a new database at once would otherwise both create them (one
    fails). Other storages create their tables as Optuna does."""
    if storage is not None and storage.startswith("sqlite:"):
        with sqlite_schema_lock(storage):
            optuna.storages.RDBStorage(storage).engine.dispose()


def tune(
    fit: Dataset,
    valid: Dataset,
    spec: ProblemSpec,
    *,
    study_name: str,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    pruning: bool = True,
    pruner: str = "median",
    sampler: str = "tpe",
    seed: int = 42,
    n_jobs: int | None = None,
    device: str = "cpu",
    client: Any | None = None,
    on_trial: ProgressCallback | None = None,
) -> TuningResult:
    """Run (or join) the study and return the best parameters with the rounds early stopping chose.

    With a Dask ``client`` the trials run on the cluster's workers, one trial per worker thread, all in
    one study (see ``tune_dask``); without one they run here, one after another, on ``n_jobs`` threads.
    Each finished trial is logged and passed to ``on_trial`` (its value and the best so far), so that a
    caller can show tuning progress where its users look; an exception it raises stops the tuning.
    """
    n_trials = n_trials if n_trials is not None else spec.tuning.n_trials
    timeout_s = timeout_s if timeout_s is not None else spec.tuning.timeout_s
    metric = eval_metric(spec)
    direction: Literal["minimize", "maximize"] = "minimize" if eval_lower_is_better(metric) else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    create_storage_tables(storage)
    started = time.perf_counter()

    def report(progress: TrialProgress) -> None:
        log.info("%s", progress.describe())
        if on_trial is not None:
            on_trial(progress)

    classes = fit.schema.classes
    fixed = base_params(
        spec, n_jobs=n_jobs, device=device, seed=seed, num_class=len(classes) if classes else None
    )
    if client is not None:
        study = tune_dask.optimize(
            client,
            fit,
            valid,
            spec,
            study_name=study_name,
            storage=storage,
            direction=direction,
            n_trials=n_trials,
            timeout_s=timeout_s,
            pruning=pruning,
            pruner=pruner,
            sampler=sampler,
            seed=seed,
            fixed={**fixed, "nthread": n_jobs or 1},  # parallel trials, not threads, use the cores
            on_trial=report,
        )
    else:
        dfit = matrix(fit.X, fit.y)
        dvalid = matrix(valid.X, valid.y, ref=dfit)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction=direction,
            sampler=make_sampler(sampler, seed),
            pruner=make_pruner(pruner, pruning),
            load_if_exists=True,
        )

        counter = ProgressCounter(metric, n_trials, direction == "maximize")

        def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            complete = any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
            report(counter.record(trial.number, trial.value, study.best_value if complete else None))

        study.optimize(
            make_objective(dfit, dvalid, spec, fixed, pruning),
            n_trials=n_trials,
            timeout=timeout_s,
            callbacks=[callback],
            gc_after_trial=True,
        )
    duration = time.perf_counter() - started
    trials = study.trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {study_name!r}: no trial completed within {timeout_s}s")
    best = study.best_trial
    return TuningResult(
        best_params={**fixed, **best.params},
        best_value=float(best.value) if best.value is not None else float("nan"),
        best_rounds=int(best.user_attrs.get("rounds", spec.tuning.num_boost_round)),
        n_trials=len(trials),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        duration_s=duration,
        study_name=study_name,
        trials=study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration")),
    )
