"""What a training run learns from, wired from steps: the source (full mode) and the collected feedback.

Part of the training flow, kept apart so that flows/training.py reads as the sequence of a run. A full
training ingests, validates and builds the source up to the spec's cutoff; an incremental one starts from
the champion's schema. Both collect the model's labelled traffic into a feedback snapshot and put it on the
same timeline (steps.data.training_data), and both end with the fingerprint that tells a run with nothing new
to learn from one that has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from prefect.artifacts import create_markdown_artifact

from flows.runtime import StackContext, ingest_joins
from flows.tasks import StepTimer
from flywheel.contracts.model_version import REASON_TAG, ModelVersion
from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.schema import FeatureSchema
from stacks.components.model_versions import feature_schema
from steps.data import features, ingest, training_data, validate
from steps.data import feedback as feedback_step
from steps.data.champion_diff import ChampionDiff, against_champion
from steps.data.ingest import Snapshot
from steps.model import reference, track

Mode = Literal["full", "incremental"]
"""How a training learns: ``full`` (tuned, source and feedback) or ``incremental`` (the champion boosted)."""
MODES: tuple[str, ...] = get_args(Mode)


@dataclass
class Inputs:
    """The rows of a run (with the gate's held-out rows), their schema and where they came from."""

    data: training_data.TrainingData
    schema: FeatureSchema
    mode: str
    snapshot: Snapshot | None
    join_snapshots: dict[str, Snapshot]
    feedback: feedback_step.Feedback | None
    lineage: dict[str, str]
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    champion_diff: ChampionDiff | None = None
    """The source snapshot against the champion's (full mode; None for incremental training)."""

    @property
    def feedback_snapshot(self) -> Snapshot | None:
        return self.feedback.snapshot if self.feedback is not None else None


def gather(
    timer: StepTimer,
    ctx: StackContext,
    spec: ProblemSpec,
    champion: ModelVersion | None,
    mode: str,
    *,
    reason: str,
    sample_rows: int | None,
    seed: int,
    settings: dict[str, Any],
    validation_key: str,
) -> Inputs:
    """Source and feedback for ``mode``; raises DataValidationError (a failed validation report) first."""
    snapshot: Snapshot | None = None
    join_snapshots: dict[str, Snapshot] = {}
    source: features.Dataset | None = None
    changed: ChampionDiff | None = None
    notes: list[str] = []
    if mode == "full":
        raw, snapshot = timer.run(
            ingest.ingest,
            "ingest",
            spec.source,
            ctx.store,
            ctx.validator,
            ctx.storage_options,
            sample_rows=sample_rows,
            seed=seed,
            retries=2,
        )
        joined, join_snapshots = ingest_joins(timer, ctx, spec)
        missing_reference = timer.run(
            reference.champion_missing_fractions, "reference", ctx.store, ctx.validator, spec.model_name
        )
        report = timer.run(
            validate.validate,
            "validate",
            raw,
            spec,
            ctx.validator,
            f"{spec.name} ({snapshot.digest})",
            missing_reference,
        )
        create_markdown_artifact(
            report.to_markdown(), key=validation_key, description="Data validation report"
        )
        if not report.passed:
            raise validate.DataValidationError(report)
        changed = timer.run(
            against_champion, "data-diff", ctx.store, ctx.validator, spec, champion, snapshot, raw, seed
        )
        built = timer.run(features.build_dataset, "features", raw, spec, joined)
        source, cut = training_data.cut_source(built, spec)
        if cut:
            notes.append(
                f"{cut:,} source rows from {spec.training_data.until} on left out (training_data.until): "
                "they reach training only as served traffic with its feedback"
            )
        schema = source.schema
        lineage = track.lineage_tags(snapshot, join_snapshots, reason)
    else:
        assert champion is not None
        schema = timer.run(feature_schema, "champion-schema", champion.run_id, retries=2)
        lineage = {**champion.tags.dataset.to_tags(), REASON_TAG: reason[:4000]}
    collected = timer.run(
        feedback_step.collect, "collect-feedback", ctx.store, spec, schema.names, schema.classes
    )
    if collected.lineage.skipped:
        notes.append(
            "feedback rows left out: "
            + "; ".join(f"{why} {n:,}" for why, n in sorted(collected.lineage.skipped.items()))
        )
    feedback_rows: features.Dataset | None = None
    if collected.rows and spec.training_data.feedback != "none":
        collected = timer.run(
            feedback_step.snapshot, "snapshot-feedback", collected, ctx.store, ctx.validator
        )
        feedback_rows, unknown = training_data.feedback_dataset(collected, schema)
        if unknown:
            notes.append(f"{unknown:,} feedback values outside the training vocabulary read as missing")
    seen_until = champion.tags.training.feedback_until if champion is not None else None
    data = training_data.combine(source, feedback_rows, spec, seen_until, schema)
    notes += data.notes
    used = collected.snapshot if feedback_rows is not None and collected.snapshot is not None else None
    fingerprint = training_data.fingerprint(
        mode=mode,
        source=snapshot.digest if snapshot else None,
        joins={n: s.digest for n, s in join_snapshots.items()},
        feedback=used.digest if used else None,
        champion=champion.version if mode == "incremental" and champion else None,
        spec=spec.model_dump(mode="json", exclude={"schedules", "description"}),
        seed=seed,
        **settings,
    )
    return Inputs(
        data, schema, mode, snapshot, join_snapshots, collected, lineage, fingerprint, notes, changed
    )
