"""Problem specs: every shipped spec loads; a bad one fails naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.problem import PROBLEMS_DIR, SpecError, load_spec

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
