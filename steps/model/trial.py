"""One Optuna trial of the XGBoost search: the search space, the objective, the sampler and the pruner.

``tune`` runs trials here, one after another; ``tune_dask`` runs the same trials on Dask workers. Both take
these pieces from this module, so neither imports the other's internals (``tune`` picks ``tune_dask`` when
it is given a client; ``tune_dask`` needs nothing from ``tune``) and a trial is defined once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TrialProgress:
    """One finished trial as a watcher sees it: its value and the best so far, for a progress display.

    Steps report it through a plain callback, so that whoever runs them (a Prefect flow, a notebook)
    shows it where its users look without the steps knowing about it.
    """

    done: int  # trials finished in this run so far, this one included
    total: int  # trials asked for (a time budget may end the run sooner)
    number: int  # Optuna's trial number in the study
    value: float | None  # None: pruned
    best: float | None  # best completed value so far; None before any trial completed
    metric: str
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0

    def describe(self) -> str:
        """``trial 3/20 (#2): auc 0.7123, best auc 0.7200 (12 s)``: the line logs and progress show."""
        shown = "pruned" if self.value is None else f"{self.metric} {self.value:.4f}"
        best = "none completed yet" if self.best is None else f"{self.metric} {self.best:.4f}"
        return (
            f"trial {self.done}/{self.total} (#{self.number}): {shown}, best {best} ({self.elapsed_s:.0f} s)"
        )


ProgressCallback = Callable[[TrialProgress], None]
"""Called once per finished trial, in the process that runs the study (never on a Dask worker)."""


class ProgressCounter:
    """Turns finished trials into ``TrialProgress``: counts them and keeps the best value in a direction."""

    def __init__(self, metric: str, total: int, maximize: bool) -> None:
        self.metric, self.total, self.maximize = metric, total, maximize
        self.done = 0
        self.best: float | None = None
        self.started = time.perf_counter()

    def record(self, number: int, value: float | None, best: float | None = None) -> TrialProgress:
        """Count one trial; ``best`` overrides the running best when the study knows better (a shared
        study holds other workers' trials too)."""
        self.done += 1
        if value is not None and (
            self.best is None or (value > self.best if self.maximize else value < self.best)
        ):
            self.best = value
        if best is not None:
            self.best = best
        return TrialProgress(
            done=self.done,
            total=self.total,
            number=number,
            value=value,
            best=self.best,
            metric=self.metric,
            elapsed_s=time.perf_counter() - self.started,
        )


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
