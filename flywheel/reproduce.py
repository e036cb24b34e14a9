"""Reproduce a registered version: retrain it from exactly what it recorded, without tuning, and compare.

Training records the snapshots it learned from (digests on the version, the feedback digest as a run
parameter), the problem spec as it ran (``training/spec.json`` in the run), the tuned XGBoost parameters
(``xgb.*``) and rounds (``model.rounds``), the champion whose feedback it held out, and the code commit,
lock hash and library versions. This module reads them back and repeats the training's sequence of steps
(features, the source cutoff, feedback on the same timeline, the split, the refit) on any stack's artifact
store, then compares the rebuilt booster with the registered one on the test rows: the metrics within a
tolerance, the predictions bit for bit (XGBoost is deterministic on the same machine and thread count).
Plain functions calling steps, no Prefect: a reproduction is a check, not a run to schedule.

An incremental version (``mode: incremental``) grew its champion's booster on feedback: it is rebuilt the
same way, from the base version as registered (its trees are the starting point, as they were then), the
feedback snapshot on the timeline the base recorded (what it had learned up to, which the new trees skip),
the recorded parameters and the spec's ``incremental_rounds``. The base itself reproduces on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.contracts import layout
from flywheel.contracts.model_version import (
    SPEC_ARTIFACT,
    TEST_METRIC_PREFIX,
    CodeProvenance,
    ModelVersion,
    models_uri,
    runs_uri,
)
from flywheel.contracts.problem import ProblemSpec
from stacks.components.artifact_store import ArtifactStore

TOLERANCE = 1e-9
"""The largest absolute difference of a test metric or a prediction that still counts as reproduced: on
the same machine and thread count XGBoost gives bit-identical predictions, so this only absorbs the
rounding of a metric's storage."""
ROUNDS_METRIC = "model.rounds"
FEEDBACK_DIGEST_PARAM = "feedback.digest"
"""The feedback snapshot a training used (steps.model.track.log_inputs), held-out rows included."""


class CannotReproduce(Exception):
    """What a version did not record, or data that is no longer reachable: the reason, for the report."""


@dataclass
class Report:
    """The outcome and what the reader needs to trust it: what was rebuilt, compared and found to differ."""

    model: str
    version: str
    reproduced: bool
    lines: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    max_prediction_diff: float | None = None
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Each test metric: (recorded, reproduced)."""

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Recorded:
    """What the version's run and tags say about its training."""

    spec: ProblemSpec
    params: dict[str, Any]
    rounds: int
    threshold: float | None
    run_params: dict[str, str]
    metrics: dict[str, float]
    base: str = ""
    """An incremental version's starting point: the champion version it continued ("" for full training)."""

    @property
    def incremental(self) -> bool:
        return bool(self.base)


def reproduce(mv: ModelVersion, store: ArtifactStore, *, tolerance: float = TOLERANCE) -> Report:
    """Retrain ``mv`` from its record and compare; never raises for what the version lacks (the report
    says it), only for an unreachable registry."""
    report = Report(mv.name, mv.version, False)
    report.lines.append(
        f"model version   {mv.name} v{mv.version}  (aliases: {', '.join(mv.aliases) or '-'}), run {mv.run_id}"
    )
    try:
        recorded = _recorded(mv)
        _check_snapshots(mv, recorded, store, report)
        parts = _rebuild(mv, recorded, store)
    except CannotReproduce as exc:
        report.lines.append(f"cannot reproduce: {exc}")
        return report
    _compare(mv, recorded, parts, report, tolerance)
    _environment(mv, report)
    verdict = "yes" if report.reproduced else "NO"
    report.lines.append(f"reproduced      {verdict} (tolerance {tolerance:g} on metrics and predictions)")
    return report


def test_rows(mv: ModelVersion, store: ArtifactStore) -> tuple[ProblemSpec, Any]:
    """The problem spec ``mv`` was trained under and the test rows its gate judged it on, rebuilt from its
    record (a promotion by hand goes through the same gate on them); :class:`CannotReproduce` otherwise."""
    recorded = _recorded(mv)
    missing = [
        d
        for _, d in _snapshots(mv, recorded)
        if not store.exists(layout.snapshot_file(d, layout.SNAPSHOT_DATA))
    ]
    if missing:
        raise CannotReproduce(f"snapshot(s) missing from {store.uri('snapshots')}: {', '.join(missing)}")
    return recorded.spec, _rebuild(mv, recorded, store).parts.test


def _recorded(mv: ModelVersion) -> Recorded:
    import mlflow
    from mlflow import MlflowClient
    from pydantic import ValidationError

    from steps.model.incremental import champion_params

    training = mv.tags.training
    base = ""
    if training.mode == "incremental":
        base = training.champion_version
        if not base:
            raise CannotReproduce("the incremental version records no champion version it continued")
    if not mv.run_id:
        raise CannotReproduce("the version names no training run")
    run = MlflowClient().get_run(mv.run_id)
    try:
        raw_spec = mlflow.artifacts.load_dict(runs_uri(mv.run_id, SPEC_ARTIFACT))
    except Exception as exc:  # MLflow raises several kinds for a missing artifact
        raise CannotReproduce(
            f"the run holds no {SPEC_ARTIFACT}: the version was trained before the problem spec was recorded"
        ) from exc
    try:
        spec = ProblemSpec.model_validate(raw_spec)
    except ValidationError as exc:
        raise CannotReproduce(f"{SPEC_ARTIFACT} no longer reads as a problem spec: {exc}") from exc
    metrics = dict(run.data.metrics)
    if ROUNDS_METRIC not in metrics:
        raise CannotReproduce(f"the run recorded no {ROUNDS_METRIC}")
    params = champion_params(dict(run.data.params))
    if not params:
        raise CannotReproduce("the run recorded no XGBoost parameters (xgb.*)")
    return Recorded(
        spec=spec,
        params=params,
        rounds=int(metrics[ROUNDS_METRIC]),
        threshold=mv.tags.threshold,
        run_params=dict(run.data.params),
        metrics=metrics,
        base=base,
    )


def _snapshots(mv: ModelVersion, recorded: Recorded) -> list[tuple[str, str]]:
    """(what, digest) of every snapshot the training read: the source, each join, the feedback (only the
    feedback for an incremental version: it read no source)."""
    feedback = recorded.run_params.get(FEEDBACK_DIGEST_PARAM)
    if recorded.incremental:
        if not feedback:
            raise CannotReproduce("the incremental version's run records no feedback snapshot")
        return [("feedback", feedback)]
    dataset = mv.tags.dataset
    if not dataset.digest:
        raise CannotReproduce("the version records no source snapshot digest")
    found = [("source " + dataset.source, dataset.digest)]
    for join in recorded.spec.joins:
        joined = dataset.joins.get(join.name)
        if joined is None or not joined.digest:
            raise CannotReproduce(f"the version records no snapshot of the joined table {join.name!r}")
        found.append((f"join {join.name} {joined.source}", joined.digest))
    if feedback:
        found.append(("feedback", feedback))
    return found


def _check_snapshots(mv: ModelVersion, recorded: Recorded, store: ArtifactStore, report: Report) -> None:
    listed = _snapshots(mv, recorded)
    for what, digest in listed:
        path = layout.snapshot_file(digest, layout.SNAPSHOT_DATA)
        if not store.exists(path):
            report.missing.append(digest)
            report.lines.append(f"snapshot {digest} ({what}) is missing from the store: cannot reproduce")
        else:
            report.lines.append(f"data            {what}: snapshot {digest}")
    if report.missing:
        raise CannotReproduce(
            f"{len(report.missing)} snapshot(s) missing from {store.uri('snapshots')}: "
            + ", ".join(report.missing)
        )


@dataclass
class Rebuilt:
    """The training's rows as rebuilt and the booster to continue (incremental versions only)."""

    parts: Any
    data_info: dict[str, Any]
    base_booster: Any = None


def _rebuild(mv: ModelVersion, recorded: Recorded, store: ArtifactStore) -> Rebuilt:
    """The training's data sequence (flows.training_inputs.gather), from the snapshots."""
    from steps.data import split, training_data

    spec = recorded.spec
    if recorded.incremental:
        source, schema, base_booster = None, *_base(mv, recorded)
    else:
        source, base_booster = _source(mv, recorded, store), None
        schema = source.schema
    feedback_rows = _feedback_rows(recorded, store, mv.name, schema)
    seen_until = mv.tags.training.champion_feedback_until
    data = training_data.combine(source, feedback_rows, spec, seen_until, schema)
    parts = split.split(data.dataset, spec, data.holdout)
    if recorded.incremental:
        from steps.model.incremental import unseen_only

        parts = unseen_only(parts, seen_until)
    return Rebuilt(parts, {**data.info}, base_booster)


def _source(mv: ModelVersion, recorded: Recorded, store: ArtifactStore) -> Any:
    """The source snapshot and its joins, built into features and cut where the spec cut them."""
    from steps.data import features, training_data
    from steps.data.ingest import read_snapshot

    spec = recorded.spec
    dataset = mv.tags.dataset
    raw = read_snapshot(store, dataset.digest)
    joined = {j.name: read_snapshot(store, dataset.joins[j.name].digest) for j in spec.joins}
    try:
        built = features.build_dataset(raw, spec, joined)
        source, _ = training_data.cut_source(built, spec)
    except ValueError as exc:
        raise CannotReproduce(f"the recorded data no longer builds: {exc}") from exc
    return source


def _base(mv: ModelVersion, recorded: Recorded) -> tuple[Any, Any]:
    """An incremental version's base: the feature schema its rows were encoded in and its booster."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from stacks.components.model_versions import feature_schema, get_version

    try:
        base = get_version(mv.name, recorded.base)
        booster = mlflow.xgboost.load_model(models_uri(mv.name, recorded.base))
    except MlflowException as exc:
        raise CannotReproduce(
            f"v{mv.version} continued v{recorded.base}, which is no longer in the registry: {exc.message}"
        ) from exc
    if not base.run_id:
        raise CannotReproduce(f"the base version v{recorded.base} names no training run (no feature schema)")
    return feature_schema(base.run_id), booster


def _feedback_rows(recorded: Recorded, store: ArtifactStore, model: str, schema: Any) -> Any:
    from steps.data import training_data
    from steps.data.feedback import Feedback, FeedbackLineage, read_lineage
    from steps.data.ingest import read_snapshot

    digest = recorded.run_params.get(FEEDBACK_DIGEST_PARAM)
    if not digest:
        return None
    frame = read_snapshot(store, digest)
    lineage = read_lineage(store, digest) or FeedbackLineage(model, [], [], 0, len(frame), None, None)
    rows, _ = training_data.feedback_dataset(Feedback(frame, lineage), schema)
    return rows


def _compare(
    mv: ModelVersion, recorded: Recorded, rebuilt: Rebuilt, report: Report, tolerance: float
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from stacks.components.tracking import readable
    from steps.model import evaluate, incremental, train
    from steps.model.xgb import predict

    parts = rebuilt.parts
    for key, value in {**rebuilt.data_info, **parts.info}.items():  # the rows the training logged it used
        logged = recorded.run_params.get(key)
        if logged is not None and logged != readable(value)[:6000]:
            report.differences.append(f"data: {key} recorded {logged}, rebuilt {readable(value)}")
    if rebuilt.base_booster is not None:
        added = recorded.spec.training_data.incremental_rounds
        booster = incremental.continue_boosting(rebuilt.base_booster, parts.train, recorded.params, added)
        how = (
            f"v{recorded.base} as registered ({rebuilt.base_booster.num_boosted_rounds()} rounds) boosted "
            f"{added} more rounds with its {len(recorded.params)} recorded XGBoost parameters"
        )
    else:
        booster = train.train(parts.train, recorded.params, recorded.rounds)
        how = f"{len(recorded.params)} recorded XGBoost parameters, {recorded.rounds} rounds"
    if booster.num_boosted_rounds() != recorded.rounds:
        report.differences.append(
            f"rounds: {recorded.rounds} recorded, {booster.num_boosted_rounds()} rebuilt"
        )
    original = mlflow.xgboost.load_model(models_uri(mv.name, mv.version))
    ours = predict(booster, parts.test.X)
    theirs = predict(original, parts.test.X)
    evaluation = evaluate.evaluate(booster, parts.test, recorded.spec, recorded.threshold)
    plt.close("all")
    report.lines.append(
        f"retrained       {how}, no tuning; {len(parts.train.frame):,} training rows, "
        f"{len(parts.test.frame):,} test rows"
    )
    metrics_ok = True
    width = max((len(name) for name in evaluation.metrics), default=0)
    for name, value in evaluation.metrics.items():
        before = recorded.metrics.get(f"{TEST_METRIC_PREFIX}{name}")
        if before is None:
            continue
        report.metrics[name] = (before, value)
        same = abs(before - value) <= tolerance or (np.isnan(before) and np.isnan(value))
        metrics_ok &= bool(same)
        report.lines.append(
            f"metric          {name:<{width}}  recorded {before:.12g}  reproduced {value:.12g}  "
            f"diff {abs(before - value):.1e}{'' if same else '  DIFFERS'}"
        )
    if ours.shape != theirs.shape:
        report.lines.append(f"predictions     shapes differ: {theirs.shape} recorded model, {ours.shape} now")
        report.reproduced = False
        return
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    report.max_prediction_diff = diff
    if np.array_equal(ours, theirs):
        report.lines.append(
            f"predictions     bit-identical to the registered model on {len(ours):,} test rows"
        )
    else:
        report.lines.append(f"predictions     max |difference| {diff:.3e} on {len(ours):,} test rows")
    report.reproduced = metrics_ok and diff <= tolerance
    engine = recorded.run_params.get("engine")
    if engine and engine != "pandas":
        report.differences.append(f"engine: trained with {engine}, reproduced in process (pandas)")


def _environment(mv: ModelVersion, report: Report) -> None:
    """Code commit, dirty tree, lock file and library versions then and now."""
    from steps.model.provenance import capture

    then = mv.tags.code
    now = capture()
    if then is None:
        report.differences.append("code: the version recorded no code commit, lock hash or library versions")
    else:
        report.differences += _code_differences(then, now)
    if report.differences:
        report.lines.append("differs         " + "\n                ".join(report.differences))
    else:
        report.lines.append(
            f"differs         nothing: code {now.commit[:12]} (dirty: {now.dirty}), "
            f"lock {now.lock_sha256[:12]}, libraries as recorded"
        )


def _code_differences(then: CodeProvenance, now: CodeProvenance) -> list[str]:
    found = []
    if then.commit != now.commit:
        found.append(f"code commit: {then.commit} recorded, {now.commit} now")
    if then.dirty != now.dirty:
        found.append(f"uncommitted changes: {then.dirty} recorded, {now.dirty} now")
    if then.lock_sha256 != now.lock_sha256:
        found.append(f"uv.lock sha256: {then.lock_sha256[:16]} recorded, {now.lock_sha256[:16]} now")
    for name in sorted(set(then.libraries) | set(now.libraries)):
        a, b = then.libraries.get(name, "-"), now.libraries.get(name, "-")
        if a != b:
            found.append(f"{name}: {a} recorded, {b} now")
    return found
