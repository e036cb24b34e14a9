"""Incremental training: the champion keeps boosting on the collected feedback for a fixed number of rounds.

Cheaper than a full retrain (no tuning, no source re-read) and kinder to what the champion already knows:
the new trees fit what the champion gets wrong on recent traffic. The result is a candidate like any other:
the same gate on the same newest labelled rows, the same registration. The champion's tuned parameters come
from its training run (``xgb.*`` parameters), since a saved booster keeps its trees, not how they were grown.
"""

from __future__ import annotations

from typing import Any

import xgboost as xgb

from flywheel.contracts.model_version import models_uri
from steps.data.features import Dataset
from steps.data.feedback import SERVED_AT
from steps.data.split import Splits
from steps.model.xgb import matrix

PARAM_PREFIX = "xgb."
"""How training runs log XGBoost's parameters (steps.model.track.log_results)."""


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def champion_params(run_params: dict[str, str]) -> dict[str, Any]:
    """XGBoost's parameters as the champion's run logged them, typed back (``"8"`` -> 8)."""
    return {
        key.removeprefix(PARAM_PREFIX): _value(value)
        for key, value in run_params.items()
        if key.startswith(PARAM_PREFIX)
    }


def load_champion(model_name: str, version: str) -> tuple[xgb.Booster, dict[str, Any]]:
    """The champion's booster and its tuned parameters (from its training run)."""
    import mlflow
    from mlflow import MlflowClient

    from stacks.components.model_versions import get_version

    booster = mlflow.xgboost.load_model(models_uri(model_name, version))
    run_id = get_version(model_name, version).run_id
    params = champion_params(dict(MlflowClient().get_run(run_id).data.params)) if run_id else {}
    return booster, params


def grown_params(champion: dict[str, Any], nthread: int | None) -> dict[str, Any]:
    """The parameters the new trees grow with: the champion's, on this stack's thread count. Logged as the
    run's ``xgb.*`` so that a reproduction grows them the same way."""
    return {**champion, "nthread": nthread} if nthread is not None else dict(champion)


def unseen_only(parts: Splits, seen_until: float | None) -> Splits:
    """The training rows the champion has not learned from (its feedback ended at ``seen_until``, the
    serving time of the last feedback row it was fitted on); the gate's rows unchanged."""
    if seen_until is None:
        return parts

    def newer(data: Dataset) -> Dataset:
        return data.subset(data.frame.index[(data.frame[SERVED_AT] > seen_until).to_numpy()])

    return Splits(newer(parts.train), newer(parts.fit), newer(parts.valid), parts.test, parts.info)


def continue_boosting(
    champion: xgb.Booster, data: Dataset, params: dict[str, Any], rounds: int
) -> xgb.Booster:
    """``rounds`` more trees on ``data`` (in the champion's encoding), grown with ``params``; the champion
    itself is left as it was (XGBoost copies a booster passed as ``xgb_model``)."""
    booster = xgb.train(
        params, matrix(data.X, data.y), num_boost_round=max(1, rounds), xgb_model=champion, verbose_eval=False
    )
    booster.set_attr(feature_schema_version="1")
    return booster
