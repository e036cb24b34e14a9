"""The rule language: code is rejected before anything runs; valid rules agree with pandas on clean data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts.expression import MAX_LENGTH, ExpressionError, parse


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "price": [100, 6000, 5000, 7000, 326],
            "carat": [0.5, 1.5, 2.0, 1.0, 0.23],
            "cut": pd.Series(["Fair", "Ideal", "Premium", "Good", "Ideal"], dtype="str"),
            "arr delay": [1.0, 20.0, 15.0, 16.0, -3.0],
            "flag": [True, False, True, False, True],
        }
    )


def _payloads(tmp_path: Path) -> list[tuple[str, str]]:
    """(rule, the part the message must name); each would touch or write a file under tmp_path if run."""
    marker = tmp_path / "marker"
    return [
        (f"(price > 5000) | (@pd.io.common.os.system('touch {marker}') > 0)", "@pd.io.common.os.system"),
        (f"price.to_csv('{marker}')", "attribute access `price.to_csv`"),
        (f"__import__('os').system('touch {marker}')", "attribute access `__import__('os').system`"),
        ("__import__('os')", "`__import__('os')`"),
        ("().__class__.__bases__", "attribute access `().__class__.__bases__`"),
        ("@pd", "`@pd`"),
        (f"open('{marker}', 'w')", "the call `open("),
        (f"(lambda: open('{marker}', 'w'))()", "lambda `lambda: open("),
        ("f'{price}' == 'x'", "f-string `f'{price}'`"),
        ("[p for p in price]", "comprehension `[p for p in price]`"),
        ("(price := 1) > 0", "assignment expression (:=) `price := 1`"),
        ("price[0] > 1", "subscript `price[0]`"),
        ("isnull(x=price)", "keyword argument `x=price`"),
        ("isnull(*price)", "starred argument `*price`"),
        ("cut in {'Ideal'}", "after in / not in"),
        ("{'a': price}", "dict literal"),
        ("price if flag else carat", "conditional expression"),
        ("price is None", "`is` in `price is None`"),
        ("price ^ carat", "operator `^`"),
        ("10**10**10", "the exponent `10**10`"),
        ("price ** 1e6", "the exponent `1e6`"),
        ("'a' * 10", "text `'a'`"),
        ("price in [abs(price)]", "not `abs(price)`"),
    ]


def test_code_is_rejected_naming_the_part_and_runs_nothing(tmp_path: Path) -> None:
    for rule, named in _payloads(tmp_path):
        with pytest.raises(ExpressionError) as err:
            parse(rule)
        assert named in str(err.value), (rule, str(err.value))
    assert list(tmp_path.iterdir()) == []


def test_the_allowed_forms_are_listed_in_the_message() -> None:
    with pytest.raises(ExpressionError, match=r"allowed: column names .* isnull\(\)/notnull\(\)"):
        parse("pd.io.common.os.system('x')", what="target rule")
    with pytest.raises(ExpressionError, match="not allowed in a target rule"):
        parse("pd.io", what="target rule")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("x" * 1_000_000, f"at most {MAX_LENGTH:,}"),
        ("abs(" * 60 + "x" + ")" * 60, "nested too deeply"),
        ("-" * 500 + "x", "nested too deeply"),
        (" | ".join(f"(c{i} > 1)" for i in range(60)), "nested too deeply"),
        (" or ".join(f"c{i} > 1" for i in range(120)), "too large"),
        ("x in [" + ", ".join(str(i) for i in range(300)) + "]", "at most 256"),
        ("x > " + "9" * 400, "too large"),
        ("", "empty"),
        ("`a` > 1 and `b", "unclosed backtick"),
        ("price >", "not a valid expression"),
        ("x == None", r"use isnull\(x\)"),
        ("x in [1, 'a']", "mixes numbers and text"),
        ("isnull(a, b)", "exactly one argument"),
    ],
)
def test_resource_and_syntax_limits(rule: str, expected: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match=expected):
        parse(rule)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "rule",
    [
        "price > 5000",
        "(price > 5000) | (cut == 'Ideal')",
        "price > 5000 and cut != 'Fair'",
        "(price > 5000) & ~(cut == 'Good')",
        "not (price > 5000) or flag",
        "cut in ['Ideal', 'Premium']",
        "cut not in ['Ideal']",
        "price in [100, 7000]",
        "price * 2 + carat ** 2 - 3 / carat",
        "price // 7 % 5",
        "-price + +carat",
        "1 < carat < 2",
        "0.4 <= carat < 2 <= price / 1000",
        "cut < 'H'",
        "`arr delay` > 15",
        "`arr delay` * 2 >= price / 100",
        "abs(carat - 1.2) < 0.5",
        "flag & (price > 0)",
        "flag == True",
    ],
)
def test_valid_rules_agree_with_pandas(frame: pd.DataFrame, rule: str) -> None:
    ours = parse(rule).evaluate(frame)
    theirs = frame.eval(rule)  # trusted text, written here: the reference semantics on clean data
    assert ours.index.equals(frame.index)
    np.testing.assert_allclose(ours.to_numpy(dtype="float64"), np.asarray(theirs, dtype="float64"))


def test_results_are_typed(frame: pd.DataFrame) -> None:
    assert str(parse("price > 1").evaluate(frame).dtype) == "boolean"
    assert parse("price * 2").evaluate(frame).dtype == np.float64
    assert parse("True").evaluate(frame).tolist() == [True] * len(frame)
    assert parse("2 ** 3").evaluate(frame).tolist() == [8.0] * len(frame)


def test_columns_exclude_string_literals_and_list_items() -> None:
    assert parse("Class == 'bad'").columns == frozenset({"Class"})
    assert parse("status in ['late', 'cancelled']").columns == frozenset({"status"})
    assert parse("`arr delay` > 15 and isnull(dep_time)").columns == frozenset({"arr delay", "dep_time"})
    assert parse("`arr delay` > 15 and isnull(dep_time)").value_columns == frozenset({"arr delay"})


def test_backticks_inside_strings_are_text_not_names() -> None:
    expression = parse("note == 'a `b` c'")
    assert expression.columns == frozenset({"note"})
    frame = pd.DataFrame({"note": ["a `b` c", "x"]})
    assert expression.evaluate(frame).tolist() == [True, False]


def test_missing_values_follow_three_valued_logic() -> None:
    frame = pd.DataFrame(
        {"a": [np.nan, np.nan, 2.0, 0.0], "b": [5.0, 0.0, np.nan, np.nan], "s": ["x", None, "y", None]}
    )

    def values(rule: str) -> list[object]:
        return [None if v is pd.NA else v for v in parse(rule).evaluate(frame).tolist()]

    assert values("a != 5") == [None, None, True, True]  # pandas says True for NaN != 5
    assert values("(a > 1) | (b > 1)") == [True, None, True, None]
    assert values("(a > 1) & (b > 1)") == [None, False, None, False]
    assert values("isnull(a)") == [True, True, False, False]
    assert values("notna(s) & (s == 'x')") == [True, False, False, False]
    assert values("s in ['x', 'y']") == [True, None, True, None]
    assert values("isnull(s) | (b > 1)") == [True, True, None, True]
    assert np.isnan(parse("a + b").evaluate(frame)).all()


def test_string_compared_with_number_is_an_error_naming_both() -> None:
    frame = pd.DataFrame({"Class": [1, 2], "cut": ["Fair", "Ideal"]})
    with pytest.raises(ExpressionError, match=r"cannot compare `Class` \(numbers\) with `'bad'` \(text\)"):
        parse("Class == 'bad'").evaluate(frame)
    with pytest.raises(ExpressionError, match=r"`cut` gives text: `\+`"):
        parse("cut + 1 > 2").evaluate(frame)
    with pytest.raises(ExpressionError, match="cannot look for text"):
        parse("Class in ['a']").evaluate(frame)


def test_precedence_slip_is_explained() -> None:
    frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
    with pytest.raises(ExpressionError, match=r"put comparisons in parentheses"):
        parse("a > 1 & b < 2").evaluate(frame)


def test_missing_and_unreadable_columns_are_named() -> None:
    with pytest.raises(ExpressionError, match="reads column\\(s\\) `nope`"):
        parse("nope > 1").evaluate(pd.DataFrame({"a": [1]}))
    times = pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])})
    with pytest.raises(ExpressionError, match="the column `t` holds datetime64"):
        parse("t > 1").evaluate(times)


def test_other_column_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "c": pd.Categorical(["a", "b", None]),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "o": pd.Series([True, None, False], dtype=object),
            "e": pd.Series([None, None, None], dtype=object),
        }
    )
    assert parse("c == 'a'").evaluate(frame).tolist() == [True, False, pd.NA]
    assert parse("n > 1").evaluate(frame).tolist() == [False, pd.NA, True]
    assert parse("o").evaluate(frame).tolist() == [True, pd.NA, False]
    assert parse("e > 1").evaluate(frame).isna().all()
    assert parse("isnull(e)").evaluate(frame).all()


def test_evaluation_is_vectorised() -> None:
    rows = 1_000_000
    frame = pd.DataFrame(
        {"x": np.arange(rows, dtype="float64"), "s": np.where(np.arange(rows) % 2 == 0, "a", "b")}
    )
    started = time.perf_counter()
    result = parse("(x > 10) & (s in ['a']) | isnull(x)").evaluate(frame)
    assert time.perf_counter() - started < 5.0
    assert int(result.sum()) == (rows - 12) // 2
