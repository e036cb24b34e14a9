"""Training data: the spec's source up to its cutoff, plus the collected feedback, under the spec's policy.

The timeline a model learns along puts source rows at their event time and feedback rows at the time they
were served (after the source by construction: feedback is traffic the model answered). The gate's test rows
are the newest labelled period the champion never learned from: the newest ``holdout_fraction`` of the
feedback served after the champion's own feedback ended; both models are judged on them. Pure: datasets in,
datasets out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.schema import FeatureSchema
from steps.data.features import EVENT_TIME, Dataset, encode
from steps.data.feedback import LABEL, SERVED_AT, Feedback

FROM_FEEDBACK = "_from_feedback"
"""A training row's origin: True for collected feedback, False for the spec's source."""


@dataclass
class TrainingData:
    """The rows to learn and judge from, the gate's test rows when feedback decides them, and the figures."""

    dataset: Dataset
    holdout: pd.Index | None
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def feedback_until(trained: Dataset) -> float | None:
    """The latest serving time (epoch seconds) of the feedback rows among ``trained``: what the next
    training's gate judges after."""
    frame = trained.frame
    if FROM_FEEDBACK not in frame or SERVED_AT not in frame:
        return None
    fed = frame.loc[frame[FROM_FEEDBACK].to_numpy(dtype=bool), SERVED_AT]
    return float(fed.max()) if len(fed) else None


def cut_source(dataset: Dataset, spec: ProblemSpec) -> tuple[Dataset, int]:
    """The source rows before ``training_data.until`` (in the spec's time zone), and how many were cut."""
    cutoff = spec.training_data.cutoff(spec.time.timezone if spec.time else None)
    if cutoff is None:
        return dataset, 0
    keep = dataset.frame[EVENT_TIME] < cutoff
    cut = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"training_data.until {spec.training_data.until}: no source row is earlier")
    return Dataset(dataset.frame[keep], dataset.schema, dataset.dropped_unlabelled, dataset.notes), cut


def feedback_dataset(feedback: Feedback, schema: FeatureSchema) -> tuple[Dataset, int]:
    """Feedback rows in the model's encoding (its vocabularies), and how many held a category the schema
    does not know (kept: the value becomes missing, as batch scoring does)."""
    frame = feedback.frame
    features = encode(frame, schema)
    unknown = 0
    for column in schema.columns:
        if column.kind == "categorical":
            unknown += int((features[column.name].isna() & frame[column.name].notna()).sum())
    label = frame[LABEL].astype("int64") if schema.classes is not None else frame[LABEL].astype("float64")
    out = features.assign(
        **{
            schema.label: label.to_numpy(),
            EVENT_TIME: pd.to_datetime(frame[SERVED_AT], unit="s", utc=True).astype("datetime64[ns, UTC]"),
            SERVED_AT: frame[SERVED_AT].to_numpy(dtype="float64"),
        }
    )
    return Dataset(out, schema), unknown


def combine(
    source: Dataset | None,
    feedback: Dataset | None,
    spec: ProblemSpec,
    champion_feedback_until: float | None,
    schema: FeatureSchema,
) -> TrainingData:
    """Source and feedback on one timeline (in ``schema``'s encoding), the policy's window applied, the gate's
    test rows chosen. With neither (an incremental training and no feedback yet) the rows are empty."""
    policy = spec.training_data
    parts = []
    if source is not None:
        parts.append(source.frame.assign(**{FROM_FEEDBACK: False}))
    use_feedback = feedback is not None and len(feedback.frame) and policy.feedback != "none"
    if use_feedback:
        assert feedback is not None
        parts.append(feedback.frame.assign(**{FROM_FEEDBACK: True}))
    if not parts:  # incremental training with no feedback collected: nothing to learn from
        columns = [*schema.names, schema.label, EVENT_TIME, SERVED_AT]
        empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in columns})
        return TrainingData(Dataset(empty.assign(**{FROM_FEEDBACK: False}), schema), None, {}, [])
    frame = pd.concat(parts, ignore_index=True)
    frame[FROM_FEEDBACK] = frame[FROM_FEEDBACK].astype(bool)
    for column in schema.columns:  # concat loses a categorical dtype when one side lacks categories
        if column.kind == "categorical":
            frame[column.name] = pd.Categorical(frame[column.name], categories=column.categories)
    info: dict[str, Any] = {
        "data.source_rows": int((~frame[FROM_FEEDBACK]).sum()),
        "data.feedback_rows": int(frame[FROM_FEEDBACK].sum()),
        "data.policy": policy.feedback,
    }
    notes: list[str] = []
    holdout = _holdout(frame, spec, champion_feedback_until, info, notes)
    if policy.feedback == "window" and policy.window_days is not None and EVENT_TIME in frame:
        trained = frame.drop(index=holdout) if holdout is not None else frame
        start = trained[EVENT_TIME].max() - pd.Timedelta(days=policy.window_days)
        old = frame.index[(frame[EVENT_TIME] < start).to_numpy()]
        old = old.difference(holdout) if holdout is not None else old
        if len(old) == len(trained):
            raise ValueError(f"training_data.window_days {policy.window_days}: no row left in the window")
        frame = frame.drop(index=old)
        info["data.window_from"] = str(start)
        notes.append(f"window of {policy.window_days:g} days: {len(old):,} older rows left out")
    dataset = Dataset(frame, schema, source.dropped_unlabelled if source else 0, [])
    return TrainingData(dataset, holdout, info, notes)


def _holdout(
    frame: pd.DataFrame,
    spec: ProblemSpec,
    seen_until: float | None,
    info: dict[str, Any],
    notes: list[str],
) -> pd.Index | None:
    policy = spec.training_data
    if SERVED_AT not in frame or not frame[FROM_FEEDBACK].any():
        return None
    fed = frame[frame[FROM_FEEDBACK]]
    unseen = fed[fed[SERVED_AT] > seen_until] if seen_until is not None else fed
    unseen = unseen.sort_values(SERVED_AT, kind="stable")
    n_hold = round(len(unseen) * policy.holdout_fraction)
    info["data.feedback_unseen_rows"] = len(unseen)
    if n_hold < policy.min_holdout_rows:
        notes.append(
            f"{len(unseen):,} feedback rows the champion never learned from: too few to hold out "
            f"{policy.holdout_fraction:.0%} (needs {policy.min_holdout_rows:,} held-out rows); the gate "
            "judges on the spec's split"
        )
        return None
    holdout = unseen.index[-n_hold:]
    served = pd.to_datetime(unseen.loc[holdout, SERVED_AT], unit="s", utc=True)
    info["data.holdout_rows"] = n_hold
    info["data.holdout_from"] = served.min().isoformat(timespec="seconds")
    info["data.holdout_to"] = served.max().isoformat(timespec="seconds")
    notes.append(
        f"the gate judges on the newest {n_hold:,} feedback rows (served {info['data.holdout_from']} to "
        f"{info['data.holdout_to']}), which the champion never learned from"
    )
    return holdout


def fingerprint(**inputs: Any) -> str:
    """What a training learns from and how, as one hash: equal inputs, equal models (same seed)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
