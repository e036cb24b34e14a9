"""Tune: Optuna TPE over XGBoost parameters, with pruning through XGBoost's callback and early stopping.

One Optuna trial is one booster trained with early stopping on the validation period; unpromising trials
are pruned mid-training. The study lives in the stack's tuner storage, so several workers can share it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
import pandas as pd
import xgboost as xgb

from steps.data.features import Dataset
from steps.model.xgb import base_params, best_rounds, eval_lower_is_better, eval_metric, matrix
from steps.problem import ProblemSpec

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


def search_space(trial: optuna.Trial, spec: ProblemSpec) -> dict[str, Any]:
    """The searched parameters; bounds come from the spec (the best trials like deep trees here)."""
    t = spec.tuning
    return {
        "max_depth": trial.suggest_int("max_depth", *t.max_depth),
        "learning_rate": trial.suggest_float("learning_rate", *t.learning_rate, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "max_cat_threshold": trial.suggest_int("max_cat_threshold", 8, 64, log=True),
    }


REPORT_EVERY = 5


def _pruning_callback(
    trial: optuna.Trial, key: str, every: int = REPORT_EVERY
) -> xgb.callback.TrainingCallback:
    """XGBoost's Optuna pruning callback, reporting every ``every`` rounds instead of every round.

    Each report is a write to the study's storage: with the local stack's SQLite, 400 rounds x 20 trials of
    commits cost more than the training itself (measured: tuning 210 s vs 52 s in memory). The median
    pruner only decides on every fifth step anyway.
    """
    from optuna_integration import XGBoostPruningCallback

    class Thinned(XGBoostPruningCallback):  # type: ignore[misc,valid-type]
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            if epoch % every:
                return False
            return bool(super().after_iteration(model, epoch, evals_log))

    return Thinned(trial, key)


def _pruner(kind: str) -> optuna.pruners.BasePruner:
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=10)
    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20, interval_steps=5)


def make_sampler(kind: str, seed: int, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """TPE, with the constant liar when trials run in parallel (so two workers do not pick the same point)."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=5, multivariate=True, constant_liar=parallel
    )


def make_pruner(kind: str, pruning: bool) -> optuna.pruners.BasePruner:
    return _pruner(kind) if pruning else optuna.pruners.NopPruner()


def make_objective(
    dfit: xgb.DMatrix, dvalid: xgb.DMatrix, spec: ProblemSpec, fixed: dict[str, Any], pruning: bool
) -> Callable[[optuna.Trial], float]:
    """One trial: a booster with early stopping on the validation period, pruned by XGBoost's callback."""
    metric = eval_metric(spec)

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **search_space(trial, spec)}
        callbacks: list[xgb.callback.TrainingCallback] = []
        if pruning:
            callbacks.append(_pruning_callback(trial, f"validation-{metric}"))
        booster = xgb.train(
            params,
            dfit,
            num_boost_round=spec.tuning.num_boost_round,
            evals=[(dvalid, "validation")],
            early_stopping_rounds=spec.tuning.early_stopping_rounds,
            callbacks=callbacks,
            verbose_eval=False,
        )
        trial.set_user_attr("rounds", best_rounds(booster, spec.tuning.num_boost_round))
        return float(booster.best_score)

    return objective


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
) -> TuningResult:
    """Run (or join) the study and return the best parameters with the rounds early stopping chose.

    With a Dask ``client`` the trials run on the cluster's workers, one trial per worker thread, all in
    one study (see ``tune_dask``); without one they run here, one after another, on ``n_jobs`` threads.
    """
    n_trials = n_trials if n_trials is not None else spec.tuning.n_trials
    timeout_s = timeout_s if timeout_s is not None else spec.tuning.timeout_s
    metric = eval_metric(spec)
    direction: Literal["minimize", "maximize"] = "minimize" if eval_lower_is_better(metric) else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    done = 0

    def progress(number: int, value: float | None, best: float | None) -> None:
        nonlocal done
        done += 1
        shown = "pruned" if value is None else f"{metric}={value:.4f}"
        log.info(
            "trial %d/%d (#%d) %s, best %s=%.4f (%.0fs)",
            done,
            n_trials,
            number,
            shown,
            metric,
            float("nan") if best is None else best,
            time.perf_counter() - started,
        )

    classes = fit.schema.classes
    fixed = base_params(
        spec, n_jobs=n_jobs, device=device, seed=seed, num_class=len(classes) if classes else None
    )
    if client is not None:
        from steps.model import tune_dask

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
            on_trial=progress,
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

        def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            complete = any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
            progress(trial.number, trial.value, study.best_value if complete else None)

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
