"""The model card of a registered version: one document an auditor can read without MLflow or the code.

Pure: the version's facts in (the spec's words, its lineage, the test predictions, slices, calibration,
importance, fairness and the gate's decision), a :class:`ModelCard` out, rendered twice, as Markdown (the
Prefect artifact, ``model_card.md`` in the run) and as a self-contained HTML page (``model_card.html``).
Both come from the same sections and tables, in the monitoring report's house style
(:mod:`steps.monitor.report`): numbers formatted for people, never a repr, and no Markdown inside the HTML.
Logging the card is :func:`steps.model.track.log_model_card`'s job.

Metric intervals are a percentile bootstrap over the test rows (seeded, a bounded number of resamples and
seconds), so "0.71" comes with how much it would move on another test period of the same size.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from flywheel.contracts.model_version import DatasetLineage, TrainingRecord
from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.schema import FeatureSchema
from steps.data.features import Dataset
from steps.data.split import Splits
from steps.model.evaluate import Evaluation, expected_calibration_error, score
from steps.model.explain import Explanation
from steps.model.fairness import GroupReport
from steps.model.promote import PromotionDecision, signed
from steps.monitor.policy import moment
from steps.monitor.report import STYLE, Table, metric_name

RESAMPLES = 200
CONFIDENCE = 0.95
BOOTSTRAP_BUDGET_S = 10.0
"""Seconds the bootstrap may take; fewer resamples (and the card says how many) rather than a slow flow."""
HIGH_MISSING = 0.1
"""A training column missing in at least this share of rows is listed as a limitation."""
CALIBRATION_BINS = 10
TOP_FEATURES = 15
SECTIONS = (
    "Model",
    "Intended use",
    "Data lineage",
    "Data compared with the previous champion",
    "Test metrics",
    "Slices",
    "Calibration",
    "Global explanation",
    "Fairness",
    "Promotion decision",
    "Approvals and rollouts",
    "Known limitations",
)
"""Every card has these sections, in this order (a section with nothing to show says why)."""


# --------------------------------------------------------------------------- the facts


@dataclass(frozen=True)
class Interval:
    metric: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Intervals:
    """Bootstrap intervals of every test metric, and how they were obtained."""

    metrics: list[Interval]
    resamples: int
    confidence: float
    seed: int
    rows: int


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    rows: int
    mean_predicted: float
    observed: float


@dataclass(frozen=True)
class Calibration:
    """Binary: the positive-class probability against the observed rate; multiclass: the predicted class's
    probability against how often it is right; regression: not applicable (``note`` says so)."""

    error: float | None
    bins: list[CalibrationBin] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Limitations:
    vocabularies: list[tuple[str, int]]
    """(categorical column, number of categories the schema knows)."""
    missing: list[tuple[str, float]]
    """(training column, share of training rows missing), at or over ``missing_threshold``."""
    missing_threshold: float
    training_rows: int


@dataclass(frozen=True)
class PreviousChampion:
    """The champion this version was judged against, as its tags and feature schema recorded it."""

    version: str
    dataset: DatasetLineage
    training: TrainingRecord
    features: list[str] | None = None


@dataclass(frozen=True)
class CardFacts:
    """Everything a card says, computed; rendering adds no facts."""

    model_name: str
    version: str
    run_id: str
    problem: str
    task: str
    metric: str
    lower_is_better: bool
    description: str
    intended_use: str
    label: str
    features: list[str]
    threshold: float | None
    created_at: datetime
    reason: str
    dataset: DatasetLineage
    training: TrainingRecord
    rows: dict[str, int]
    """Rows per part: train, test."""
    previous: PreviousChampion | None
    intervals: Intervals
    slices: pd.DataFrame
    calibration: Calibration
    importance: pd.Series
    fairness: list[GroupReport]
    decision: PromotionDecision
    limitations: Limitations


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    code: str = ""
    """A command to run, shown as code."""


@dataclass
class ModelCard:
    title: str
    summary: str
    sections: list[Section]


# --------------------------------------------------------------------------- the computations


def bootstrap(
    y: np.ndarray,
    p: np.ndarray,
    task: str,
    threshold: float,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    budget_s: float = BOOTSTRAP_BUDGET_S,
) -> Intervals:
    """Percentile intervals of every metric of ``score`` over resampled test rows (with replacement).

    Stops early when ``budget_s`` is spent (at least 20 resamples are always drawn, so an interval is never
    two points); a resample where a metric is undefined (one class only) is left out of that metric."""
    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    point = score(y, p, task, threshold)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    started = time.perf_counter()
    done = 0
    for _ in range(resamples):
        if done >= 20 and time.perf_counter() - started > budget_s:
            break
        idx = rng.integers(0, len(y), len(y))
        for key, value in score(y[idx], p[idx], task, threshold).items():
            if math.isfinite(value):
                draws[key].append(value)
        done += 1
    tail = (1 - confidence) / 2 * 100
    out = []
    for key, value in point.items():
        values = np.asarray(draws[key])
        low, high = (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            if len(values) >= 2
            else (math.nan, math.nan)
        )
        out.append(Interval(key, float(value), low, high))
    return Intervals(out, done, confidence, seed, len(y))


def calibration(y: np.ndarray, p: np.ndarray, task: str, bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability in equal-width probability bins, and the expected calibration error over them."""
    if task == "regression":
        return Calibration(
            None, note="Not applicable: a regression model predicts values, not probabilities."
        )
    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    if task == "multiclass":
        confidence = p.max(axis=1)
        observed = (p.argmax(axis=1) == y.astype("int64")).astype("float64")
        note = "The predicted class's probability against how often the predicted class is right."
    else:
        confidence, observed = p, y
        note = "The predicted probability of the positive class against the observed positive rate."
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    found = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            found.append(
                CalibrationBin(
                    float(edges[b]),
                    float(edges[b + 1]),
                    int(mask.sum()),
                    float(confidence[mask].mean()),
                    float(observed[mask].mean()),
                )
            )
    return Calibration(expected_calibration_error(observed, confidence, bins), found, note)


def limitations(schema: FeatureSchema, train: pd.DataFrame, threshold: float = HIGH_MISSING) -> Limitations:
    """What the model cannot know: each categorical column's vocabulary (any other value is unseen) and the
    training columns missing often enough that the model learned little from them."""
    vocabularies = [(c.name, len(c.categories or [])) for c in schema.columns if c.kind == "categorical"]
    names = [n for n in schema.names if n in train.columns]
    shares = train[names].isna().mean() if len(train) else pd.Series(dtype="float64")
    missing = sorted(
        ((str(k), float(v)) for k, v in shares.items() if v >= threshold), key=lambda item: -item[1]
    )
    return Limitations(vocabularies, missing, threshold, len(train))


def facts(
    spec: ProblemSpec,
    version: str,
    run_id: str,
    evaluation: Evaluation,
    explanation: Explanation,
    parts: Splits,
    decision: PromotionDecision,
    *,
    threshold: float | None,
    dataset: DatasetLineage,
    training: TrainingRecord,
    reason: str,
    previous: PreviousChampion | None,
    seed: int = 0,
    created_at: datetime | None = None,
    budget_s: float = BOOTSTRAP_BUDGET_S,
) -> CardFacts:
    """A card's facts from what the training flow has in hand after the gate: the test metrics'
    bootstrap, the calibration and the limitations are computed here; :func:`build` makes the card."""
    test: Dataset = parts.test
    y = test.y.to_numpy(dtype="float64")
    p = evaluation.predictions
    if p is None:
        raise ValueError("the evaluation kept no predictions: the card's intervals need them")
    cut = threshold if threshold is not None else spec.fixed_threshold
    return CardFacts(
        model_name=spec.model_name,
        version=version,
        run_id=run_id,
        problem=spec.name,
        task=spec.task,
        metric=spec.metric,
        lower_is_better=spec.lower_is_better,
        description=spec.description,
        intended_use=spec.intended_use or "",
        label=test.schema.label,
        features=list(test.schema.names),
        threshold=threshold if spec.task == "binary" else None,
        created_at=created_at or datetime.now(UTC),
        reason=reason,
        dataset=dataset,
        training=training,
        rows={"train": len(parts.train.frame), "test": len(test.frame)},
        previous=previous,
        intervals=bootstrap(y, p, spec.task, cut, seed=seed, budget_s=budget_s),
        slices=evaluation.slices,
        calibration=calibration(y, p, spec.task),
        importance=explanation.importance,
        fairness=list(evaluation.fairness),
        decision=decision,
        limitations=limitations(test.schema, parts.train.X),
    )


# --------------------------------------------------------------------------- the sections


def _n(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{value:.4f}"


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _or_none(text: str) -> str:
    return text or "-"


def _model(f: CardFacts) -> Section:
    rows = [
        ["model", f"{f.model_name} version {f.version}"],
        ["problem spec", f.problem],
        ["task", f.task],
        ["label", f.label],
        ["features", f"{len(f.features):,}: {', '.join(f.features)}"],
        ["gate metric", metric_name(f.metric)],
        ["MLflow run", f.run_id],
        ["trained because", _or_none(f.reason)],
        ["training mode", f.training.mode],
    ]
    if f.threshold is not None:
        rows.insert(5, ["decision threshold", f"{f.threshold:.4f}"])
    return Section(
        "Model", [f.description or "The spec has no description."], [Table("", ["", "value"], rows)]
    )


def _intended_use(f: CardFacts) -> Section:
    text = f.intended_use or (
        "Not stated: the problem spec has no intended_use. Add one before handing this card to anyone "
        "who decides on its predictions."
    )
    return Section("Intended use", [text])


def _lineage(f: CardFacts) -> Section:
    d = f.dataset
    rows = [
        ["source snapshot", "training data", _or_none(d.digest), _or_none(d.source), _or_none(d.snapshot)],
    ]
    rows += [
        ["join", name, _or_none(j.digest), _or_none(j.source), _or_none(j.snapshot)]
        for name, j in sorted(d.joins.items())
    ]
    t = f.training
    if t.feedback_digest:
        rows.append(
            [
                "feedback snapshot",
                f"{t.feedback_rows:,} labelled served rows",
                t.feedback_digest,
                "the service's prediction log and labels",
                _or_none(t.feedback_snapshot),
            ]
        )
    paragraphs = [
        f"Source rows in the snapshot: {_n(d.rows)}. Rows trained on: {f.rows['train']:,}; "
        f"test rows (the later period{', newest feedback' if t.feedback_digest else ''}): {f.rows['test']:,}."
    ]
    if not t.feedback_digest:
        paragraphs.append("No feedback (served traffic with labels) was learned from.")
    if t.fingerprint:
        paragraphs.append(f"Training fingerprint: {t.fingerprint}.")
    table = Table("", ["data", "what", "digest", "source", "snapshot"], rows)
    return Section("Data lineage", paragraphs, [table])


def _previous(f: CardFacts) -> Section:
    title = "Data compared with the previous champion"
    prev = f.previous
    if prev is None:
        return Section(
            title, [f"No previous champion: this is the first version of {f.model_name} to be judged."]
        )
    a, b = prev.dataset, f.dataset
    rows = [
        ["version", prev.version, f.version],
        ["source snapshot", _or_none(a.digest), _or_none(b.digest)],
        ["source", _or_none(a.source), _or_none(b.source)],
        ["source rows", _n(a.rows), _n(b.rows)],
        ["feedback snapshot", _or_none(prev.training.feedback_digest), _or_none(f.training.feedback_digest)],
        ["feedback rows", _n(prev.training.feedback_rows), _n(f.training.feedback_rows)],
        ["training mode", prev.training.mode, f.training.mode],
    ]
    paragraphs = [
        "The same source snapshot as the previous champion."
        if a.digest and a.digest == b.digest
        else "A different source snapshot from the previous champion's."
    ]
    if prev.features is not None:
        added = [c for c in f.features if c not in prev.features]
        removed = [c for c in prev.features if c not in f.features]
        paragraphs.append(
            "Features: the same as the previous champion's."
            if not (added or removed)
            else f"Features added: {', '.join(added) or 'none'}; removed: {', '.join(removed) or 'none'}."
        )
    paragraphs.append(
        "Column by column (schema, statistics, drift, new and vanished categories, label balance):"
    )
    command = (
        f"flywheel data diff {f.model_name}/{prev.version} {f.model_name}/{f.version} "
        f"--problem {f.problem} --html diff.html"
    )
    table = Table("", ["", f"previous champion v{prev.version}", f"this version v{f.version}"], rows)
    return Section(title, paragraphs, [table], code=command)


def _metrics(f: CardFacts) -> Section:
    iv = f.intervals
    rows = [
        [metric_name(m.metric), _n(m.value), f"{_n(m.low)} to {_n(m.high)}"]
        for m in sorted(iv.metrics, key=lambda m: m.metric != f.metric)
    ]
    note = (
        f"{iv.confidence:.0%} percentile bootstrap over the {iv.rows:,} test rows: {iv.resamples} resamples "
        f"with replacement, seed {iv.seed}."
    )
    return Section(
        "Test metrics",
        [f"The gate metric is {metric_name(f.metric)}, listed first."],
        [Table("", ["metric", "value", f"{iv.confidence:.0%} interval"], rows, note)],
    )


def _slices(f: CardFacts) -> Section:
    if f.slices.empty:
        return Section("Slices", ["The spec names no slice columns (slices)."])
    tables = []
    for name, part in f.slices.groupby("slice", sort=False):
        rows = [[str(r.value), _n(int(r.rows)), _n(float(getattr(r, f.metric)))] for r in part.itertuples()]
        tables.append(Table(f"By {name}", ["value", "rows", metric_name(f.metric)], rows))
    return Section("Slices", [f"{metric_name(f.metric)} on the test rows of each value."], tables)


def _calibration(f: CardFacts) -> Section:
    c = f.calibration
    if c.error is None:
        return Section("Calibration", [c.note])
    rows = [[f"{b.low:.1f}-{b.high:.1f}", _n(b.rows), _n(b.mean_predicted), _n(b.observed)] for b in c.bins]
    table = Table("", ["probability", "rows", "mean predicted", "observed"], rows)
    return Section("Calibration", [f"Expected calibration error: {c.error:.4f}. {c.note}"], [table])


def _explanation(f: CardFacts) -> Section:
    top = f.importance.head(TOP_FEATURES)
    rows = [[str(k), f"{float(v):.4f}"] for k, v in top.items()]
    more = len(f.importance) - len(top)
    note = f"{more} more features not shown." if more > 0 else ""
    return Section(
        "Global explanation",
        ["Mean absolute SHAP contribution (TreeSHAP, margin units) per feature, on a sample of test rows."],
        [Table("", ["feature", "mean |SHAP|"], rows, note)],
    )


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "-" if math.isnan(float(value)) else f"{float(value):.3f}"
    return str(value)


def _fairness(f: CardFacts) -> Section:
    if not f.fairness:
        return Section(
            "Fairness", ["No sensitive feature named (fairness.sensitive in the spec): not assessed."]
        )
    paragraphs, tables = [], []
    for report in f.fairness:
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in report.disparities.items()) or "-"
        note = (
            f"Under the minimum rows, not in the disparities: {', '.join(report.left_out)}"
            if report.left_out
            else ""
        )
        columns = [str(c) for c in report.by_group.columns]
        rows = [[_cell(v) for v in row] for row in report.by_group.itertuples(index=False)]
        tables.append(Table(f"By {report.feature}: {shown}", columns, rows, note))
    paragraphs.append("Metrics by group (fairlearn MetricFrame) and the disparities between groups.")
    return Section("Fairness", paragraphs, tables)


def _decision(f: CardFacts) -> Section:
    d = f.decision
    verdict = "Promoted to champion" if d.promoted else "Not promoted (kept as challenger)"
    champion = "-" if d.champion_metric is None else _n(d.champion_metric)
    rows = [
        ["candidate", d.candidate_version, _n(d.candidate_metric)],
        ["champion", d.champion_version or "-", champion],
    ]
    tables = [Table("", ["", "version", metric_name(f.metric)], rows)]
    if d.slice_regressions:
        tables.append(
            Table(
                "Slices that regress",
                ["slice", "value", "rows", "candidate", "champion"],
                [
                    [
                        str(r["slice"]),
                        str(r["value"]),
                        _n(int(r["rows"])),
                        _n(r["candidate"]),
                        _n(r["champion"]),
                    ]
                    for r in d.slice_regressions
                ],
            )
        )
    paragraphs = [f"{verdict}. Reason: {d.reason}."]
    if d.champion_metric is not None:
        better = "lower" if f.lower_is_better else "higher"
        paragraphs.append(
            f"Candidate minus champion: {signed(d.candidate_metric - d.champion_metric)} "
            f"({better} is better)."
        )
    return Section("Promotion decision", paragraphs, tables)


APPROVALS_TITLE = "Approvals and rollouts"


def _approvals(f: CardFacts) -> Section:
    return approvals_section([], {}, None)


def approvals_section(approvals: Sequence[Any], rollout: dict[str, Any], rollback: Any) -> Section:
    """What people and rollouts decided about the version: each approval (who, when, why), how its rollout
    ended and each step's figures, a rollback. Written at registration (none yet) and again when a
    rollout or a rollback ends (steps.model.card_log.refresh_approvals)."""
    paragraphs, tables = [], []
    if approvals:
        rows = [[a.what, a.decision, a.by, a.at, a.comment or "-"] for a in approvals]
        tables.append(Table("Approvals", ["asked for", "decision", "by", "at", "comment"], rows))
    else:
        paragraphs.append(
            "Approvals: none recorded. The champion alias is set by the promotion gate alone; no person "
            "has signed this version off."
        )
    if rollout.get("result"):
        paragraphs.append(f"Rollout: {rollout['result']}. {rollout.get('reason', '')}".strip())
        steps = rollout.get("steps") or []
        rows = [
            [
                str(s.get("step")),
                str(s.get("stage")),
                f"{float(s.get('fraction', 0)):.0%}",
                str(s.get("held_s")),
                "held" if s.get("held") else "broken",
                str(s.get("reason", "")),
            ]
            for s in steps
        ]
        if rows:
            tables.append(
                Table("Rollout steps", ["step", "stage", "share", "held s", "outcome", "why"], rows)
            )
    else:
        paragraphs.append(
            "Rollouts: none recorded on this card. The deployment flow serves whichever version the "
            "champion alias names and records where on the version's tags (flywheel.service.*)."
        )
    if rollback is not None:
        paragraphs.append(
            f"Rolled back to v{rollback.to} at {rollback.at} by {rollback.by}: {rollback.reason}."
        )
    return Section(APPROVALS_TITLE, paragraphs, tables)


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    return asdict(card)


def card_from_dict(raw: dict[str, Any]) -> ModelCard:
    sections = [
        Section(
            s["title"],
            list(s.get("paragraphs", [])),
            [
                Table(t["title"], list(t["headers"]), [list(r) for r in t["rows"]], t.get("note", ""))
                for t in s.get("tables", [])
            ],
            s.get("code", ""),
        )
        for s in raw["sections"]
    ]
    return ModelCard(raw["title"], raw["summary"], sections)


def _limitations(f: CardFacts) -> Section:
    lim = f.limitations
    paragraphs = [
        "Categories never seen in training: a categorical value outside the vocabulary below is unknown to "
        "the model, and the service refuses a request that carries one (422)."
    ]
    tables = []
    if lim.vocabularies:
        rows = [[name, _n(size)] for name, size in lim.vocabularies]
        tables.append(Table("Vocabularies", ["column", "known categories"], rows))
    else:
        paragraphs.append("The model has no categorical features.")
    if lim.missing:
        rows = [[name, _pct(share)] for name, share in lim.missing]
        note = (
            f"columns missing in at least {_pct(lim.missing_threshold)} of the "
            f"{lim.training_rows:,} training rows"
        )
        tables.append(Table("High missingness in the training data", ["column", "missing"], rows, note))
    else:
        paragraphs.append(
            f"No feature is missing in {_pct(lim.missing_threshold)} or more of the "
            f"{lim.training_rows:,} training rows."
        )
    paragraphs.append(
        "Test metrics describe the test period only; later data can differ (monitoring watches for it)."
    )
    return Section("Known limitations", paragraphs, tables)


def build(facts: CardFacts) -> ModelCard:
    """The card's sections (always all of :data:`SECTIONS`, in order) from its facts."""
    makers = (
        _model,
        _intended_use,
        _lineage,
        _previous,
        _metrics,
        _slices,
        _calibration,
        _explanation,
        _fairness,
        _decision,
        _approvals,
        _limitations,
    )
    sections = [make(facts) for make in makers]
    gate = next((m for m in facts.intervals.metrics if m.metric == facts.metric), None)
    headline = (
        f"{metric_name(facts.metric)} {_n(gate.value)} ({gate.low:.4f} to {gate.high:.4f})"
        if gate is not None and math.isfinite(gate.low)
        else metric_name(facts.metric)
    )
    verdict = "promoted to champion" if facts.decision.promoted else "not promoted"
    summary = (
        f"{facts.model_name} v{facts.version}, {facts.task}, trained {moment(facts.created_at)}: "
        f"{headline} on the test rows; {verdict}."
    )
    return ModelCard(f"Model card: {facts.model_name} version {facts.version}", summary, sections)


# --------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{_md_cell(table.note)}_"]
    return [*lines, ""]


def to_markdown(card: ModelCard) -> str:
    """The card as Markdown (the Prefect artifact and ``model_card.md``)."""
    lines = [f"# {card.title}", "", f"**{card.summary}**", ""]
    for section in card.sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.code:
            lines += ["```", section.code, "```", ""]
        for table in section.tables:
            lines += _md_table(table)
    return "\n".join(lines).rstrip() + "\n"


def _html_table(table: Table) -> str:
    title = f"<h3>{html.escape(table.title)}</h3>" if table.title else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def to_html(card: ModelCard) -> str:
    """The card as one self-contained page (``model_card.html``): headings, paragraphs and tables."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(card.title)}</title><style>{STYLE}pre{{background:#f6f6f6;padding:.5em}}"
        "</style></head><body>",
        f"<h1>{html.escape(card.title)}</h1>",
        f'<p class="summary">{html.escape(card.summary)}</p>',
    ]
    for section in card.sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.code:
            parts.append(f"<pre><code>{html.escape(section.code)}</code></pre>")
        parts += [_html_table(t) for t in section.tables]
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def section_titles(card: ModelCard) -> Sequence[str]:
    return [s.title for s in card.sections]
