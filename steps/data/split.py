"""Split: train on earlier periods, test on later ones; never a random split across time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from steps.data.features import EVENT_TIME, Dataset
from steps.data.training_data import FROM_FEEDBACK


@dataclass
class Splits:
    """``train`` = ``fit`` + ``valid`` (the latest part of the training period, for early stopping)."""

    train: Dataset
    fit: Dataset
    valid: Dataset
    test: Dataset
    info: dict[str, Any]


def split(dataset: Dataset, spec: ProblemSpec, holdout: pd.Index | None = None) -> Splits:
    """Train on earlier rows, test on later ones; ``holdout`` (the newest labelled feedback the champion
    never learned from) is the test set when given, and the rest, in time order, is the training period."""
    frame = dataset.frame
    cfg = spec.split
    if len(frame) < 10:
        raise ValueError(f"only {len(frame)} labelled rows: too few to split into train, validation and test")
    if holdout is not None:
        rest = frame.drop(index=holdout)
        train_idx, test_idx = _in_time_order(rest), holdout
        fit_idx, valid_idx = _fit_and_valid(rest, cfg.valid_fraction)
        info: dict[str, Any] = {"split.method": "newest feedback held out"}
        if EVENT_TIME in frame:
            times = frame[EVENT_TIME]
            info |= {
                "split.train_from": str(times.loc[train_idx].min()),
                "split.train_to": str(times.loc[train_idx].max()),
                "split.test_from": str(times.loc[test_idx].min()),
                "split.test_to": str(times.loc[test_idx].max()),
            }
    elif spec.time:
        order = frame[EVENT_TIME].sort_values(kind="stable").index
        n_test = max(1, round(len(order) * cfg.test_fraction))
        train_idx, test_idx = order[:-n_test], order[-n_test:]
        fit_idx, valid_idx = _fit_and_valid(frame.loc[train_idx], cfg.valid_fraction)
        times = frame[EVENT_TIME]
        info = {
            "split.method": "time",
            "split.train_from": str(times.loc[train_idx].min()),
            "split.train_to": str(times.loc[train_idx].max()),
            "split.test_from": str(times.loc[test_idx].min()),
            "split.test_to": str(times.loc[test_idx].max()),
        }
    else:
        from sklearn.model_selection import train_test_split

        classifier = spec.task in ("binary", "multiclass")
        stratify = dataset.y if classifier and _stratifiable(dataset.y, cfg.test_fraction) else None
        train_idx, test_idx = train_test_split(
            frame.index, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify
        )
        train_y = dataset.y.loc[train_idx]
        strat_fit = train_y if stratify is not None and _stratifiable(train_y, cfg.valid_fraction) else None
        fit_idx, valid_idx = train_test_split(
            train_idx, test_size=cfg.valid_fraction, random_state=cfg.seed, stratify=strat_fit
        )
        info = {"split.method": "stratified" if stratify is not None else "random", "split.seed": cfg.seed}
    info |= {
        "split.train_rows": len(train_idx),
        "split.valid_rows": len(valid_idx),
        "split.test_rows": len(test_idx),
    }
    parts = {
        name: dataset.subset(idx)
        for name, idx in (("train", train_idx), ("fit", fit_idx), ("valid", valid_idx), ("test", test_idx))
    }
    if spec.task in ("binary", "multiclass"):
        for name in ("fit", "test"):
            if np.unique(parts[name].y).size < 2:
                raise ValueError(
                    f"the {name} split has a single class: cannot train or evaluate a classifier"
                )
    return Splits(parts["train"], parts["fit"], parts["valid"], parts["test"], info)


def _in_time_order(frame: pd.DataFrame) -> pd.Index:
    return frame[EVENT_TIME].sort_values(kind="stable").index if EVENT_TIME in frame else frame.index


def _fit_and_valid(train: pd.DataFrame, fraction: float) -> tuple[pd.Index, pd.Index]:
    """The validation period of a training set that holds source rows and feedback: the latest ``fraction``
    of each part. Feedback comes after the source on the timeline, so the latest rows overall would all be
    feedback: early stopping would judge on traffic the fit never saw (one round won, the feedback never
    learned from)."""
    parts = [train[train[FROM_FEEDBACK]], train[~train[FROM_FEEDBACK]]] if FROM_FEEDBACK in train else [train]
    fit: list[pd.Index] = []
    valid: list[pd.Index] = []
    for part in parts:
        if part.empty:
            continue
        order = _in_time_order(part)
        n_valid = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
        fit.append(order[: len(order) - n_valid])
        valid.append(order[len(order) - n_valid :])
    fit_idx = fit[0].append(fit[1:]) if fit else pd.Index([])
    valid_idx = valid[0].append(valid[1:]) if valid else pd.Index([])
    return _in_time_order(train.loc[fit_idx]), _in_time_order(train.loc[valid_idx])


def _stratifiable(y: pd.Series, fraction: float) -> bool:
    """Stratification needs every class on both sides: at least two rows of each, and enough for the
    smaller side to hold one of each class."""
    counts = y.value_counts()
    return bool(len(counts) and counts.min() >= 2 and len(y) * min(fraction, 1 - fraction) >= len(counts))
