"""Problem specs: every shipped spec loads; a bad one fails naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.contracts.problem import PROBLEMS_DIR, ProblemSpec, SpecError, load_spec

SHIPPED = sorted(PROBLEMS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_specs_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.model_name


def test_flights_is_binary_with_a_rule_and_a_weather_join() -> None:
    spec = load_spec("flights")
    assert spec.task == "binary" and spec.target.rule == "arr_delay > 15"
    assert spec.target_source_columns() == ["arr_delay"]
    assert [j.name for j in spec.joins] == ["weather"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "name: x\nmodel_name: m\nsource: a.csv\ntask: binary\ntarget: {column: y}\ncolour: red\n",
            "colour: unknown key",
        ),
        ("name: x\nmodel_name: m\nsource: a.csv\ntask: ranking\ntarget: {column: y}\n", "task:"),
        (
            "name: x\nmodel_name: m\nsource: a.csv\ntask: regression\ntarget: {column: y}\nmetric: roc_auc\n",
            "does not fit task 'regression'",
        ),
        (
            "name: x\nmodel_name: m\nsource: a.csv\ntask: binary\ntarget: {column: y}\n"
            "features: [a]\nexclude: [b]\n",
            "not both",
        ),
        ("name: x\nmodel_name: m\ntask: binary\ntarget: {column: y}\n", "source: Field required"),
        (
            "name: x\nmodel_name: m\nsource: a.csv\ntask: binary\n"
            "target: {column: price, rule: \"price.to_csv('out.csv')\"}\n",
            "target.rule: attribute access `price.to_csv`",
        ),
        ("[1, 2]\n", "expected a mapping"),
        ("name: x\n  bad: [\n", "not valid YAML"),
    ],
)
def test_invalid_specs_name_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_unknown_spec_name_lists_known() -> None:
    with pytest.raises(SpecError, match=r"known: .*flights"):
        load_spec("no-such-problem")


def test_a_code_executing_rule_fails_at_load_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.yaml"
    rule = f"(price > 5000) | (@pd.io.common.os.system('touch {marker}') > 0)"
    path.write_text(
        "name: evil\nmodel_name: m\nsource: a.csv\ntask: binary\n"
        f"target:\n  column: price\n  rule: {json.dumps(rule)}\n"
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert f"{path}: target.rule: " in message
    assert "`@pd.io.common.os.system`" in message and "not allowed in a target rule" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("column", "rule", "expected"),
    [
        ("Class", "Class == 'bad'", ["Class"]),
        ("status", "status in ['late', 'cancelled']", ["status"]),
        ("arr_delay", "`arr_delay` > 15 and notnull(dep_time)", ["arr_delay", "dep_time"]),
    ],
)
def test_target_source_columns_come_from_the_parsed_rule(column: str, rule: str, expected: list[str]) -> None:
    spec = ProblemSpec.model_validate(
        {
            "name": "x",
            "model_name": "m",
            "source": "a.csv",
            "task": "binary",
            "target": {"column": column, "rule": rule},
        }
    )
    assert spec.target_source_columns() == expected
