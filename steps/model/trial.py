"""One Optuna trial of the XGBoost search: the search space, the objective, the sampler and the pruner.

``tune`` runs trials here, one after another; ``tune_dask`` runs the same trials on Dask workers. Both take
these pieces from this module, so neither imports the other's internals (``tune`` picks ``tune_dask`` when
it is given a client; ``tune_dask`` needs nothing from ``tune``) and a trial is defined once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import xgboost as xgb

from flywheel.contracts.problem import ProblemSpec
from steps.model.xgb import best_rounds, eval_metric


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
