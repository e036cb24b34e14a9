"""What changed since the last model: the training data against the current champion's, at training time.

``flywheel data diff`` compares any two data sets on demand; a training run does it for the pair a reviewer
asks about first, its source snapshot against the champion's, so the answer is one click away in the MLflow
run (``data_diff/diff.html``, the summary as a tag) and the Prefect UI (an artifact). Same snapshot (the
usual case when only feedback is new): nothing to compare, and it says so. The comparison is
steps.data.diff's, with the snapshots' stored profiles of all rows for drift and monitoring's clock columns
left unflagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from flywheel.contracts import layout
from flywheel.contracts.model_version import ModelVersion
from flywheel.contracts.problem import ProblemSpec
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from steps.data.diff import DataDiff, Side, compare
from steps.data.ingest import Snapshot, read_snapshot

MAX_ROWS = 400_000
"""Rows per side for the per-column statistics (a seeded sample beyond it; drift uses all rows' profiles)."""


@dataclass(frozen=True)
class ChampionDiff:
    """The diff, or why there is none (``diff`` None and ``note`` saying so)."""

    note: str
    diff: DataDiff | None = None


def _profile(store: ArtifactStore, digest: str) -> object | None:
    try:
        return WhylogsValidator.from_bytes(
            store.read_bytes(layout.snapshot_file(digest, layout.SNAPSHOT_PROFILE))
        )
    except Exception:  # no or an unreadable stored profile: compare() profiles the rows instead
        return None


def _bounded(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    return frame.sample(n=MAX_ROWS, random_state=seed) if len(frame) > MAX_ROWS else frame


def against_champion(
    store: ArtifactStore,
    validator: WhylogsValidator,
    spec: ProblemSpec,
    champion: ModelVersion | None,
    snapshot: Snapshot,
    frame: pd.DataFrame,
    seed: int = 0,
) -> ChampionDiff:
    """``frame`` (the rows of ``snapshot``) against the champion's source snapshot."""
    if champion is None:
        return ChampionDiff("no champion yet: nothing to compare with")
    theirs = champion.tags.dataset.digest
    if not theirs:
        return ChampionDiff(f"champion v{champion.version} records no source snapshot")
    if theirs == snapshot.digest:
        return ChampionDiff(
            f"the same source snapshot as champion v{champion.version} ({snapshot.digest[:12]}): what is new "
            "is the feedback, if any"
        )
    try:
        before = read_snapshot(store, theirs)
    except Exception as exc:  # gone from the store, or damaged: the run says which, and goes on
        return ChampionDiff(
            f"champion v{champion.version}'s snapshot {theirs} cannot be read ({type(exc).__name__})"
        )
    side_a = Side(
        f"champion v{champion.version}", champion.tags.dataset.source, len(before), min(len(before), MAX_ROWS)
    )
    side_b = Side("this training", snapshot.source_uri, len(frame), min(len(frame), MAX_ROWS))
    diff = compare(
        _bounded(before, seed),
        _bounded(frame, seed),
        side_a,
        side_b,
        validator,
        profile_a=_profile(store, theirs),
        profile_b=_profile(store, snapshot.digest),
        spec=spec,
        ignore_drift=spec.monitoring.ignore_drift,
    )
    return ChampionDiff(
        f"source snapshot {snapshot.digest[:12]} against champion v{champion.version}'s {theirs[:12]}", diff
    )
