"""The problem spec: what to learn, from which data, judged how. Configuration, not code.

A spec is a YAML file (``flows/problems/*.yaml``) validated by frozen pydantic models, so a user's own CSV or
Parquet file trains, registers, serves and is monitored with a new spec and no code change. Schema,
signature and the serving request model all follow from the spec and the data.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from flywheel.contracts.expression import Expression, ExpressionError, parse
from flywheel.contracts.schema import Task

LabelValue = str | int | float | bool
"""A label value as a spec writes it (``bad``, ``1``, ``true``)."""
MAX_CLASSES = 100
"""A multiclass label with more values than this is more likely an identifier than a class."""


def label_key(value: Any) -> str:
    """The canonical text of a label value, so ``1``, ``1.0`` and ``"1"`` (or ``True`` and ``"true"``) match.

    Labels come as numbers, booleans or text depending on the file format (CSV gives text, Parquet
    keeps types, YAML specs give Python scalars); classes are matched on this form.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, int | float) or hasattr(value, "dtype"):
        number = float(value)
        if number.is_integer():
            return str(int(number))
        return repr(number)
    text = str(value).strip()
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


class SpecError(ValueError):
    """A problem spec that cannot be used; the message names the file and the offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TargetSpec(_Frozen):
    """The label: a column, or a rule over columns (``arr_delay > 15``) in the safe language of
    :mod:`flywheel.contracts.expression`.

    The rule is untrusted text, so it is parsed and checked when the spec loads: a rule that is not allowed
    (attribute access, calls, ``@`` variables ...) fails ``load_spec`` and never reaches data.
    Rows where a column the rule reads is missing get no label (cancelled flights have no arrival delay):
    validation reports them and they are left out of training. A column read only inside ``isnull()`` /
    ``notnull()`` is the exception, since testing whether it is missing is the point of those checks.
    """

    column: str
    rule: str | None = None
    name: str | None = Field(default=None, description="name of the derived label column (default: label)")
    positive: LabelValue | None = Field(
        default=None,
        description="binary: the label value that is the positive class (needed unless the values are "
        "0/1 or true/false)",
    )
    classes: list[LabelValue] | None = Field(
        default=None,
        description="multiclass: the label values in class order (default: every value seen, sorted)",
        min_length=3,
        max_length=MAX_CLASSES,
    )

    @field_validator("rule")
    @classmethod
    def _rule_is_allowed(cls, rule: str | None) -> str | None:
        if rule is not None:
            try:
                parse(rule, what="target rule")
            except ExpressionError as exc:  # a template with the message as data: it may contain braces
                raise PydanticCustomError("target_rule", "{reason}", {"reason": str(exc)}) from None
        return rule

    @model_validator(mode="after")
    def _one_way_to_say_positive(self) -> TargetSpec:
        if self.rule is not None and (self.positive is not None or self.classes is not None):
            raise ValueError(
                "a rule already says which rows are positive: give 'rule' or 'positive'/'classes', not both"
            )
        if self.classes is not None and len({label_key(c) for c in self.classes}) != len(self.classes):
            raise ValueError(f"classes {self.classes} repeat a value")
        return self

    @property
    def label(self) -> str:
        return self.name or ("label" if self.rule else self.column)

    @property
    def expression(self) -> Expression | None:
        """The parsed rule (parsing is cached), or None for a plain label column."""
        return parse(self.rule, what="target rule") if self.rule is not None else None


class TimeSpec(_Frozen):
    """The event time used for time-based splits and point-in-time joins."""

    column: str
    add_minutes: str | None = Field(default=None, description="a column of minutes added to the time column")
    timezone: str | None = Field(
        default=None,
        description="local zone for calendar features (the column itself is read as UTC if naive)",
    )
    features: list[Literal["hour", "dayofweek", "month", "dayofyear"]] = Field(default_factory=list)


class JoinSpec(_Frozen):
    """A point-in-time join: for each row, the latest right-hand row at or before the row's event time."""

    name: str
    source: str
    by: list[str]
    time_column: str
    columns: list[str]
    tolerance: str = "3h"
    prefix: str = ""


class SplitSpec(_Frozen):
    """Held-out test set: the latest ``test_fraction`` of rows by event time (seeded split without one)."""

    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    valid_fraction: float = Field(default=0.15, gt=0, lt=1)
    seed: int = 42


class ValidationSpec(_Frozen):
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    max_nan_fraction: dict[str, float] = Field(default_factory=dict)
    max_label_nan_fraction: float = Field(default=0.1, ge=0, le=1)


class MonitoringSpec(_Frozen):
    """Columns whose drift says nothing: a short serving window covers a few hours of the clock, so
    time-of-day columns always differ from a full year of training data."""

    ignore_drift: list[str] = Field(default_factory=list)


class TrainingDataSpec(_Frozen):
    """What a model learns from: the source up to a cutoff, plus the labelled traffic that came back.

    ``until`` keeps the source's later rows out of training for good (the demo's flights source holds the
    whole year, so without a cutoff the months replayed later would already be in the champion's data);
    they reach training only as served traffic with its feedback, as they would in production.
    ``feedback`` says which collected feedback joins the source: ``all`` of it, the most recent
    ``window_days`` of the combined timeline (``window``; source rows by their event time, feedback by the
    time it was served), or ``none``. The gate judges on the newest ``holdout_fraction`` of the feedback
    the champion never learned from, once there are ``min_holdout_rows`` of those rows; with fewer, the
    spec's time split decides as before. A quarter by default: the newest unseen feedback is often all of
    the period that drifted, and a candidate that may learn none of it cannot beat the champion on it.
    ``incremental_rounds``: the boosting rounds an incremental candidate adds to the champion.
    """

    until: str | None = Field(
        default=None, description="source rows at or after this time (a date, month or year) never train"
    )
    feedback: Literal["all", "window", "none"] = "all"
    window_days: float | None = Field(default=None, gt=0, le=36_500)
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    min_holdout_rows: int = Field(default=200, ge=10)
    incremental_rounds: int = Field(default=50, ge=1, le=10_000)

    @field_validator("until", mode="before")
    @classmethod
    def _until_is_a_period(cls, value: Any) -> str | None:
        if isinstance(value, date | int):  # YAML reads 2013-10-01 as a date and 2013 as a number
            value = value.isoformat() if isinstance(value, date) else str(value)
        if value is not None:
            import pandas as pd

            try:
                pd.Period(str(value))
            except (ValueError, TypeError):
                raise ValueError(f"{value!r} is not a date, month or year (e.g. 2013-10-01)") from None
        return None if value is None else str(value)

    def cutoff(self, timezone: str | None) -> Any:
        """The start of ``until`` in the spec's time zone as a UTC ``pandas.Timestamp``, or None."""
        if self.until is None:
            return None
        import pandas as pd

        return pd.Period(self.until).start_time.tz_localize(timezone or "UTC").tz_convert("UTC")

    @model_validator(mode="after")
    def _window_needs_days(self) -> TrainingDataSpec:
        if self.feedback == "window" and self.window_days is None:
            raise ValueError("feedback: window needs window_days (the most recent days to learn from)")
        return self


class TuningSpec(_Frozen):
    n_trials: int = Field(default=20, ge=1)
    timeout_s: float | None = Field(default=420, gt=0)
    num_boost_round: int = Field(default=400, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    max_depth: tuple[int, int] = (4, 12)
    learning_rate: tuple[float, float] = (0.03, 0.3)


class PromotionSpec(_Frozen):
    """The gate: beat the champion on the same test data; no slice worse than a bound.

    A candidate worse than the champion by more than ``tolerance`` is rejected; one that is not better
    (within the tolerance) is rejected too unless ``refresh_within_tolerance`` and it learned from newer
    data; only a better one is promoted on its metric. Never a silent ``+0.0000``.
    """

    tolerance: float = Field(default=0.002, ge=0)
    max_slice_regression: float = Field(default=0.02, ge=0)
    min_slice_rows: int = Field(default=500, ge=1)
    refresh_within_tolerance: bool = Field(
        default=False,
        description="promote a candidate that is not better but within the tolerance when it learned from "
        "newer data than the champion (a refresh); the reason says so. Otherwise a promotion needs an "
        "improvement",
    )


class FairnessSpec(_Frozen):
    """Sensitive features whose groups a model is judged across (steps.model.fairness), and the bounds the
    promotion gate holds a candidate to (null: reported, not bounded)."""

    sensitive: list[str] = Field(default_factory=list, max_length=20)
    min_group_rows: int = Field(default=100, ge=1)
    max_demographic_parity_difference: float | None = Field(default=None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(default=None, ge=0, le=1)
    max_error_gap: float | None = Field(
        default=None, ge=0, description="regression: MAE gap between groups; multiclass: accuracy gap"
    )


METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "log_loss", "brier"),
    "multiclass": ("log_loss", "accuracy", "f1_macro", "roc_auc_ovr"),
    "regression": ("rmse", "mae", "r2"),
}
"""The metrics each task computes; the first is the task's default gate metric."""
LOWER_IS_BETTER = {"log_loss", "brier", "rmse", "mae"}


class SchedulesSpec(_Frozen):
    """When the problem's deployments run on their own (cron in UTC, or every N seconds); null turns one off.

    Drift-triggered retraining and promotion-triggered service updates happen besides these.
    """

    training: str | None = Field(default="0 3 * * 1", description="cron: weekly retrain")
    monitoring: int | None = Field(default=3600, ge=60, description="seconds between monitoring runs")
    inference: str | None = Field(default="0 5 * * *", description="cron: daily batch scoring")
    service: str | None = Field(default="30 5 * * *", description="cron: daily check the champion is served")

    @field_validator("training", "inference", "service")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 100 or len(value.split()) != 5):
            raise ValueError(f"{value!r} is not a cron expression of 5 fields")
        return value


class ProblemSpec(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    model_name: str
    description: str = ""
    intended_use: str = Field(
        default="",
        max_length=4000,
        description="who may use the predictions and for what (and what not): the model card shows it",
    )
    source: str
    task: Task
    target: TargetSpec
    features: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    categorical: list[str] | None = Field(default=None, description="default: every non-numeric feature")
    time: TimeSpec | None = None
    joins: list[JoinSpec] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list)
    # not ``keys``: a field of that name shadows the mapping protocol, and dict(spec), which Prefect calls on
    # every task input, then tries to call the list ("'list' object is not callable")
    key_columns: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="columns that identify a row (a flight): precomputed predictions are stored and looked "
        "up by them; none: batch inference stores no predictions",
    )
    rollout_key: str | None = Field(
        default=None,
        description="request field whose value decides, by a stable hash, which requests a canary answers "
        "(the same key always the same version); none: each request is drawn at random",
    )
    metric: str = Field(default="", description="gate metric (default: the task's first in METRICS)")
    threshold: float | Literal["f1"] = Field(
        default=0.5, description="decision threshold, or 'f1': the F1-best one on the validation period"
    )
    split: SplitSpec = SplitSpec()
    training_data: TrainingDataSpec = TrainingDataSpec()
    validation: ValidationSpec = ValidationSpec()
    tuning: TuningSpec = TuningSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    promotion: PromotionSpec = PromotionSpec()
    fairness: FairnessSpec = FairnessSpec()
    schedules: SchedulesSpec = SchedulesSpec()

    @model_validator(mode="before")
    @classmethod
    def _task_default_metric(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and not raw.get("metric") and raw.get("task") in METRICS:
            return {**raw, "metric": METRICS[raw["task"]][0]}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> ProblemSpec:
        if self.metric not in METRICS[self.task]:
            raise ValueError(
                f"metric {self.metric!r} does not fit task {self.task!r}: use one of {METRICS[self.task]}"
            )
        if isinstance(self.threshold, float) and not 0 < self.threshold < 1:
            raise ValueError(f"threshold {self.threshold} must lie strictly between 0 and 1")
        if self.target.positive is not None and self.task != "binary":
            raise ValueError("target.positive is for a binary task")
        if self.target.classes is not None and self.task != "multiclass":
            raise ValueError("target.classes is for a multiclass task")
        binary_only = ("max_demographic_parity_difference", "max_equalized_odds_difference")
        if self.task != "binary" and any(getattr(self.fairness, k) is not None for k in binary_only):
            raise ValueError(f"fairness.{'/'.join(binary_only)} are for a binary task: use max_error_gap")
        if self.task == "binary" and self.fairness.max_error_gap is not None:
            raise ValueError("fairness.max_error_gap is for regression and multiclass tasks")
        if self.training_data.until is not None and self.time is None:
            raise ValueError("training_data.until needs a time column (time.column) to cut the source at")
        if len(set(self.key_columns)) != len(self.key_columns) or not all(
            k.strip() for k in self.key_columns
        ):
            raise ValueError(f"key_columns must be distinct column names, got {self.key_columns}")
        if self.features is not None and self.exclude:
            raise ValueError("give either 'features' (a list) or 'exclude' (all but), not both")
        return self

    @property
    def label(self) -> str:
        return self.target.label

    @property
    def fixed_threshold(self) -> float:
        """The threshold when it is a number; 0.5 until an 'f1' threshold has been chosen."""
        return self.threshold if isinstance(self.threshold, float) else 0.5

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def target_source_columns(self) -> list[str]:
        """Columns the target reads, so they are required and never used as features (leakage).

        Taken from the parsed rule, so text literals (``Class == 'bad'``) and list items are not columns.
        """
        expression = self.target.expression
        if expression is None:
            return [self.target.column]
        return sorted({self.target.column} | expression.columns)


class SpecLoader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2 booleans: only true/false, so ``positive: yes`` means the text yes.

    YAML 1.1 (PyYAML's default) reads yes/no/on/off as booleans, which would turn a label value a user
    copies from their data into something the data does not hold.
    """


SpecLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "flows" / "problems"


def load_spec(name_or_path: str | Path) -> ProblemSpec:
    """Load a spec by name (``flows/problems/NAME.yaml``) or by path, with errors naming file and key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROBLEMS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROBLEMS_DIR.glob("*.yaml"))
        raise SpecError(f"{path}: no such problem spec (known: {', '.join(known)})")
    try:
        raw = yaml.load(path.read_text(), Loader=SpecLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return ProblemSpec.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{path}: {where}: {msg}")
        raise SpecError("\n".join(lines)) from None
