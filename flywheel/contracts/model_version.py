"""What a model version carries: its aliases, its tags, the files inside its run, the metadata of its model.

Registration, promotion and the deployers write these; the service, batch scoring, monitoring, lineage and
the CLI read them back. Each key is spelt here once, and the groups a writer sets together (the data a
version learned from, the promotion decision, where it is served) are small dataclasses that turn into
tags and back, so a reader gets typed values instead of string lookups. Pure: the MLflow calls that set
and read them are in ``stacks.components.model_versions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# -- aliases ----------------------------------------------------------------------------------------------
CHAMPION: Final = "champion"
"""The version that serves, scores batches and is monitored."""
CHALLENGER: Final = "challenger"
"""The last candidate the promotion gate rejected."""

# -- tags on a model version ------------------------------------------------------------------------------
TAG_PREFIX: Final = "flywheel."

RUN_ID_TAG: Final = "flywheel.run_id"
THRESHOLD_TAG: Final = "flywheel.threshold"
TRAINING_PROFILE_TAG: Final = "flywheel.training_profile"
FEATURE_SCHEMA_TAG: Final = "flywheel.feature_schema"
WARNINGS_TAG: Final = "flywheel.warnings"
REASON_TAG: Final = "flywheel.reason"
"""Why the training ran (manual, schedule, drift evidence): on the version and on its training run."""

DATASET_DIGEST_TAG: Final = "flywheel.dataset.digest"
DATASET_SNAPSHOT_TAG: Final = "flywheel.dataset.snapshot"
DATASET_SOURCE_TAG: Final = "flywheel.dataset.source"
DATASET_ROWS_TAG: Final = "flywheel.dataset.rows"
DATASET_JOIN_PREFIX: Final = "flywheel.dataset.join."
JOIN_FIELDS: Final = ("digest", "snapshot", "source")

FEEDBACK_DIGEST_TAG: Final = "flywheel.feedback.digest"
"""The feedback snapshot (labelled traffic) a version learned from besides its source, if any."""
FEEDBACK_SNAPSHOT_TAG: Final = "flywheel.feedback.snapshot"
FEEDBACK_ROWS_TAG: Final = "flywheel.feedback.rows"
"""Feedback rows it trained on (the gate's held-out rows not counted)."""
FEEDBACK_UNTIL_TAG: Final = "flywheel.feedback.until"
"""The latest serving time (epoch seconds) of the feedback it trained on: the next gate judges after it."""
TRAINING_MODE_TAG: Final = "flywheel.training.mode"
"""``full`` (tuned, from the source and feedback) or ``incremental`` (the champion boosted on feedback)."""
TRAINING_FINGERPRINT_TAG: Final = "flywheel.training.fingerprint"
"""A hash of everything a training learned from and how: equal to the champion's means nothing new."""
TRAINING_CHAMPION_TAG: Final = "flywheel.training.champion_version"
"""The champion when the version trained: what an incremental one continued, whose feedback it held out."""
TRAINING_CHAMPION_UNTIL_TAG: Final = "flywheel.training.champion_feedback_until"
"""That champion's ``feedback_until``: the gate held out only feedback served after it."""

CODE_COMMIT_TAG: Final = "flywheel.code.commit"
"""The git commit of the code that trained the version (``unknown`` outside a git checkout)."""
CODE_DIRTY_TAG: Final = "flywheel.code.dirty"
"""``true`` when tracked files differed from that commit, ``false``, or ``unknown``."""
CODE_LOCK_TAG: Final = "flywheel.code.lock_sha256"
"""SHA-256 of ``uv.lock``: the exact dependency set (``unknown`` without the file)."""
LIBRARY_TAG_PREFIX: Final = "flywheel.lib."
"""``flywheel.lib.<package>``: the version of each library that decides the model (xgboost, numpy ...)."""

PROMOTION_DECISION_TAG: Final = "flywheel.promotion.decision"
PROMOTION_REASON_TAG: Final = "flywheel.promotion.reason"
PROMOTION_METRIC_TAG: Final = "flywheel.promotion.metric"
PROMOTION_CANDIDATE_METRIC_TAG: Final = "flywheel.promotion.candidate_metric"
PROMOTION_CHAMPION_VERSION_TAG: Final = "flywheel.promotion.champion_version"
PROMOTION_CHAMPION_METRIC_TAG: Final = "flywheel.promotion.champion_metric"
PROMOTED: Final = "promoted"
REJECTED: Final = "rejected"

PROMOTION_FORCED_TAG: Final = "flywheel.promotion.forced"
"""``true`` on a version promoted by hand past the gate (``flywheel model promote --force``)."""
PROMOTION_BY_TAG: Final = "flywheel.promotion.by"
"""Who promoted a version by hand (the OS user of ``flywheel model promote``); absent for the flow's gate."""

ROLLBACK_REASON_TAG: Final = "flywheel.rollback.reason"
"""On a champion that was rolled back: why (``flywheel model rollback --reason``, or a broken guardrail)."""
ROLLBACK_AT_TAG: Final = "flywheel.rollback.at"
ROLLBACK_TO_TAG: Final = "flywheel.rollback.to"
"""The version that took the champion alias back from it."""
ROLLBACK_BY_TAG: Final = "flywheel.rollback.by"

MODEL_CARD_TAG: Final = "flywheel.model_card"
"""The ``runs:/`` URI of the version's model card (HTML; the Markdown beside it), set once it is logged."""

SERVICE_URL_TAG: Final = "flywheel.service.url"
SERVICE_PID_TAG: Final = "flywheel.service.pid"
SERVICE_STACK_TAG: Final = "flywheel.service.stack"
SERVICE_FLAVOR_TAG: Final = "flywheel.service.flavor"
SERVICE_DEPLOYED_AT_TAG: Final = "flywheel.service.deployed_at"

# -- tags on the registered model ------------------------------------------------------------------------
CHAMPION_HISTORY_TAG: Final = "flywheel.champion.history"
"""The versions that held the champion alias, oldest first, comma-separated (the last is the champion):
a rollback gives the alias back to the one before."""
CHAMPION_HISTORY_LIMIT: Final = 50


def parse_history(text: str) -> list[str]:
    """The versions of a :data:`CHAMPION_HISTORY_TAG` value (what is not a version number left out)."""
    return [v for v in (part.strip() for part in text.split(",")) if v.isdigit()]


def format_history(versions: list[str]) -> str:
    """The tag value for ``versions``, the oldest cut once more than :data:`CHAMPION_HISTORY_LIMIT`."""
    return ",".join(versions[-CHAMPION_HISTORY_LIMIT:])


@dataclass(frozen=True)
class Rollback:
    """A champion given back: why, when, to which version, by whom; tagged on the version rolled back."""

    reason: str
    at: str
    to: str
    by: str

    def to_tags(self) -> dict[str, str]:
        return _cut(
            {
                ROLLBACK_REASON_TAG: self.reason,
                ROLLBACK_AT_TAG: self.at,
                ROLLBACK_TO_TAG: self.to,
                ROLLBACK_BY_TAG: self.by,
            }
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Rollback | None:
        if ROLLBACK_REASON_TAG not in tags:
            return None
        return cls(
            tags[ROLLBACK_REASON_TAG],
            tags.get(ROLLBACK_AT_TAG, ""),
            tags.get(ROLLBACK_TO_TAG, ""),
            tags.get(ROLLBACK_BY_TAG, ""),
        )


# -- tags on runs -----------------------------------------------------------------------------------------
PROBLEM_TAG: Final = "flywheel.problem"
"""The problem spec a training run is for."""
STACK_TAG: Final = "flywheel.stack"
"""The stack a training run ran on."""
MONITORED_MODEL_TAG: Final = "flywheel.model"
MONITORED_VERSION_TAG: Final = "flywheel.model_version"
MONITORING_DECISION_TAG: Final = "flywheel.decision"
"""A monitoring run's verdict: ``retrain`` or ``none``."""

TAG_VALUE_LIMIT: Final = 5000
"""MLflow refuses longer tag values; writers cut them here."""

# -- inside the training run ------------------------------------------------------------------------------
MODEL_ARTIFACT: Final = "model"
FEATURE_SCHEMA_ARTIFACT: Final = "model_meta/feature_schema.json"
TRAINING_PROFILE_ARTIFACT: Final = "profiles/training.bin"
SPEC_ARTIFACT: Final = "training/spec.json"
"""The problem spec as the training ran it (``spec.model_dump(mode="json")``): a reproduction builds on it."""
MODEL_CARD_MARKDOWN: Final = "model_card/model_card.md"
MODEL_CARD_HTML: Final = "model_card/model_card.html"
MODEL_CARD_JSON: Final = "model_card/model_card.json"
"""The card's sections as data: a rollout or rollback later rewrites its approvals-and-rollouts section."""
DATA_DIFF_HTML: Final = "data_diff/diff.html"
"""A training run's source data against the champion's (steps.data.champion_diff), as a page."""
DATA_DIFF_TEXT: Final = "data_diff/diff.txt"
DATA_DIFF_RUN_TAG: Final = "flywheel.data_diff"
"""On the training run: one line, what changed in the source data since the champion's."""
TEST_METRIC_PREFIX: Final = "test."
"""Test-set metrics are logged as ``test.<metric>`` (``test.roc_auc``); the service shows them unprefixed."""
THRESHOLD_METADATA: Final = "flywheel_threshold"
TASK_METADATA: Final = "flywheel_task"
"""Keys of the MLflow model's ``metadata`` (MLmodel), for tools that read the model without our tags."""


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` (or ``models:/`` forms; plain ``NAME``: its champion) into
    (name, alias, version): how every command names a version."""
    ref = reference.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.split("/", 1)
        return name, None, version
    return ref, CHAMPION, None


def artifact_folder(artifact: str) -> str:
    """The run folder an artifact is logged into (``model_meta`` of ``model_meta/feature_schema.json``)."""
    return artifact.rsplit("/", 1)[0] if "/" in artifact else ""


def artifact_file(artifact: str) -> str:
    return artifact.rsplit("/", 1)[-1]


def runs_uri(run_id: str, artifact: str) -> str:
    return f"runs:/{run_id}/{artifact}"


def models_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


def alias_uri(model_name: str, alias: str = CHAMPION) -> str:
    return f"models:/{model_name}@{alias}"


def dataset_join_tag(join: str, field_name: str) -> str:
    """``flywheel.dataset.join.<join>.<field>``: the lineage of a table joined into the training data."""
    if field_name not in JOIN_FIELDS:
        raise ValueError(f"unknown join field {field_name!r}: one of {', '.join(JOIN_FIELDS)}")
    return f"{DATASET_JOIN_PREFIX}{join}.{field_name}"


def parse_dataset_join_tag(key: str) -> tuple[str, str] | None:
    """(join, field) of a join lineage tag; None for any other key."""
    if not key.startswith(DATASET_JOIN_PREFIX):
        return None
    join, _, field_name = key.removeprefix(DATASET_JOIN_PREFIX).rpartition(".")
    return (join, field_name) if join and field_name in JOIN_FIELDS else None


def _cut(tags: dict[str, str]) -> dict[str, str]:
    return {k: v[:TAG_VALUE_LIMIT] for k, v in tags.items()}


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class JoinedDataset:
    """A table joined into the training rows: its snapshot digest and URI, and the source it came from."""

    digest: str = ""
    snapshot: str = ""
    source: str = ""


@dataclass(frozen=True)
class DatasetLineage:
    """The exact rows a version learned from (a content-addressed snapshot) and where they came from."""

    digest: str = ""
    snapshot: str = ""
    source: str = ""
    rows: int | None = None
    joins: dict[str, JoinedDataset] = field(default_factory=dict)

    def to_tags(self) -> dict[str, str]:
        tags = {
            DATASET_DIGEST_TAG: self.digest,
            DATASET_SNAPSHOT_TAG: self.snapshot,
            DATASET_SOURCE_TAG: self.source,
        }
        if self.rows is not None:
            tags[DATASET_ROWS_TAG] = str(self.rows)
        for name, joined in self.joins.items():
            tags[dataset_join_tag(name, "digest")] = joined.digest
            tags[dataset_join_tag(name, "snapshot")] = joined.snapshot
            tags[dataset_join_tag(name, "source")] = joined.source
        return _cut(tags)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> DatasetLineage:
        fields: dict[str, dict[str, str]] = {}
        for key, value in tags.items():
            parsed = parse_dataset_join_tag(key)
            if parsed is not None:
                fields.setdefault(parsed[0], {})[parsed[1]] = value
        rows = tags.get(DATASET_ROWS_TAG, "")
        return cls(
            digest=tags.get(DATASET_DIGEST_TAG, ""),
            snapshot=tags.get(DATASET_SNAPSHOT_TAG, ""),
            source=tags.get(DATASET_SOURCE_TAG, ""),
            rows=int(rows) if rows.isdigit() else None,
            joins={name: JoinedDataset(**found) for name, found in fields.items()},
        )


@dataclass(frozen=True)
class Registration:
    """What registration records beside the lineage: the run, the decision threshold, the files in the run
    (as ``runs:/`` URIs, so a reader needs nothing but the version) and any warnings for a reviewer."""

    run_id: str
    threshold: float
    warnings: tuple[str, ...] = ()

    def to_tags(self) -> dict[str, str]:
        tags = {
            TRAINING_PROFILE_TAG: runs_uri(self.run_id, TRAINING_PROFILE_ARTIFACT),
            FEATURE_SCHEMA_TAG: runs_uri(self.run_id, FEATURE_SCHEMA_ARTIFACT),
            THRESHOLD_TAG: str(self.threshold),
            RUN_ID_TAG: self.run_id,
        }
        if self.warnings:
            tags[WARNINGS_TAG] = "\n".join(self.warnings)
        return _cut(tags)


@dataclass(frozen=True)
class TrainingRecord:
    """How a version was trained and on which feedback, so the next training knows what it already saw."""

    mode: str = "full"
    fingerprint: str = ""
    feedback_digest: str = ""
    feedback_snapshot: str = ""
    feedback_rows: int = 0
    feedback_until: float | None = None
    champion_version: str = ""
    """The champion when it trained (none: empty)."""
    champion_feedback_until: float | None = None

    def to_tags(self) -> dict[str, str]:
        tags = {TRAINING_MODE_TAG: self.mode, TRAINING_FINGERPRINT_TAG: self.fingerprint}
        if self.champion_version:
            tags[TRAINING_CHAMPION_TAG] = self.champion_version
        if self.champion_feedback_until is not None:
            tags[TRAINING_CHAMPION_UNTIL_TAG] = repr(self.champion_feedback_until)
        if self.feedback_digest:
            tags |= {
                FEEDBACK_DIGEST_TAG: self.feedback_digest,
                FEEDBACK_SNAPSHOT_TAG: self.feedback_snapshot,
                FEEDBACK_ROWS_TAG: str(self.feedback_rows),
            }
        if self.feedback_until is not None:
            tags[FEEDBACK_UNTIL_TAG] = f"{self.feedback_until:.3f}"
        return _cut(tags)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> TrainingRecord:
        rows = tags.get(FEEDBACK_ROWS_TAG, "")
        return cls(
            mode=tags.get(TRAINING_MODE_TAG, "full"),
            fingerprint=tags.get(TRAINING_FINGERPRINT_TAG, ""),
            feedback_digest=tags.get(FEEDBACK_DIGEST_TAG, ""),
            feedback_snapshot=tags.get(FEEDBACK_SNAPSHOT_TAG, ""),
            feedback_rows=int(rows) if rows.isdigit() else 0,
            feedback_until=_number(tags.get(FEEDBACK_UNTIL_TAG)),
            champion_version=tags.get(TRAINING_CHAMPION_TAG, ""),
            champion_feedback_until=_number(tags.get(TRAINING_CHAMPION_UNTIL_TAG)),
        )


@dataclass(frozen=True)
class CodeProvenance:
    """The code and libraries a version was trained with, so a reproduction can say what differs."""

    commit: str = "unknown"
    dirty: str = "unknown"
    lock_sha256: str = "unknown"
    libraries: dict[str, str] = field(default_factory=dict)

    def to_tags(self) -> dict[str, str]:
        tags = {CODE_COMMIT_TAG: self.commit, CODE_DIRTY_TAG: self.dirty, CODE_LOCK_TAG: self.lock_sha256}
        tags |= {f"{LIBRARY_TAG_PREFIX}{name}": version for name, version in self.libraries.items()}
        return _cut(tags)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> CodeProvenance | None:
        """None for a version trained before provenance was recorded."""
        if CODE_COMMIT_TAG not in tags:
            return None
        return cls(
            commit=tags[CODE_COMMIT_TAG],
            dirty=tags.get(CODE_DIRTY_TAG, "unknown"),
            lock_sha256=tags.get(CODE_LOCK_TAG, "unknown"),
            libraries={
                k.removeprefix(LIBRARY_TAG_PREFIX): v
                for k, v in tags.items()
                if k.startswith(LIBRARY_TAG_PREFIX)
            },
        )


@dataclass(frozen=True)
class Promotion:
    """The gate's decision on a candidate, as tagged on it (``champion_*`` only when there was one)."""

    promoted: bool
    reason: str
    metric: str
    candidate_metric: float | None
    champion_version: str | None = None
    champion_metric: float | None = None

    @property
    def decision(self) -> str:
        return PROMOTED if self.promoted else REJECTED

    def to_tags(self) -> dict[str, str]:
        tags = {
            PROMOTION_DECISION_TAG: self.decision,
            PROMOTION_REASON_TAG: self.reason,
            PROMOTION_METRIC_TAG: self.metric,
        }
        if self.candidate_metric is not None:
            tags[PROMOTION_CANDIDATE_METRIC_TAG] = f"{self.candidate_metric:.6f}"
        if self.champion_version is not None:
            tags[PROMOTION_CHAMPION_VERSION_TAG] = self.champion_version
        if self.champion_metric is not None:
            tags[PROMOTION_CHAMPION_METRIC_TAG] = f"{self.champion_metric:.6f}"
        return _cut(tags)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Promotion | None:
        """None for a version no gate has decided on yet."""
        decision = tags.get(PROMOTION_DECISION_TAG)
        if decision is None:
            return None
        return cls(
            promoted=decision == PROMOTED,
            reason=tags.get(PROMOTION_REASON_TAG, ""),
            metric=tags.get(PROMOTION_METRIC_TAG, ""),
            candidate_metric=_number(tags.get(PROMOTION_CANDIDATE_METRIC_TAG)),
            champion_version=tags.get(PROMOTION_CHAMPION_VERSION_TAG),
            champion_metric=_number(tags.get(PROMOTION_CHAMPION_METRIC_TAG)),
        )


@dataclass(frozen=True)
class ServiceRecord:
    """Where a version is served, as the deployment flow recorded it: so a version leads to its service."""

    url: str
    handle: str
    stack: str
    flavor: str
    deployed_at: str

    def to_tags(self) -> dict[str, str]:
        return _cut(
            {
                SERVICE_URL_TAG: self.url,
                SERVICE_PID_TAG: self.handle,
                SERVICE_STACK_TAG: self.stack,
                SERVICE_FLAVOR_TAG: self.flavor,
                SERVICE_DEPLOYED_AT_TAG: self.deployed_at,
            }
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ServiceRecord | None:
        """None for a version no deployment has recorded a service on."""
        url = tags.get(SERVICE_URL_TAG)
        if not url:
            return None
        return cls(
            url=url,
            handle=tags.get(SERVICE_PID_TAG, ""),
            stack=tags.get(SERVICE_STACK_TAG, ""),
            flavor=tags.get(SERVICE_FLAVOR_TAG, ""),
            deployed_at=tags.get(SERVICE_DEPLOYED_AT_TAG, ""),
        )


@dataclass(frozen=True)
class VersionTags:
    """A version's tags, read as typed values. Parsed on access, so a reader pays only for what it uses
    and a damaged tag it does not use never stops it."""

    raw: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.raw.get(key, default)

    @property
    def run_id(self) -> str:
        return self.get(RUN_ID_TAG)

    @property
    def threshold(self) -> float | None:
        """The decision threshold registration chose; ValueError when the tag is not a number."""
        value = self.raw.get(THRESHOLD_TAG)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError as exc:
            raise ValueError(f"tag {THRESHOLD_TAG} is not a number: {value[:40]!r}") from exc

    @property
    def training_profile(self) -> str:
        return self.get(TRAINING_PROFILE_TAG)

    @property
    def feature_schema(self) -> str:
        return self.get(FEATURE_SCHEMA_TAG)

    @property
    def reason(self) -> str:
        return self.get(REASON_TAG)

    @property
    def warnings(self) -> list[str]:
        text = self.get(WARNINGS_TAG)
        return text.split("\n") if text else []

    @property
    def dataset(self) -> DatasetLineage:
        return DatasetLineage.from_tags(self.raw)

    @property
    def model_card(self) -> str:
        """The card's ``runs:/`` URI; empty for a version logged before cards existed."""
        return self.get(MODEL_CARD_TAG)

    @property
    def promotion(self) -> Promotion | None:
        return Promotion.from_tags(self.raw)

    @property
    def training(self) -> TrainingRecord:
        return TrainingRecord.from_tags(self.raw)

    @property
    def service(self) -> ServiceRecord | None:
        return ServiceRecord.from_tags(self.raw)

    @property
    def code(self) -> CodeProvenance | None:
        return CodeProvenance.from_tags(self.raw)

    @property
    def rollback(self) -> Rollback | None:
        return Rollback.from_tags(self.raw)

    @property
    def forced(self) -> bool:
        return self.raw.get(PROMOTION_FORCED_TAG) == "true"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version as every reader sees it: where it came from, its aliases, its tags."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    created_at: float = 0.0
    """Registration time, epoch seconds."""
    tags: VersionTags = field(default_factory=VersionTags)

    @property
    def uri(self) -> str:
        return models_uri(self.name, self.version)
