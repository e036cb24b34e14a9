"""A small, safe expression language for rules in problem specs (``arr_delay > 15``).

A rule comes from a YAML file, so it is untrusted text. ``DataFrame.eval`` would run it as code (``@`` names
reach any Python object, attribute access reaches methods that write files or start processes), so rules are
parsed here with :mod:`ast` and every node is checked against a short list of what a rule may contain; the
tree is then evaluated by this module's own code, vectorised with numpy. Nothing the user writes is ever
compiled or executed.

The language: column names (bare identifiers, or any name in backticks: ```arr delay` > 15``), numbers,
``'text'``, ``True``/``False``; comparisons (``== != < <= > >=``, chained ``1 < x < 5``); ``in`` / ``not in``
a list of literals; arithmetic (``+ - * / // % **``, unary ``-``/``+``); ``and``/``or``/``not`` and their
element-wise spellings ``&``/``|``/``~``; and the functions ``isnull``/``isna``, ``notnull``/``notna`` and
``abs``. Anything else is rejected when the rule is parsed, with a message naming the offending part.

Missing values follow SQL's three-valued logic, so a missing value never silently becomes an answer:
a comparison or arithmetic with a missing value is missing (pandas would say ``NaN != 5`` is True);
``missing or True`` is True and ``missing and False`` is False, since the answer is the same whatever the
value is; ``isnull(x)``/``notnull(x)`` are never missing. Arithmetic is done in float64 (an integer column
becomes floats; ``0 / 0`` is missing, ``1 / 0`` is infinite).

Types are checked, not coerced: comparing text with a number (``Class == 'bad'`` on a numeric column),
arithmetic on text, or ``&`` between numbers is an :class:`ExpressionError`, never a silent all-False.
Columns of times or of mixed values cannot be read by a rule.

Resources are bounded so a rule cannot make the evaluator burn CPU or memory: its length, its number of
nodes and its nesting depth are capped, list literals are capped, and a constant ``**`` exponent is small.
All arithmetic is float64, so no operation builds a huge Python integer or string.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

MAX_LENGTH = 2_000
MAX_NODES = 200
MAX_DEPTH = 48
MAX_LIST_ITEMS = 256
MAX_EXPONENT = 100.0

ALLOWED = (
    "allowed: column names (other names in `backticks`), numbers, 'text', True/False, comparisons, "
    "in/not in [a list], arithmetic (+ - * / // % **), and/or/not (& | ~), isnull()/notnull()/abs()"
)
NULL_CHECKS = {"isnull": True, "isna": True, "notnull": False, "notna": False}
FUNCTIONS = frozenset({*NULL_CHECKS, "abs"})

_ARITHMETIC: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", np.add),
    ast.Sub: ("-", np.subtract),
    ast.Mult: ("*", np.multiply),
    ast.Div: ("/", np.true_divide),
    ast.FloorDiv: ("//", np.floor_divide),
    ast.Mod: ("%", np.mod),
    ast.Pow: ("**", np.power),
}
_LOGICAL: dict[type[ast.operator], str] = {ast.BitAnd: "&", ast.BitOr: "|"}
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_MEMBERSHIP = (ast.In, ast.NotIn)
_REJECTED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Dict: "dict literal",
    ast.Set: "set literal",
    ast.IfExp: "conditional expression",
    ast.Starred: "starred expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}

Kind = Literal["number", "bool", "text", "any"]
_KIND_NAMES = {"number": "numbers", "bool": "true/false", "text": "text", "any": "only missing values"}


class ExpressionError(ValueError):
    """A rule that is not allowed, cannot be parsed, or cannot be evaluated on the data given."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked rule: the column names it reads, and a vectorised evaluation over a frame.

    ``value_columns`` are the columns read other than inside ``isnull()``/``notnull()``: a row where one of
    them is missing has a missing value somewhere in the computation.
    """

    text: str
    what: str
    columns: frozenset[str]
    value_columns: frozenset[str]
    _tree: ast.Expression = field(repr=False, compare=False)
    _source: str = field(repr=False, compare=False)
    _names: Mapping[str, str] = field(repr=False, compare=False)
    _lists: Mapping[int, _ListLiteral] = field(repr=False, compare=False)

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """The rule's value for each row of ``frame``, on its index.

        A boolean rule gives the nullable ``boolean`` dtype (``<NA>`` where the answer is unknown), a numeric
        one float64 (NaN where missing), a text one the ``string`` dtype.
        """
        absent = sorted(c for c in self.columns if c not in frame.columns)
        if absent:
            shown = ", ".join(f"`{c}`" for c in absent)
            raise ExpressionError(f"the {self.what} reads column(s) {shown} that the data does not have")
        evaluator = _Evaluator(self, frame)
        try:
            with np.errstate(all="ignore"):
                value = evaluator.eval(self._tree.body)
        except (TypeError, ValueError, ArithmeticError) as exc:
            if isinstance(exc, ExpressionError):
                raise
            raise ExpressionError(
                f"the {self.what} `{_shorten(self.text)}` could not be evaluated: {exc}"
            ) from None
        return _to_series(value, frame.index)

    def show(self, node: ast.AST) -> str:
        """The source text of a node as the user wrote it (backtick names restored), shortened."""
        return _show(self._source, self._names, node)


def parse(text: str, *, what: str = "rule") -> Expression:
    """Parse and check ``text``; :class:`ExpressionError` names the offending part of a rule not allowed.

    Parsing is cached (a parsed expression is immutable), so callers may parse the same rule repeatedly.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"a {what} must be text, got {type(text).__name__}")
    return _parse(text, what)


@functools.lru_cache(maxsize=256)
def _parse(text: str, what: str) -> Expression:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"the {what} is {len(text):,} characters long; at most {MAX_LENGTH:,} are allowed"
        )
    if not text.strip():
        raise ExpressionError(f"the {what} is empty")
    source, names = _replace_backticks(text, what)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" (at column {exc.offset})" if exc.offset and "\n" not in source.strip() else ""
        raise ExpressionError(
            f"the {what} `{_shorten(text)}` is not a valid expression: {exc.msg}{where}"
        ) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"the {what} `{_shorten(text)}` is not a valid expression") from None
    source = source.strip()
    _check_size(tree, what, text)
    checker = _Checker(source, names, what)
    checker.check(tree.body, in_null_check=False)
    return Expression(
        text=text,
        what=what,
        columns=frozenset(checker.columns),
        value_columns=frozenset(checker.value_columns),
        _tree=tree,
        _source=source,
        _names=names,
        _lists=checker.lists,
    )


def _replace_backticks(text: str, what: str) -> tuple[str, dict[str, str]]:
    """Backtick names become placeholder identifiers; ``@`` (a pandas local variable) is rejected here.

    A small scanner rather than a regex, so backticks and ``@`` inside string literals are left alone.
    Placeholders use a prefix that does not occur in the text, so they cannot clash with a real name.
    """
    prefix = "_bt"
    while prefix in text:
        prefix += "_"
    out: list[str] = []
    names: dict[str, str] = {}
    by_name: dict[str, str] = {}
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                out.append(text[i : i + 2])
                i += 2
            elif text.startswith(quote, i):
                out.append(quote)
                i += len(quote)
                quote = None
            else:
                out.append(ch)
                i += 1
            continue
        if ch in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else ch
            out.append(quote)
            i += len(quote)
        elif ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ExpressionError(
                    f"the {what} `{_shorten(text)}` has an unclosed backtick at column {i + 1}"
                )
            name = text[i + 1 : end]
            if not name or "\n" in name:
                raise ExpressionError(
                    f"the {what} `{_shorten(text)}` has an empty backtick name at column {i + 1}"
                )
            if name not in by_name:
                by_name[name] = f"{prefix}{len(by_name)}"
                names[by_name[name]] = name
            out.append(f" {by_name[name]} ")
            i = end + 1
        elif ch == "@":
            match = re.match(r"@[\w.]*", text[i:])
            shown = match.group() if match else "@"
            raise ExpressionError(
                f"`{_shorten(shown)}` (an @ variable or operator) is not allowed in a {what}; {ALLOWED}"
            )
        else:
            out.append(ch)
            i += 1
    return "".join(out), names


def _check_size(tree: ast.Expression, what: str, text: str) -> None:
    """Node count and depth, measured without recursion (the tree may be deeper than Python's stack)."""
    nodes = 0
    stack: list[tuple[ast.AST, int, bool]] = [(tree.body, 1, False)]
    while stack:
        node, depth, in_list = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"the {what} `{_shorten(text)}` is nested too deeply (more than {MAX_DEPTH} levels)"
            )
        if isinstance(node, ast.List | ast.Tuple) and len(node.elts) > MAX_LIST_ITEMS:
            raise ExpressionError(
                f"a list in the {what} has {len(node.elts):,} items; at most {MAX_LIST_ITEMS} are allowed"
            )
        if isinstance(node, ast.expr) and not in_list:
            nodes += 1
            if nodes > MAX_NODES:
                raise ExpressionError(f"the {what} is too large (more than {MAX_NODES} parts)")
        is_list = isinstance(node, ast.List | ast.Tuple)
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1, in_list or is_list))


class _Checker:
    """Walks a parsed rule once: rejects what is not allowed and collects the columns it reads."""

    def __init__(self, source: str, names: Mapping[str, str], what: str) -> None:
        self.source = source
        self.names = names
        self.what = what
        self.columns: set[str] = set()
        self.value_columns: set[str] = set()
        self.lists: dict[int, _ListLiteral] = {}

    def show(self, node: ast.AST) -> str:
        return _show(self.source, self.names, node)

    def reject(self, description: str, node: ast.AST, hint: str = "") -> ExpressionError:
        return ExpressionError(
            f"{description} `{self.show(node)}` is not allowed in a {self.what}{hint}; {ALLOWED}"
        )

    def check(self, node: ast.AST, *, in_null_check: bool) -> None:
        if isinstance(node, ast.Name):
            name = self.names.get(node.id, node.id)
            self.columns.add(name)
            if not in_null_check:
                self.value_columns.add(name)
        elif isinstance(node, ast.Constant):
            _literal(node, self)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._operand(value, node, in_null_check=in_null_check)
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub | ast.UAdd):
                self._no_text(node.operand, node)
            self._operand(node.operand, node, in_null_check=in_null_check)
        elif isinstance(node, ast.BinOp):
            self._binop(node, in_null_check=in_null_check)
        elif isinstance(node, ast.Compare):
            self._compare(node, in_null_check=in_null_check)
        elif isinstance(node, ast.Call):
            self._call(node, in_null_check=in_null_check)
        elif isinstance(node, ast.List | ast.Tuple):
            raise self.reject("a list", node, " except after in / not in")
        else:
            description = _REJECTED.get(type(node), f"`{type(node).__name__}`")
            raise self.reject(description, node)

    def _operand(self, node: ast.AST, parent: ast.AST, *, in_null_check: bool) -> None:
        if isinstance(node, ast.List | ast.Tuple):
            raise self.reject("a list", node, " except after in / not in")
        self.check(node, in_null_check=in_null_check)

    def _no_text(self, node: ast.AST, parent: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            raise ExpressionError(
                f"text `{self.show(node)}` cannot take part in arithmetic in `{self.show(parent)}`"
            )

    def _binop(self, node: ast.BinOp, *, in_null_check: bool) -> None:
        op = type(node.op)
        if op not in _ARITHMETIC and op not in _LOGICAL:
            symbol = {ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@"}.get(
                op, op.__name__
            )
            raise self.reject(f"the operator `{symbol}` in", node)
        if op in _ARITHMETIC:
            self._no_text(node.left, node)
            self._no_text(node.right, node)
        self._operand(node.left, node, in_null_check=in_null_check)
        self._operand(node.right, node, in_null_check=in_null_check)
        if op is ast.Pow:
            self._exponent(node)

    def _exponent(self, node: ast.BinOp) -> None:
        """A constant exponent must be small: ``10 ** 10 ** 10`` is rejected before anything is computed."""
        reads = any(isinstance(n, ast.Name) for n in ast.walk(node.right))
        if reads:
            return  # float64 arrays: any exponent costs the same
        if not _is_number_literal(node.right):
            raise ExpressionError(
                f"the exponent `{self.show(node.right)}` in `{self.show(node)}` must be a number or read a "
                f"column (a computed constant exponent is not allowed in a {self.what})"
            )
        value = _literal_number(node.right, self)
        if not abs(value) <= MAX_EXPONENT:
            raise ExpressionError(
                f"the exponent `{self.show(node.right)}` in `{self.show(node)}` is too large: a constant "
                f"exponent in a {self.what} is at most {MAX_EXPONENT:g}"
            )

    def _compare(self, node: ast.Compare, *, in_null_check: bool) -> None:
        self._operand(node.left, node, in_null_check=in_null_check)
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, _MEMBERSHIP):
                if not isinstance(right, ast.List | ast.Tuple):
                    raise ExpressionError(
                        f"after in / not in a {self.what} needs a list of literals like ['a', 'b'], "
                        f"not `{self.show(right)}`"
                    )
                self.lists[id(right)] = _list_literal(right, self)
            elif type(op) in _COMPARE:
                for side in (node.left, right):
                    if isinstance(side, ast.Constant) and side.value is None:
                        raise ExpressionError(
                            f"`None` in `{self.show(node)}`: use isnull(x) / notnull(x) to test for missing "
                            f"values in a {self.what}"
                        )
                self._operand(right, node, in_null_check=in_null_check)
            else:
                symbol = "is not" if isinstance(op, ast.IsNot) else "is"
                raise self.reject(
                    f"`{symbol}` in", node, " (use isnull(x) / notnull(x) to test for missing values)"
                )

    def _call(self, node: ast.Call, *, in_null_check: bool) -> None:
        func = node.func
        if not isinstance(func, ast.Name):
            self.check(func, in_null_check=in_null_check)  # names a forbidden callee: attribute, lambda ...
            raise self.reject("calling", func)
        if func.id not in FUNCTIONS:
            raise self.reject(
                "the call", node, " (only isnull(), notnull(), isna(), notna() and abs() may be called)"
            )
        if node.keywords:
            keyword = node.keywords[0]
            raise self.reject("the keyword argument", keyword.value if keyword.arg is None else keyword)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.reject("the starred argument", arg)
        if len(node.args) != 1:
            raise ExpressionError(f"{func.id}() takes exactly one argument, not `{self.show(node)}`")
        if func.id == "abs":
            self._no_text(node.args[0], node)
        self._operand(node.args[0], node, in_null_check=in_null_check or func.id in NULL_CHECKS)


def _is_number_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _literal(node: ast.Constant, checker: _Checker) -> bool | float | str:
    """A literal's value: bools and text as they are, every number as a float (arithmetic is float64)."""
    value = node.value
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            raise ExpressionError(
                f"the number `{_shorten(str(value))}` is too large for a {checker.what}"
            ) from None
    if value is None:
        raise ExpressionError(f"`None` is not allowed in a {checker.what}: use isnull(x) / notnull(x)")
    description = {bytes: "a bytes literal", complex: "a complex number"}.get(type(value), "the literal")
    raise checker.reject(description, node)


def _literal_number(node: ast.AST, checker: _Checker) -> float:
    sign = 1.0
    if isinstance(node, ast.UnaryOp):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    assert isinstance(node, ast.Constant)
    value = _literal(node, checker)
    assert isinstance(value, float)
    return sign * value


@dataclass(frozen=True)
class _ListLiteral:
    values: tuple[Any, ...]
    kind: Kind


def _list_literal(node: ast.List | ast.Tuple, checker: _Checker) -> _ListLiteral:
    """The items after ``in``: literals of one kind (numbers, text, or true/false)."""
    values: list[Any] = []
    kinds: set[Kind] = set()
    for item in node.elts:
        if _is_number_literal(item):
            value: Any = _literal_number(item, checker)
        elif isinstance(item, ast.Constant):
            value = _literal(item, checker)
        else:
            raise ExpressionError(
                f"the list `{checker.show(node)}` in a {checker.what} may hold only literals, "
                f"not `{checker.show(item)}`"
            )
        values.append(value)
        kinds.add(_scalar_kind(value))
    if kinds == {"bool", "number"}:
        kinds = {"number"}
        values = [float(v) for v in values]
    if len(kinds) > 1:
        raise ExpressionError(f"the list `{checker.show(node)}` in a {checker.what} mixes numbers and text")
    return _ListLiteral(tuple(values), kinds.pop() if kinds else "any")


def _scalar_kind(value: Any) -> Kind:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, str):
        return "text"
    return "number"


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(source: str, names: Mapping[str, str], node: ast.AST) -> str:
    segment = ast.get_source_segment(source, node) or type(node).__name__
    if names:
        pattern = "|".join(re.escape(p) for p in sorted(names, key=len, reverse=True))
        segment = re.sub(rf"\b(?:{pattern})\b", lambda m: f"`{names[m.group()]}`", segment)
    return _shorten(segment)


@dataclass(frozen=True)
class _Value:
    """An intermediate result: a numpy array (one item per row) or a scalar, and where it is missing.

    Numbers are float64 with NaN for missing; true/false are bool with a mask; text is object with '' at
    missing places and a mask. ``any`` is a column with only missing values, usable as any kind.
    """

    kind: Kind
    data: Any
    missing: Any


def _number(data: Any) -> _Value:
    return _Value("number", data, np.isnan(data))


class _Evaluator:
    def __init__(self, expression: Expression, frame: pd.DataFrame) -> None:
        self.expression = expression
        self.frame = frame
        self.length = len(frame)
        self.loaded: dict[str, _Value] = {}

    def fail(self, message: str) -> ExpressionError:
        whole = f"`{_shorten(self.expression.text)}`"
        return ExpressionError(
            message if message.endswith(whole) else f"{message} in the {self.expression.what} {whole}"
        )

    def show(self, node: ast.AST) -> str:
        return self.expression.show(node)

    def eval(self, node: ast.AST) -> _Value:
        if isinstance(node, ast.Name):
            return self.column(self.expression._names.get(node.id, node.id))
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                return _Value("bool", value, False)
            if isinstance(value, str):
                return _Value("text", value, False)
            if isinstance(value, int | float):
                return _number(np.float64(value))
        if isinstance(node, ast.BoolOp):
            combine = _and if isinstance(node.op, ast.And) else _or
            word = "and" if isinstance(node.op, ast.And) else "or"
            result = self.boolean(node.values[0], word, node)
            for item in node.values[1:]:
                result = combine(result, self.boolean(item, word, node))
            return result
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            operand = self.eval(node.args[0])
            if node.func.id == "abs":
                return _number(np.abs(self.as_number(operand, node.args[0], "abs()", node).data))
            missing = operand.missing
            return _Value("bool", missing if NULL_CHECKS[node.func.id] else np.logical_not(missing), False)
        raise self.fail(f"`{self.show(node)}` cannot be evaluated")  # the checker rejects these first

    def column(self, name: str) -> _Value:
        if name not in self.loaded:
            self.loaded[name] = self.load(name)
        return self.loaded[name]

    def load(self, name: str) -> _Value:
        """A column as numbers, text or true/false; other columns (times, mixed values) are an error."""
        series = self.frame[name]
        if isinstance(series, pd.DataFrame):
            raise self.fail(f"the column `{name}` appears more than once in the data")
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        missing = series.isna().to_numpy(dtype=bool)
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype):
            return _Value("bool", series.to_numpy(dtype=bool, na_value=False), missing)
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
            return _number(series.to_numpy(dtype="float64", na_value=np.nan))
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
            if inferred == "empty":
                return _Value("any", np.zeros(self.length, dtype=bool), np.ones(self.length, dtype=bool))
            if inferred == "string":
                return _Value("text", series.to_numpy(dtype=object, na_value=""), missing)
            if inferred == "boolean":
                return _Value("bool", series.where(~missing, False).to_numpy(dtype=bool), missing)
            if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
                return _number(pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan))
        raise self.fail(
            f"the column `{name}` holds {inferred} values ({dtype}); a rule reads numbers, text and "
            "true/false"
        )

    def as_number(self, value: _Value, node: ast.AST, op: str, parent: ast.AST) -> _Value:
        if value.kind == "number":
            return value
        if value.kind == "bool":
            return _number(np.where(value.missing, np.nan, np.asarray(value.data, dtype="float64")))
        if value.kind == "any":
            return _number(np.full(self.length, np.nan))
        raise self.fail(f"`{self.show(node)}` gives text: `{op}` in `{self.show(parent)}` needs numbers")

    def boolean(self, node: ast.AST, op: str, parent: ast.AST) -> _Value:
        value = self.eval(node)
        if value.kind == "bool":
            return value
        if value.kind == "any":
            return _Value("bool", np.zeros(self.length, dtype=bool), np.ones(self.length, dtype=bool))
        hint = " (put comparisons in parentheses: (a > 1) & (b < 2))" if op in ("&", "|") else ""
        raise self.fail(
            f"`{self.show(node)}` gives {_KIND_NAMES[value.kind]}: `{op}` in `{self.show(parent)}` needs "
            f"true/false values{hint}"
        )

    def unary(self, node: ast.UnaryOp) -> _Value:
        if isinstance(node.op, ast.Not | ast.Invert):
            value = self.boolean(node.operand, "not" if isinstance(node.op, ast.Not) else "~", node)
            return _Value("bool", np.logical_not(value.data), value.missing)
        number = self.as_number(self.eval(node.operand), node.operand, "-", node)
        return _number(np.negative(number.data) if isinstance(node.op, ast.USub) else number.data)

    def binop(self, node: ast.BinOp) -> _Value:
        op = type(node.op)
        if op in _LOGICAL:
            symbol = _LOGICAL[op]
            left = self.boolean(node.left, symbol, node)
            right = self.boolean(node.right, symbol, node)
            return _and(left, right) if op is ast.BitAnd else _or(left, right)
        symbol, function = _ARITHMETIC[op]
        left = self.as_number(self.eval(node.left), node.left, symbol, node)
        right = self.as_number(self.eval(node.right), node.right, symbol, node)
        return _number(function(left.data, right.data))

    def compare(self, node: ast.Compare) -> _Value:
        left, left_node = self.eval(node.left), node.left
        result: _Value | None = None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, _MEMBERSHIP):
                items = self.expression._lists[id(right_node)]
                step = self.member(left, items, isinstance(op, ast.NotIn), node)
                right = left
            else:
                right = self.eval(right_node)
                step = self.ordered(_COMPARE[type(op)], left, right, node, (left_node, right_node))
            result = step if result is None else _and(result, step)
            left, left_node = right, right_node
        assert result is not None
        return result

    def comparable(
        self, left: _Value, right: _Value, node: ast.Compare, sides: tuple[ast.AST, ast.AST]
    ) -> Kind:
        kinds = {left.kind, right.kind}
        if "any" in kinds:
            return "any"
        if kinds <= {"number", "bool"}:
            return "number"
        if kinds == {"text"}:
            return "text"
        raise self.fail(
            f"cannot compare `{self.show(sides[0])}` ({_KIND_NAMES[left.kind]}) with `{self.show(sides[1])}` "
            f"({_KIND_NAMES[right.kind]}) in `{self.show(node)}`"
        )

    def ordered(
        self,
        compare: tuple[str, Callable[[Any, Any], Any]],
        left: _Value,
        right: _Value,
        node: ast.Compare,
        sides: tuple[ast.AST, ast.AST],
    ) -> _Value:
        symbol, function = compare
        kind = self.comparable(left, right, node, sides)
        missing = np.logical_or(left.missing, right.missing)
        if kind == "any":
            return _Value("bool", np.zeros(self.length, dtype=bool), np.ones(self.length, dtype=bool))
        if kind == "number":
            a = self.as_number(left, node, symbol, node).data
            b = self.as_number(right, node, symbol, node).data
        else:
            a, b = left.data, right.data
        value = function(a, b)
        return _Value("bool", bool(value) if np.ndim(value) == 0 else np.asarray(value, dtype=bool), missing)

    def member(self, left: _Value, items: _ListLiteral, negate: bool, node: ast.Compare) -> _Value:
        if left.kind == "any":
            return _Value("bool", np.zeros(self.length, dtype=bool), np.ones(self.length, dtype=bool))
        kind = "number" if left.kind == "bool" else left.kind
        if items.kind not in ("any", kind) and not (kind == "number" and items.kind == "bool"):
            raise self.fail(
                f"cannot look for {_KIND_NAMES[items.kind]} in `{self.show(node.left)}` "
                f"({_KIND_NAMES[left.kind]}) in `{self.show(node)}`"
            )
        data = self.as_number(left, node.left, "in", node).data if kind == "number" else left.data
        values = [float(v) for v in items.values] if kind == "number" else list(items.values)
        if np.ndim(data) == 0:
            found: Any = data in values
        else:
            found = pd.Series(data).isin(values).to_numpy(dtype=bool)
        return _Value("bool", np.logical_not(found) if negate else found, left.missing)


def _and(a: _Value, b: _Value) -> _Value:
    """Kleene and: False if either side is known False, True if both are known True, else missing."""
    a_false = np.logical_and(np.logical_not(a.missing), np.logical_not(a.data))
    b_false = np.logical_and(np.logical_not(b.missing), np.logical_not(b.data))
    true = np.logical_and(
        np.logical_and(np.logical_not(a.missing), a.data), np.logical_and(np.logical_not(b.missing), b.data)
    )
    false = np.logical_or(a_false, b_false)
    return _Value("bool", true, np.logical_not(np.logical_or(true, false)))


def _or(a: _Value, b: _Value) -> _Value:
    """Kleene or: True if either side is known True, False if both are known False, else missing."""
    a_true = np.logical_and(np.logical_not(a.missing), a.data)
    b_true = np.logical_and(np.logical_not(b.missing), b.data)
    true = np.logical_or(a_true, b_true)
    false = np.logical_and(
        np.logical_and(np.logical_not(a.missing), np.logical_not(a.data)),
        np.logical_and(np.logical_not(b.missing), np.logical_not(b.data)),
    )
    return _Value("bool", true, np.logical_not(np.logical_or(true, false)))


def _to_series(value: _Value, index: pd.Index) -> pd.Series:
    length = len(index)
    data = np.broadcast_to(value.data, (length,)) if np.ndim(value.data) == 0 else value.data
    missing = np.broadcast_to(np.asarray(value.missing, dtype=bool), (length,))
    if value.kind == "number":
        return pd.Series(np.array(data, dtype="float64"), index=index)
    if value.kind == "text":
        text = pd.Series(np.array(data, dtype=object), index=index).mask(missing)
        return text.astype("string")
    values = np.array(data, dtype=bool)
    return pd.Series(pd.arrays.BooleanArray(values, np.array(missing, dtype=bool)), index=index)
