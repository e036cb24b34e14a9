"""Features: the label rule, the event time, and the point-in-time weather join."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.problem import ProblemSpec, load_spec
from steps.data.features import (
    EVENT_TIME,
    FeatureError,
    build_dataset,
    event_time,
    make_label,
    point_in_time_join,
)

SPEC = load_spec("flights")
WEATHER = SPEC.joins[0]


def test_label_is_missing_for_cancelled_flights() -> None:
    frame = pd.DataFrame({"arr_delay": [30.0, 5.0, np.nan, 16.0, 15.0]})
    label = make_label(frame, SPEC)
    assert label.tolist()[:2] == [1.0, 0.0]
    assert np.isnan(label.iloc[2])
    assert label.tolist()[3:] == [1.0, 0.0]


def test_label_from_a_string_literal_rule() -> None:
    """`Class == 'bad'` reads only `Class`: the text literal is a value, not a column the data must have."""
    spec = ProblemSpec.model_validate(
        {
            "name": "credit",
            "model_name": "credit",
            "source": "credit.csv",
            "task": "binary",
            "target": {"column": "Class", "rule": "Class == 'bad'"},
        }
    )
    frame = pd.DataFrame({"Class": ["good", "bad", None, "bad"], "amount": [1.0, 2.0, 3.0, 4.0]})
    label = make_label(frame, spec)
    assert label.name == "label"
    assert label.tolist()[:2] == [0.0, 1.0]
    assert np.isnan(label.iloc[2])
    assert label.iloc[3] == 1.0


def test_label_rule_null_check_and_numeric_rule() -> None:
    """A column read only in isnull() may be missing (that is what it tests); numeric rules stay numeric."""
    base = {"name": "x", "model_name": "m", "source": "a.csv"}
    cancelled = ProblemSpec.model_validate(
        base | {"task": "binary", "target": {"column": "dep_time", "rule": "isnull(dep_time)"}}
    )
    frame = pd.DataFrame({"dep_time": [517.0, np.nan], "price": [10, 20]})
    assert make_label(frame, cancelled).tolist() == [0.0, 1.0]
    doubled = ProblemSpec.model_validate(
        base | {"task": "regression", "metric": "rmse", "target": {"column": "price", "rule": "price * 2"}}
    )
    assert make_label(frame, doubled).tolist() == [20.0, 40.0]


def test_label_rule_comparing_text_with_a_number_fails_clearly() -> None:
    spec = ProblemSpec.model_validate(
        {
            "name": "x",
            "model_name": "m",
            "source": "a.csv",
            "task": "binary",
            "target": {"column": "Class", "rule": "Class == 'bad'"},
        }
    )
    with pytest.raises(FeatureError, match=r"cannot compare `Class` \(numbers\) with `'bad'` \(text\)"):
        make_label(pd.DataFrame({"Class": [0, 1]}), spec)


def test_event_time_is_scheduled_departure_in_utc(flights: pd.DataFrame) -> None:
    first = flights.iloc[[0]]  # UA 1545 on 2013-01-01, scheduled 05:15 New York time
    stamp = event_time(first, SPEC.time).iloc[0]  # type: ignore[arg-type]
    assert stamp == pd.Timestamp("2013-01-01 10:15", tz="UTC")
    assert stamp.tz_convert("America/New_York").strftime("%H:%M") == "05:15"


def test_no_weather_observed_after_departure_synthetic() -> None:
    """A distinctive observation one minute after departure must never reach the row."""
    flights = pd.DataFrame(
        {
            "origin": ["JFK", "JFK", "EWR"],
            EVENT_TIME: pd.to_datetime(
                ["2013-03-01 12:30", "2013-03-01 13:00", "2013-03-01 12:30"], utc=True
            ),
        }
    )
    cols = WEATHER.columns
    weather = pd.DataFrame(
        {
            "origin": ["JFK", "JFK", "JFK", "EWR"],
            "time_hour": [
                "2013-03-01T12:00:00Z",
                "2013-03-01T12:31:00Z",
                "2013-03-01T13:00:00Z",
                "2013-03-01T08:00:00Z",
            ],
            **{c: [1.0, 999.0, 2.0, 3.0] for c in cols},
        }
    )
    joined = point_in_time_join(flights, weather, WEATHER)
    assert joined["temp"].tolist()[:2] == [1.0, 2.0]  # 12:30 gets 12:00, not 12:31; 13:00 gets 13:00
    assert np.isnan(joined["temp"].iloc[2])  # EWR's last observation is 4.5 h old: beyond the 3 h tolerance
    assert 999.0 not in joined["temp"].tolist()


def test_no_weather_observed_after_departure_real(flights: pd.DataFrame, weather: pd.DataFrame) -> None:
    """On all 336,776 real flights: every joined observation is at or before the scheduled departure."""
    frame = flights.assign(**{EVENT_TIME: event_time(flights, SPEC.time)})  # type: ignore[arg-type]
    joined = point_in_time_join(frame, weather, WEATHER)
    observed = joined["_weather_observed_at"]
    matched = observed.notna()
    assert matched.mean() > 0.99
    assert (observed[matched] <= joined.loc[matched, EVENT_TIME]).all()
    assert ((joined.loc[matched, EVENT_TIME] - observed[matched]) <= pd.Timedelta("3h")).all()
    assert joined.index.equals(frame.index)  # row order and identity preserved


def test_build_dataset_drops_unlabelled_and_makes_categoricals(
    flights_sample: pd.DataFrame, weather: pd.DataFrame
) -> None:
    ds = build_dataset(flights_sample, SPEC, {"weather": weather})
    assert ds.dropped_unlabelled == int(flights_sample["arr_delay"].isna().sum())
    assert len(ds.frame) == flights_sample["arr_delay"].notna().sum()
    assert isinstance(ds.X["carrier"].dtype, pd.CategoricalDtype)
    kinds = {c.name: c.kind for c in ds.schema.columns}
    assert (
        kinds["carrier"] == "categorical" and kinds["temp"] == "numeric" and kinds["dayofweek"] == "numeric"
    )
    assert "arr_delay" not in ds.schema.names and "dep_delay" not in ds.schema.names
    assert set(ds.y.unique()) == {0, 1}


def test_a_feature_the_target_reads_is_rejected(flights_sample: pd.DataFrame, weather: pd.DataFrame) -> None:
    leaky = SPEC.model_copy(update={"features": [*SPEC.features, "arr_delay"]})  # type: ignore[misc]
    with pytest.raises(FeatureError, match="leak"):
        build_dataset(flights_sample, leaky, {"weather": weather})


def _spec(task: str, **target: object) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {
            "name": "own",
            "model_name": "own",
            "source": "own.csv",
            "task": task,
            "target": {"column": "y", **target},
        }
    )


@pytest.mark.parametrize(
    ("values", "target", "classes", "expected"),
    [
        (["good", "bad", None, "bad"], {"positive": "bad"}, ["good", "bad"], [0.0, 1.0, None, 1.0]),
        (["yes", "no", "yes", "no"], {"positive": "yes"}, ["no", "yes"], [1.0, 0.0, 1.0, 0.0]),
        ([True, False, None, True], {}, ["false", "true"], [1.0, 0.0, None, 1.0]),
        (["True", "False", "true", "FALSE"], {}, ["false", "true"], [1.0, 0.0, 1.0, 0.0]),
        ([0, 1, 1, 0], {}, ["0", "1"], [0.0, 1.0, 1.0, 0.0]),
        (["1", "0", "1.0", None], {}, ["0", "1"], [1.0, 0.0, 1.0, None]),
        ([2, 7, 7, 2], {"positive": 7}, ["2", "7"], [0.0, 1.0, 1.0, 0.0]),
    ],
)
def test_binary_labels_of_any_two_values(
    values: list[object], target: dict[str, object], classes: list[str], expected: list[float | None]
) -> None:
    from steps.data.features import label_classes

    spec = _spec("binary", **target)
    frame = pd.DataFrame({"y": values, "x": range(len(values))})
    assert label_classes(frame, spec) == classes
    got = make_label(frame, spec).tolist()
    assert [None if np.isnan(v) else v for v in got] == expected


def test_binary_label_errors_name_the_values_and_the_key() -> None:
    frame = pd.DataFrame({"y": ["good", "bad", "good"]})
    with pytest.raises(FeatureError, match=r"holds \['bad', 'good'\].*set target.positive"):
        make_label(frame, _spec("binary"))
    with pytest.raises(FeatureError, match=r"target.positive 'fine' is not a value.*\['bad', 'good'\]"):
        make_label(frame, _spec("binary", positive="fine"))
    with pytest.raises(FeatureError, match="use task: multiclass"):
        make_label(pd.DataFrame({"y": ["a", "b", "c"]}), _spec("binary", positive="a"))


def test_multiclass_labels_are_class_indices_in_one_order() -> None:
    from steps.data.features import label_classes

    frame = pd.DataFrame({"y": ["setosa", "virginica", None, "versicolor", "setosa"]})
    spec = _spec("multiclass")
    assert label_classes(frame, spec) == ["setosa", "versicolor", "virginica"]
    got = make_label(frame, spec).tolist()
    assert got[:2] == [0.0, 2.0] and np.isnan(got[2]) and got[3:] == [1.0, 0.0]
    # a later frame with only some classes keeps the model's order when given it
    later = pd.DataFrame({"y": ["virginica", "versicolor"]})
    assert make_label(later, spec, ["setosa", "versicolor", "virginica"]).tolist() == [2.0, 1.0]
    numbers = pd.DataFrame({"y": [10, 2, 2, 33]})
    assert label_classes(numbers, spec) == ["2", "10", "33"]  # numeric order, not text order
    listed = _spec("multiclass", classes=["c", "b", "a"])
    assert make_label(pd.DataFrame({"y": ["a", "c"]}), listed).tolist() == [2.0, 0.0]


def test_a_regression_label_of_text_says_so() -> None:
    spec = _spec("regression")
    with pytest.raises(FeatureError, match=r"holds text such as \['cheap'\]"):
        make_label(pd.DataFrame({"y": ["1.5", "cheap", None]}), spec)
    assert make_label(pd.DataFrame({"y": ["1.5", "2"]}), spec).tolist() == [1.5, 2.0]


def test_yaml_yes_is_text_in_a_spec(tmp_path: object) -> None:
    from pathlib import Path

    from flywheel.contracts.problem import load_spec as load

    path = Path(str(tmp_path)) / "churn.yaml"
    path.write_text(
        "name: churn\nmodel_name: churn\nsource: a.csv\ntask: binary\ntarget: {column: y, positive: yes}\n"
    )
    assert load(path).target.positive == "yes"
