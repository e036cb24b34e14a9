"""Train: refit the tuned parameters on the whole training period for the rounds early stopping chose."""

from __future__ import annotations

from typing import Any

import xgboost as xgb

from steps.data.features import Dataset
from steps.model.xgb import matrix


def train(data: Dataset, params: dict[str, Any], rounds: int) -> xgb.Booster:
    """The validation period was only for choosing rounds; the final model learns from all of it too."""
    booster = xgb.train(params, matrix(data.X, data.y), num_boost_round=max(1, rounds), verbose_eval=False)
    booster.set_attr(feature_schema_version="1")
    return booster
