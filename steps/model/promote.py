"""Promote: champion/challenger with MLflow aliases, gated on the same test data.

The candidate takes the ``champion`` alias only if it keeps within the spec's fairness bounds, beats the
champion's metric on the same test rows (with
feedback: the newest labelled period, which the champion never learned from) and no slice with enough rows
regresses beyond the bound. A candidate that is no better is kept out, unless the spec allows a refresh
within the tolerance and it learned from newer data, and the reason then says so: a promotion is never a
silent ``+0.0000``. Either way the decision and its reason are tags on the candidate version and its
description; a rejected candidate keeps the ``challenger`` alias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from flywheel.contracts.model_version import ModelVersion, Promotion, models_uri
from flywheel.contracts.problem import ProblemSpec
from stacks.components import model_versions
from steps.data.features import Dataset
from steps.model.evaluate import score, slice_metrics
from steps.model.xgb import predict

log = logging.getLogger(__name__)


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    candidate_version: str
    champion_version: str | None
    candidate_metric: float
    champion_metric: float | None
    slice_regressions: list[dict[str, Any]] = field(default_factory=list)

    def description(self, metric: str) -> str:
        """One paragraph for the version page: the verdict and its reason, in plain words."""
        verdict = "Promoted to champion" if self.promoted else "Not promoted (challenger)"
        lines = [f"{verdict}: {self.reason}."]
        if self.champion_metric is not None:
            lines.append(
                f"{metric}: this version {self.candidate_metric:.4f}, champion v{self.champion_version} "
                f"{self.champion_metric:.4f}, on the same test rows."
            )
        else:
            lines.append(f"{metric} on the test rows: {self.candidate_metric:.4f}.")
        return " ".join(lines)

    def to_markdown(self, metric: str) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "NOT promoted (kept as challenger)"
        champion = "none" if self.champion_metric is None else f"{self.champion_metric:.4f}"
        lines = [
            f"# Promotion: version {self.candidate_version} {verdict}",
            "",
            f"**Reason:** {self.reason}",
            "",
            f"| | version | {metric} |",
            "|---|---|---|",
            f"| candidate | {self.candidate_version} | {self.candidate_metric:.4f} |",
            f"| champion | {self.champion_version or '-'} | {champion} |",
        ]
        if self.slice_regressions:
            lines += ["", "| slice | value | rows | candidate | champion |", "|---|---|---|---|---|"]
            lines += [
                f"| {r['slice']} | {r['value']} | {r['rows']} | {r['candidate']:.4f} | {r['champion']:.4f} |"
                for r in self.slice_regressions
            ]
        return "\n".join(lines)


def _delta(candidate: float, champion: float, lower_is_better: bool) -> float:
    """How much better the candidate is (positive = better), whatever the metric's direction."""
    return champion - candidate if lower_is_better else candidate - champion


def signed(change: float) -> str:
    """A metric change as people read it: ``+0.0123``; a tiny one keeps its digits (``+3.1e-06``), so a real
    change never reads as ``+0.0000``."""
    return f"{change:+.4f}" if change == 0 or abs(change) >= 5e-5 else f"{change:+.2g}"


def decide(
    spec: ProblemSpec,
    candidate_p: np.ndarray,
    champion_p: np.ndarray | None,
    test: Dataset,
    candidate_version: str,
    champion_version: str | None,
    newer_data: bool = False,
    unfair: list[str] | None = None,
) -> PromotionDecision:
    """The gate itself, pure: predictions of both models on the same test rows in, decision out.

    ``unfair``: the candidate's disparities over the spec's fairness bounds (steps.model.fairness
    .violations); any of them keeps it out, first model or not.

    ``newer_data``: the candidate learned from data the champion did not have (feedback served after the
    champion's), which is what lets ``promotion.refresh_within_tolerance`` promote a candidate that is not
    better."""
    y = test.y.to_numpy(dtype="float64")
    cand = score(y, candidate_p, spec.task, spec.fixed_threshold)[spec.metric]
    if unfair:
        reason = f"fairness bound broken: {'; '.join(unfair)}"
        return PromotionDecision(False, reason, candidate_version, champion_version, cand, None)
    if champion_p is None:
        reason = (
            "no champion yet"
            if champion_version is None
            else (f"champion v{champion_version} cannot score this data (its features differ): replaced")
        )
        return PromotionDecision(True, reason, candidate_version, champion_version, cand, None)
    champ = score(y, champion_p, spec.task, spec.fixed_threshold)[spec.metric]
    if np.array_equal(np.asarray(candidate_p), np.asarray(champion_p)):
        same = f"predicts exactly what champion v{champion_version} predicts on the test rows"
        reason = f"{same}: nothing new learned"
        return PromotionDecision(False, reason, candidate_version, champion_version, cand, champ)
    gain = _delta(cand, champ, spec.lower_is_better)
    tol = spec.promotion.tolerance
    cand_slices = slice_metrics(test.frame, y, candidate_p, spec)
    champ_slices = slice_metrics(test.frame, y, champion_p, spec)
    merged = cand_slices.merge(champ_slices, on=["slice", "value", "rows"], suffixes=("_cand", "_champ"))
    regressions = []
    for row in merged.itertuples(index=False):
        c, h = getattr(row, f"{spec.metric}_cand"), getattr(row, f"{spec.metric}_champ")
        if row.rows < spec.promotion.min_slice_rows or not (np.isfinite(c) and np.isfinite(h)):
            continue
        if _delta(c, h, spec.lower_is_better) < -spec.promotion.max_slice_regression:
            regressions.append(
                {"slice": row.slice, "value": row.value, "rows": row.rows, "candidate": c, "champion": h}
            )
    if gain < -tol:
        reason = (
            f"{spec.metric} {cand:.4f} is worse than champion v{champion_version}'s {champ:.4f} "
            f"by more than the tolerance {tol}"
        )
        return PromotionDecision(False, reason, candidate_version, champion_version, cand, champ, regressions)
    if regressions:
        worst = min(regressions, key=lambda r: _delta(r["candidate"], r["champion"], spec.lower_is_better))
        reason = (
            f"{len(regressions)} slice(s) regress beyond {spec.promotion.max_slice_regression}, worst "
            f"{worst['slice']}={worst['value']}: {worst['candidate']:.4f} vs {worst['champion']:.4f}"
        )
        return PromotionDecision(False, reason, candidate_version, champion_version, cand, champ, regressions)
    compared = (
        f"{spec.metric} {cand:.4f} vs champion v{champion_version}'s {champ:.4f} (change {signed(gain)}"
    )
    slices_ok = f"no slice regresses beyond {spec.promotion.max_slice_regression}"
    if gain > 0:
        reason = f"improves on the champion: {compared}); {slices_ok}"
        return PromotionDecision(True, reason, candidate_version, champion_version, cand, champ, regressions)
    if spec.promotion.refresh_within_tolerance and newer_data:
        reason = (
            f"refresh on newer data: not better but within the tolerance ({compared}, tolerance {tol}); "
            f"promoted because promotion.refresh_within_tolerance is set; {slices_ok}"
        )
        return PromotionDecision(True, reason, candidate_version, champion_version, cand, champ, regressions)
    reason = (
        f"no improvement: {compared}); the champion stays (a promotion needs an improvement"
        + ("" if newer_data else ", and this candidate learned from nothing newer than the champion")
        + ")"
    )
    return PromotionDecision(False, reason, candidate_version, champion_version, cand, champ, regressions)


def champion_predictions(model_name: str, champion: ModelVersion, test: Dataset) -> np.ndarray | None:
    """The champion's predictions on the candidate's test rows, or None if it cannot read them.

    A classifier's outputs are put in the candidate's class order (a class the champion never knew gets
    probability 0), so both are judged on the same labels even when the classes changed.
    """
    try:
        booster = mlflow.xgboost.load_model(models_uri(model_name, champion.version))
        names = list(booster.feature_names or [])
        if names != list(test.X.columns):
            return None
        p = predict(booster, test.X)
        if test.schema.task != "multiclass":
            return p
        theirs = model_versions.feature_schema(champion.run_id).classes or []
        return aligned(p, theirs, test.schema.classes or [])
    except (MlflowException, ValueError, KeyError, OSError) as exc:
        log.warning("champion v%s could not be scored: %s", champion.version, exc)
        return None


def aligned(p: np.ndarray, classes: list[str], order: list[str]) -> np.ndarray:
    """Class probabilities ``p`` (columns in ``classes`` order) rearranged into ``order``."""
    if classes == order:
        return p
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"{p.shape} predictions for {len(classes)} classes")
    out = np.zeros((p.shape[0], len(order)))
    for j, name in enumerate(order):
        if name in classes:
            out[:, j] = p[:, classes.index(name)]
    return out


def promote(
    spec: ProblemSpec,
    candidate_version: str,
    candidate_p: np.ndarray,
    test: Dataset,
    newer_data: bool = False,
    unfair: list[str] | None = None,
    move_alias: bool = True,
) -> PromotionDecision:
    """Compare with the champion, move the aliases, and record the decision on the candidate version (tags
    and its description). ``move_alias=False`` (a staged rollout follows): a candidate that passes becomes
    the challenger, and the rollout gives it the champion alias once every step held."""
    name = spec.model_name
    champion = model_versions.by_alias(name)
    champion_p = champion_predictions(name, champion, test) if champion is not None else None
    decision = decide(
        spec,
        candidate_p,
        champion_p,
        test,
        candidate_version,
        None if champion is None else str(champion.version),
        newer_data,
        unfair,
    )
    recorded = Promotion(
        promoted=decision.promoted,
        reason=decision.reason,
        metric=spec.metric,
        candidate_metric=decision.candidate_metric,
        champion_version=decision.champion_version,
        champion_metric=decision.champion_metric,
    )
    model_versions.set_tags(name, candidate_version, recorded.to_tags())
    model_versions.set_description(name, candidate_version, decision.description(spec.metric))
    if decision.promoted and move_alias:
        model_versions.make_champion(name, candidate_version)
    else:
        model_versions.mark_challenger(name, candidate_version)
    return decision
