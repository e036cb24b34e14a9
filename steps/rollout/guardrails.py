"""A rollout step's evidence and verdict, from the services' Prometheus metrics (``/metrics``).

The service counts each version's scorings by role (``flywheel_version_*``, serving.metrics): rows,
failures, scoring time (a histogram) and the mean prediction of each request. A step reads them at its
start and at each check, sums its replicas, and judges the difference: the candidate's error rate, its p99
scoring time (absolute, and against the champion's over the same step), and the shift of its mean
prediction from the champion's. Pure apart from :func:`scrape` (one GET per service).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stacks.config import Guardrails, RolloutStep
from steps.rollout.realized import Realized

ROWS, ERRORS, LATENCY, MEAN = (
    "flywheel_version_scored_rows",
    "flywheel_version_errors",
    "flywheel_version_scoring_seconds",
    "flywheel_version_mean_prediction",
)


@dataclass
class Figures:
    """One version in one role, summed over the replicas scraped."""

    rows: float = 0.0
    errors: float = 0.0
    scorings: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    mean_sum: float = 0.0
    mean_count: float = 0.0

    def __sub__(self, before: Figures) -> Figures:
        return Figures(
            self.rows - before.rows,
            self.errors - before.errors,
            self.scorings - before.scorings,
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.mean_sum - before.mean_sum,
            self.mean_count - before.mean_count,
        )

    @property
    def error_rate(self) -> float:
        attempts = self.scorings + self.errors
        return self.errors / attempts if attempts else 0.0

    @property
    def mean(self) -> float | None:
        return self.mean_sum / self.mean_count if self.mean_count else None

    def p99_ms(self) -> float | None:
        """The 99th percentile scoring time: the upper bound of the first bucket holding 99% (Prometheus's
        histogram_quantile without the interpolation: never below the truth)."""
        total = self.buckets.get(math.inf, 0.0)
        if total <= 0:
            return None
        for le in sorted(self.buckets):
            if self.buckets[le] >= 0.99 * total:
                return le * 1000 if math.isfinite(le) else math.inf
        return math.inf


Snapshot = dict[tuple[str, str], Figures]
"""(version, role) -> figures."""


def parse(text: str) -> Snapshot:
    """The ``flywheel_version_*`` series of one ``/metrics`` page."""
    found: Snapshot = defaultdict(Figures)
    for family in text_string_to_metric_families(text):
        if family.name not in (ROWS, ERRORS, LATENCY, MEAN):
            continue
        for sample in family.samples:
            key = (sample.labels.get("version", ""), sample.labels.get("role", ""))
            figures = found[key]
            if sample.name == ROWS + "_total":
                figures.rows += sample.value
            elif sample.name == ERRORS + "_total":
                figures.errors += sample.value
            elif sample.name == LATENCY + "_bucket":
                le = float(sample.labels["le"])
                figures.buckets[le] = figures.buckets.get(le, 0.0) + sample.value
            elif sample.name == LATENCY + "_count":
                figures.scorings += sample.value
            elif sample.name == MEAN + "_sum":
                figures.mean_sum += sample.value
            elif sample.name == MEAN + "_count":
                figures.mean_count += sample.value
    return dict(found)


def combine(pages: list[Snapshot]) -> Snapshot:
    """The replicas' snapshots summed."""
    total: Snapshot = defaultdict(Figures)
    for page in pages:
        for key, f in page.items():
            t = total[key]
            t.rows += f.rows
            t.errors += f.errors
            t.scorings += f.scorings
            t.mean_sum += f.mean_sum
            t.mean_count += f.mean_count
            for le, n in f.buckets.items():
                t.buckets[le] = t.buckets.get(le, 0.0) + n
    return dict(total)


def scrape(urls: list[str], timeout_s: float = 5.0) -> tuple[Snapshot, list[str]]:
    """Every service's ``/metrics`` summed, and one line per service that did not answer."""
    import requests

    pages, failures = [], []
    for url in urls:
        try:
            answer = requests.get(f"{url.rstrip('/')}/metrics", timeout=timeout_s)
            answer.raise_for_status()
            pages.append(parse(answer.text))
        except requests.RequestException as exc:
            failures.append(f"{url}: {exc}")
    return combine(pages), failures


def from_prometheus(api: Any, model: str) -> tuple[Snapshot, list[str]]:
    """The same figures as :func:`scrape`, from the stack's Prometheus, which scrapes every replica (the
    direct scrape reaches one process of a multi-worker or load-balanced service per request)."""
    from stacks.components.prometheus import PrometheusUnavailable

    found: Snapshot = defaultdict(Figures)
    where = f'{{model="{model}"}}'
    try:
        for series, value in api.query(f"sum by (version, role) ({ROWS}_total{where})"):
            found[(series.get("version", ""), series.get("role", ""))].rows = value
        for series, value in api.query(f"sum by (version, role) ({ERRORS}_total{where})"):
            found[(series.get("version", ""), series.get("role", ""))].errors = value
        for series, value in api.query(f"sum by (version, role) ({LATENCY}_count{where})"):
            found[(series.get("version", ""), series.get("role", ""))].scorings = value
        for series, value in api.query(f"sum by (version, role, le) ({LATENCY}_bucket{where})"):
            key = (series.get("version", ""), series.get("role", ""))
            found[key].buckets[float(series["le"])] = value
        for series, value in api.query(f"sum by (version, role) ({MEAN}_sum{where})"):
            found[(series.get("version", ""), series.get("role", ""))].mean_sum = value
        for series, value in api.query(f"sum by (version, role) ({MEAN}_count{where})"):
            found[(series.get("version", ""), series.get("role", ""))].mean_count = value
    except PrometheusUnavailable as exc:
        return {}, [str(exc)]
    return dict(found), []


@dataclass
class Verdict:
    """What a check found: ``broken`` names each guardrail broken, with the figures; ``evidence`` is how
    many candidate rows the step has seen; ``measured`` what the step artifact shows."""

    broken: list[str]
    evidence: float
    measured: dict[str, float | None]


def judge(
    step: RolloutStep, guardrails: Guardrails, since_start: Snapshot, candidate: str, champion: str
) -> Verdict:
    """The step's guardrails on what changed since it started."""
    role = "shadow" if step.stage == "shadow" else "canary"
    ours = since_start.get((candidate, role), Figures())
    theirs = since_start.get((champion, "champion"), Figures())
    measured: dict[str, float | None] = {
        "candidate_rows": ours.rows,
        "candidate_errors": ours.errors,
        "error_rate": ours.error_rate,
        "candidate_p99_ms": ours.p99_ms(),
        "champion_p99_ms": theirs.p99_ms(),
        "candidate_mean": ours.mean,
        "champion_mean": theirs.mean,
    }
    broken = []
    if ours.errors and ours.error_rate > guardrails.max_error_rate:
        broken.append(
            f"error rate {ours.error_rate:.2%} over {guardrails.max_error_rate:.2%} "
            f"({ours.errors:.0f} failed scorings)"
        )
    p99, base = ours.p99_ms(), theirs.p99_ms()
    enough = ours.scorings >= 20  # a percentile of a handful of scorings says nothing
    if enough and p99 is not None and p99 > guardrails.max_p99_ms:
        broken.append(f"p99 scoring time {p99:.1f} ms over {guardrails.max_p99_ms:g} ms")
    if (
        enough
        and p99 is not None
        and base
        and theirs.scorings >= 20
        and p99 > guardrails.max_p99_ratio * base
    ):
        broken.append(
            f"p99 scoring time {p99:.1f} ms over {guardrails.max_p99_ratio:g}x the champion's {base:.1f} ms"
        )
    if ours.mean is not None and theirs.mean is not None and ours.mean_count >= 20:
        shift = abs(ours.mean - theirs.mean)
        measured["mean_shift"] = shift
        if shift > guardrails.max_mean_shift:
            broken.append(
                f"mean prediction {ours.mean:.4f} against the champion's {theirs.mean:.4f}: "
                f"shift {shift:.4f} over {guardrails.max_mean_shift:g}"
            )
    return Verdict(broken, ours.rows, measured)


def judge_realized(realized: Realized, guardrails: Guardrails) -> Verdict:
    """The realized-metric guardrail: once both versions have ``min_labels`` labelled rows of the step, the
    candidate's metric may trail the champion's by ``max_metric_drop`` at most. Before that (labels come
    back late, or never) it measures and judges nothing."""
    ours, theirs = realized.values()
    measured: dict[str, float | None] = {
        "labels": float(realized.labels),
        f"candidate_{realized.metric}": ours if math.isfinite(ours) else None,
        f"champion_{realized.metric}": theirs if math.isfinite(theirs) else None,
    }
    if realized.paired:
        measured |= {"agreement": realized.agreement, "score_shift": realized.score_shift}
    gain = realized.gain()
    broken = []
    if realized.labels >= guardrails.min_labels and gain is not None and gain < -guardrails.max_metric_drop:
        rows = "the same" if realized.paired else "its own"
        broken.append(
            f"realized {realized.metric} {ours:.4f} against the champion's {theirs:.4f} on {rows} "
            f"{realized.labels} labelled rows: {-gain:.4f} worse, over {guardrails.max_metric_drop:g}"
        )
    return Verdict(broken, 0.0, measured)
