"""The model card builder (pure): every section, intervals around the point estimate, clean HTML."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from flywheel.contracts.model_version import DatasetLineage, JoinedDataset, TrainingRecord
from flywheel.contracts.problem import ProblemSpec
from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from steps.data.features import Dataset
from steps.data.split import Splits
from steps.model import card
from steps.model.evaluate import evaluate, score
from steps.model.explain import explain
from steps.model.promote import decide

RNG = np.random.default_rng(7)
CARRIERS = ["AA", "B6", "DL", "UA"]


def spec() -> ProblemSpec:
    return ProblemSpec.model_validate(
        {
            "name": "delays",
            "model_name": "delays",
            "description": "Arrival delay over 15 minutes.",
            "intended_use": "Planning spare crews a day ahead; not for refunds.",
            "source": "delays.csv",
            "task": "binary",
            "target": {"column": "label"},
            "slices": ["carrier"],
            "fairness": {"sensitive": ["carrier"], "min_group_rows": 20},
        }
    )


def dataset(n: int, schema: FeatureSchema) -> Dataset:
    carrier = pd.Categorical(RNG.choice(CARRIERS, n), categories=CARRIERS)
    distance = RNG.normal(1000, 300, n)
    wind = np.where(RNG.random(n) < 0.3, np.nan, RNG.normal(10, 4, n))  # 30% missing
    logit = (distance - 1000) / 300 + (carrier == "B6") * 1.0
    label = (RNG.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"carrier": carrier, "distance": distance, "wind": wind, "label": label})
    return Dataset(frame, schema)


@pytest.fixture(scope="module")
def facts() -> card.CardFacts:
    """The facts of a real (tiny) booster's version, evaluated, explained and judged as training does."""
    schema = FeatureSchema(
        [
            FeatureColumn("carrier", "categorical", CARRIERS),
            FeatureColumn("distance", "numeric"),
            FeatureColumn("wind", "numeric"),
        ],
        label="label",
        task="binary",
        classes=["0", "1"],
    )
    s = spec()
    train, test = dataset(1500, schema), dataset(600, schema)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(train.X, train.y, enable_categorical=True),
        num_boost_round=20,
    )
    evaluation = evaluate(booster, test, s, 0.5)
    explanation = explain(booster, test.X, seed=0)
    assert evaluation.predictions is not None
    champion_p = np.clip(evaluation.predictions + RNG.normal(0, 0.2, len(test.frame)), 0, 1)
    decision = decide(s, evaluation.predictions, champion_p, test, "2", "1", newer_data=True)
    previous = card.PreviousChampion(
        "1",
        DatasetLineage("aaa111", "file:///snap/aaa111", "delays.csv", 1800),
        TrainingRecord(mode="full"),
        ["carrier", "distance", "visibility"],
    )
    return card.facts(
        s,
        "2",
        "run123",
        evaluation,
        explanation,
        Splits(train, train, train, test, {}),
        decision,
        threshold=0.5,
        dataset=DatasetLineage(
            "bbb222",
            "file:///snap/bbb222",
            "delays.csv",
            2100,
            {"weather": JoinedDataset("ccc333", "file:///snap/ccc333", "weather.csv")},
        ),
        training=TrainingRecord(
            mode="full", feedback_digest="ddd444", feedback_snapshot="file:///snap/ddd444", feedback_rows=300
        ),
        reason="manual",
        previous=previous,
        seed=3,
        created_at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def made(facts: card.CardFacts) -> card.ModelCard:
    return card.build(facts)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables = 0
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"h1", "h2", "h3"}:
            self._in = tag
        self.tables += tag == "table"

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self.headings.append(data)


def test_every_section_is_present_in_order_in_both_renderings(made: card.ModelCard) -> None:
    assert card.section_titles(made) == list(card.SECTIONS)
    markdown = card.to_markdown(made)
    for title in card.SECTIONS:
        assert f"\n## {title}\n" in markdown
    page = _Page()
    page.feed(card.to_html(made))
    assert page.headings == list(card.SECTIONS)
    assert page.tables >= 10


def test_intervals_contain_the_point_estimate(facts: card.CardFacts, made: card.ModelCard) -> None:
    metrics = next(s for s in made.sections if s.title == "Test metrics").tables[0]
    assert metrics.rows[0][0] == "ROC AUC"  # the gate metric first
    for row in metrics.rows:
        value = float(row[1])
        low, high = (float(x) for x in row[2].split(" to "))
        assert low <= value <= high, row
    y = facts.slices  # the test rows' slices add up to the bootstrap's rows
    assert int(y["rows"].sum()) == facts.intervals.rows == 600
    auc = next(m for m in facts.intervals.metrics if m.metric == "roc_auc")
    assert metrics.rows[0][1] == f"{auc.value:.4f}" and auc.low < auc.value < auc.high
    assert "200 resamples" in metrics.note and "seed 3" in metrics.note
    assert f"ROC AUC {auc.value:.4f} ({auc.low:.4f} to {auc.high:.4f})" in made.summary


def test_bootstrap_is_seeded_bounded_and_centred_on_the_score() -> None:
    y = RNG.integers(0, 2, 400).astype(float)
    p = np.clip(0.5 * y + RNG.random(400) * 0.5, 0, 1)
    a = card.bootstrap(y, p, "binary", 0.5, resamples=50, seed=1)
    b = card.bootstrap(y, p, "binary", 0.5, resamples=50, seed=1)
    assert a == b and a.resamples == 50
    point = score(y, p, "binary", 0.5)
    assert {m.metric: m.value for m in a.metrics} == point
    quick = card.bootstrap(y, p, "binary", 0.5, resamples=10_000, seed=1, budget_s=0.0)
    assert quick.resamples == 20  # the floor, then the budget stops it


def test_sections_say_what_the_version_learned_and_cannot_know(made: card.ModelCard) -> None:
    markdown = card.to_markdown(made)
    assert "Planning spare crews a day ahead; not for refunds." in markdown
    assert "bbb222" in markdown and "ccc333" in markdown and "ddd444" in markdown  # snapshot, join, feedback
    assert "Features added: wind; removed: visibility." in markdown
    assert "flywheel data diff delays/1 delays/2 --problem delays" in markdown
    assert "Expected calibration error" in markdown
    assert "| carrier | 4 |" in markdown  # the vocabulary's size
    wind = re.search(r"\| wind \| ([0-9.]+)% \|", markdown)  # about 30% missing in training
    assert wind is not None and 25 < float(wind.group(1)) < 35
    assert "| distance |" not in markdown.split("## Known limitations")[1]  # never missing
    assert "demographic parity difference" in markdown and "### By carrier" in markdown
    assert "Approvals: none recorded." in markdown
    assert "champion v1" in markdown  # the gate's reason


def test_html_is_self_contained_without_markdown_or_reprs(made: card.ModelCard) -> None:
    page = card.to_html(made)
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert "**" not in page and "{'" not in page and "|---|" not in page and "### " not in page
    assert "<script" not in page and "<link" not in page  # nothing fetched when it opens


def test_a_first_version_without_fairness_or_intended_use_says_so(facts: card.CardFacts) -> None:
    bare = replace(facts, previous=None, fairness=[], intended_use="", version="1")
    sections = {s.title: s for s in card.build(bare).sections}
    assert sections["Data compared with the previous champion"].paragraphs == [
        "No previous champion: this is the first version of delays to be judged."
    ]
    assert "not assessed" in sections["Fairness"].paragraphs[0]
    assert sections["Intended use"].paragraphs[0].startswith("Not stated")
    regression = card.calibration(np.array([1.0, 2.0]), np.array([1.5, 2.5]), "regression")
    assert regression.error is None and "Not applicable" in regression.note


def test_the_approvals_section_tells_who_decided_and_how_the_rollout_went() -> None:
    from flywheel.contracts.model_version import Rollback
    from flywheel.contracts.rollout import Approval

    approvals = [
        Approval("promotion to champion", "approved", "ana", "2026-12-01T10:00:00+00:00", "looks right")
    ]
    steps = [
        {
            "step": 1,
            "stage": "shadow",
            "fraction": 0.0,
            "held_s": 120.0,
            "held": True,
            "reason": "every guardrail held",
        },
        {
            "step": 2,
            "stage": "canary",
            "fraction": 0.1,
            "held_s": 31.0,
            "held": False,
            "reason": "error rate 4%",
        },
    ]
    rollout = {"result": "rolled-back", "reason": "step 2 (canary): error rate 4%", "steps": steps}
    back = Rollback("live errors", "2026-12-01T11:00:00+00:00", "3", "bo")
    section = card.approvals_section(approvals, rollout, back)
    assert section.title == card.APPROVALS_TITLE
    (given, went) = section.tables
    assert given.rows == [
        ["promotion to champion", "approved", "ana", "2026-12-01T10:00:00+00:00", "looks right"]
    ]
    assert went.rows[1] == ["2", "canary", "10%", "31.0", "broken", "error rate 4%"]
    text = " ".join(section.paragraphs)
    assert "Rollout: rolled-back. step 2 (canary): error rate 4%" in text
    assert "Rolled back to v3 at 2026-12-01T11:00:00+00:00 by bo: live errors." in text
    empty = card.approvals_section([], {}, None)
    assert "Approvals: none recorded" in empty.paragraphs[0] and not empty.tables
    # a card survives its JSON round trip (what a later rollout rewrites it from)
    whole = card.ModelCard("t", "s", [section, empty])
    assert card.card_from_dict(card.card_to_dict(whole)) == whole
