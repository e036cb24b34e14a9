"""A data diff for people: terminal tables and a self-contained HTML page with plots.

Rendering only: everything shown is in the :class:`~steps.data.diff.DataDiff`. Numbers are formatted to be
read (``1,234``, ``0.1234``, ``12.5%``), never a repr; the page follows the monitoring report's house style
(its stylesheet, inline base64 PNGs), so it opens anywhere without its folder.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from steps.data.diff import CategoricalStats, ColumnDiff, DataDiff, NumericStats
from steps.monitor.report import STYLE, png

PLOTTED_NUMERIC = 6
PLOTTED_CATEGORICAL = 4
CELL_WIDTH = 40
"""A terminal cell longer than this is cut (top values, category lists)."""


def num(value: float | int | None) -> str:
    """``1,234`` for counts and large numbers, four significant digits otherwise, ``-`` for nothing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.1%}"


def signed_count(a: int, b: int) -> str:
    change = b - a
    rel = f", {change / a:+.1%}" if a else ""
    return f"{change:+,}{rel}"


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


# --------------------------------------------------------------------------- what is said


def summary(diff: DataDiff) -> str:
    """One line: rows, schema changes and the columns that moved."""
    parts = [f"{num(diff.a.rows)} -> {num(diff.b.rows)} rows ({signed_count(diff.a.rows, diff.b.rows)})"]
    schema = len(diff.added) + len(diff.removed) + len(diff.retyped)
    parts.append(
        f"{len(diff.added)} column(s) added, {len(diff.removed)} removed, {len(diff.retyped)} retyped"
        if schema
        else "same columns and types"
    )
    moved = diff.drifted
    watched = sum(1 for c in diff.columns if c.watched and c.drift is not None)
    if moved:
        names = ", ".join(f"{c.column} {c.drift:.2f}" for c in moved[:8])
        more = f" and {len(moved) - 8} more" if len(moved) > 8 else ""
        parts.append(f"{len(moved)} of {watched} watched column(s) moved: {names}{more}")
    else:
        parts.append(f"no watched column moved ({watched} scored)")
    return "; ".join(parts)


def sides_table(diff: DataDiff) -> Table:
    rows = []
    for tag, side in (("A", diff.a), ("B", diff.b)):
        read = "all" if side.sampled >= side.rows else f"a seeded sample of {num(side.sampled)}"
        rows.append([tag, side.name, side.origin, num(side.rows), read, side.profile_note or "-"])
    return Table("Data sets", ["", "reference", "from", "rows", "rows compared", "drift profile"], rows)


def schema_table(diff: DataDiff) -> Table | None:
    rows = [[c, "added", "-", diff.schema_b.get(c, "-")] for c in diff.added]
    rows += [[c, "removed", diff.schema_a.get(c, "-"), "-"] for c in diff.removed]
    rows += [[r.column, "retyped", r.before, r.after] for r in diff.retyped]
    return Table("Schema changes", ["column", "change", "type in A", "type in B"], rows) if rows else None


def _drift_cell(column: ColumnDiff) -> str:
    if column.drift is None:
        return "-"
    mark = " *" if column.drifted else ("" if column.watched else " (not watched)")
    return f"{column.drift:.4f}{mark}"


def numeric_table(diff: DataDiff) -> Table | None:
    rows = []
    for c in diff.by_drift():
        if c.kind != "numeric":
            continue
        a = c.a if isinstance(c.a, NumericStats) else None
        b = c.b if isinstance(c.b, NumericStats) else None
        rows.append(
            [
                c.column,
                _drift_cell(c),
                _pair(pct(a.missing_fraction) if a else "-", pct(b.missing_fraction) if b else "-"),
                _pair(num(a.mean) if a else "-", num(b.mean) if b else "-"),
                _pair(num(a.std) if a else "-", num(b.std) if b else "-"),
                *(_pair(_quantile(a, q), _quantile(b, q)) for q in (0.05, 0.5, 0.95)),
            ]
        )
    if not rows:
        return None
    return Table(
        "Numeric columns",
        [
            "column",
            f"drift ({diff.algorithm})",
            "missing A -> B",
            "mean A -> B",
            "std A -> B",
            "5% A -> B",
            "median A -> B",
            "95% A -> B",
        ],
        rows,
        f"* at or beyond the drift threshold {diff.threshold}",
    )


def _quantile(stats: NumericStats | None, q: float) -> str:
    return "-" if stats is None else num(stats.quantiles.get(q))


def _pair(a: str, b: str) -> str:
    return a if a == b else f"{a} -> {b}"


def categorical_table(diff: DataDiff) -> Table | None:
    rows = []
    for c in diff.by_drift():
        if c.kind == "numeric":
            continue
        a = c.a if isinstance(c.a, CategoricalStats) else None
        b = c.b if isinstance(c.b, CategoricalStats) else None
        rows.append(
            [
                c.column,
                _drift_cell(c),
                _pair(pct(a.missing_fraction) if a else "-", pct(b.missing_fraction) if b else "-"),
                _pair(num(a.distinct) if a else "-", num(b.distinct) if b else "-"),
                _top(a),
                _top(b),
                _listed(c.new_categories, c.new_count),
                _listed(c.vanished_categories, c.vanished_count),
            ]
        )
    if not rows:
        return None
    return Table(
        "Categorical columns",
        [
            "column",
            f"drift ({diff.algorithm})",
            "missing A -> B",
            "distinct A -> B",
            "top in A",
            "top in B",
            "new in B",
            "vanished from B",
        ],
        rows,
        "categories are compared on the rows read: with a sample, a rare one may be missing from it",
    )


def _top(stats: CategoricalStats | None, limit: int = 3) -> str:
    if stats is None:
        return "-"
    return ", ".join(f"{v} {s:.0%}" for v, s in stats.top[:limit]) or "-"


def _listed(items: Sequence[str], total: int) -> str:
    if not total:
        return "-"
    shown = ", ".join(items[:5])
    return f"{shown} (+{total - 5:,} more)" if total > 5 else shown


def label_table(diff: DataDiff) -> Table | None:
    balance = diff.label
    if balance is None:
        return None
    classes = sorted(set(balance.a) | set(balance.b))
    rows = [
        [
            k,
            pct(balance.a.get(k, 0.0)),
            pct(balance.b.get(k, 0.0)),
            f"{(balance.b.get(k, 0.0) - balance.a.get(k, 0.0)) * 100:+.1f} points",
        ]
        for k in classes
    ]
    rows.append(
        [
            "(missing)",
            pct(balance.a_missing),
            pct(balance.b_missing),
            f"{(balance.b_missing - balance.a_missing) * 100:+.1f} points",
        ]
    )
    return Table(
        f"Label balance ({balance.label})",
        ["class", "A", "B", "change"],
        rows,
        "shares of the labelled rows; missing: rows without a label",
    )


def tables(diff: DataDiff) -> list[Table]:
    found = [
        sides_table(diff),
        schema_table(diff),
        numeric_table(diff),
        categorical_table(diff),
        label_table(diff),
    ]
    return [t for t in found if t is not None]


def notes(diff: DataDiff) -> list[str]:
    out = [*diff.a.notes, *diff.b.notes]
    if diff.label is None and diff.label_note:
        out.append(diff.label_note)
    return out


# --------------------------------------------------------------------------- the terminal


def _cut(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def text_table(table: Table) -> str:
    rows = [[_cut(c) for c in row] for row in table.rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(table.headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [table.title, line(table.headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    if table.note:
        out.append(f"({table.note})")
    return "\n".join(out)


def to_text(diff: DataDiff) -> str:
    parts = [summary(diff)]
    parts += [text_table(t) for t in tables(diff)]
    parts += [f"note: {n}" for n in notes(diff)]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- figures


def drift_figure(diff: DataDiff) -> Figure | None:
    scored = [c for c in diff.by_drift() if c.drift is not None]
    if not scored:
        return None
    scored.reverse()  # largest at the top
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * len(scored)), layout="constrained")
    colours = ["#c0392b" if c.drifted else ("#999999" if not c.watched else "#3b6ea5") for c in scored]
    ax.barh([c.column for c in scored], [c.drift or 0.0 for c in scored], color=colours)
    ax.axvline(diff.threshold, color="#e0a000", linestyle="--", label=f"threshold {diff.threshold}")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{diff.algorithm} distance of B to A (grey: not watched)")
    ax.legend(loc="lower right")
    return fig


def histograms_figure(diff: DataDiff) -> Figure | None:
    shown = [c for c in diff.by_drift() if c.histogram is not None][:PLOTTED_NUMERIC]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 2.8 * rows), layout="constrained", squeeze=False
    )
    for ax, column in zip(axes.flat, shown, strict=False):
        hist = column.histogram
        assert hist is not None
        centres = [(lo + hi) / 2 for lo, hi in zip(hist.edges[:-1], hist.edges[1:], strict=True)]
        width = hist.edges[1] - hist.edges[0]
        ax.bar(centres, hist.a, width=width, alpha=0.5, label="A", color="#3b6ea5")
        ax.bar(centres, hist.b, width=width, alpha=0.5, label="B", color="#c0392b")
        drift = "-" if column.drift is None else f"{column.drift:.3f}"
        ax.set_title(f"{column.column} (distance {drift})", loc="left", fontsize=10)
        ax.set_ylabel("share of rows")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    return fig


def categories_figure(diff: DataDiff) -> Figure | None:
    shown = [
        c
        for c in diff.by_drift()
        if isinstance(c.a, CategoricalStats) and isinstance(c.b, CategoricalStats) and c.drift is not None
    ][:PLOTTED_CATEGORICAL]
    if not shown:
        return None
    fig, axes = plt.subplots(
        1, len(shown), figsize=(4.2 * len(shown), 3.2), layout="constrained", squeeze=False
    )
    for ax, column in zip(axes.flat, shown, strict=True):
        assert isinstance(column.a, CategoricalStats) and isinstance(column.b, CategoricalStats)
        a, b = dict(column.a.top), dict(column.b.top)
        values = list(dict.fromkeys([*a, *b]))
        x = range(len(values))
        ax.bar([i - 0.2 for i in x], [a.get(v, 0.0) for v in values], width=0.4, label="A", color="#3b6ea5")
        ax.bar([i + 0.2 for i in x], [b.get(v, 0.0) for v in values], width=0.4, label="B", color="#c0392b")
        ax.set_xticks(list(x), [v[:12] for v in values], rotation=45, ha="right")
        ax.set_title(f"{column.column} (distance {column.drift:.3f})", loc="left", fontsize=10)
        ax.set_ylabel("share of rows")
        ax.legend(fontsize=8)
    return fig


def label_figure(diff: DataDiff) -> Figure | None:
    balance = diff.label
    if balance is None:
        return None
    classes = sorted(set(balance.a) | set(balance.b))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.8 * len(classes)), 3.0), layout="constrained")
    x = range(len(classes))
    ax.bar(
        [i - 0.2 for i in x], [balance.a.get(k, 0.0) for k in classes], width=0.4, label="A", color="#3b6ea5"
    )
    ax.bar(
        [i + 0.2 for i in x], [balance.b.get(k, 0.0) for k in classes], width=0.4, label="B", color="#c0392b"
    )
    ax.set_xticks(list(x), classes)
    ax.set_ylabel("share of labelled rows")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- the page


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<h2>{html.escape(table.title)}</h2>{table_html}{note}"


def _html_figure(figure: Figure | None, title: str, caption: str, heading: bool = True) -> str:
    if figure is None:
        return ""
    encoded, width, height = png(figure)
    head = f"<h2>{html.escape(title)}</h2>" if heading else ""
    return (
        f'{head}<figure><img alt="{html.escape(title)}" width="{width}" '
        f'height="{height}" src="data:image/png;base64,{encoded}"><figcaption class="note">'
        f"{html.escape(caption)}</figcaption></figure>"
    )


def to_html(diff: DataDiff) -> str:
    """The page: the summary, the data sets, the schema changes, the drift chart, the column tables with
    their histograms and top values, the label balance, and the notes."""
    title = f"Data diff: {diff.a.name} -> {diff.b.name}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{html.escape(summary(diff))}</p>',
    ]
    for table in tables(diff):
        parts.append(_html_table(table))
        if table.title == "Data sets":
            parts.append(
                _html_figure(
                    drift_figure(diff),
                    "Drift per column",
                    f"the {diff.algorithm} distance monitoring uses; red: at or beyond {diff.threshold}",
                )
            )
        elif table.title == "Numeric columns":
            parts.append(
                _html_figure(
                    histograms_figure(diff),
                    "Distributions of the columns that moved most",
                    "share of rows per bin, A and B over the same bins",
                )
            )
        elif table.title == "Categorical columns":
            parts.append(
                _html_figure(
                    categories_figure(diff),
                    "Top values of the columns that moved most",
                    "share of rows of each side's top values",
                )
            )
        elif table.title.startswith("Label balance"):
            parts.append(
                _html_figure(
                    label_figure(diff), "Label balance", "share of labelled rows per class", heading=False
                )
            )
    found = notes(diff)
    if found:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in found) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)
