"""The monitoring report: one set of tables rendered twice, as Markdown (the Prefect artifact) and as a
self-contained HTML page (artifact store and MLflow), with a drift heatmap and realized metrics over time.

Both open with the decision's one-line summary (``PolicyDecision.summary``), the same text the MLflow tag and
the drift event carry. Every number is formatted for people here (``1,000``, ``0.8123``), never a repr: a
report is read, not parsed. Images are inline base64 PNGs, so the page opens anywhere without its folder.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from flywheel.contracts import layout
from steps.monitor.policy import PolicyDecision, RetrainPolicy, count, moment
from steps.monitor.service_level import ServiceLevel, met

COUNT_KEYS = frozenset({"labels", "skipped_labels", "rows", "windows"})
PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
MIN_BUCKET_LABELS = 20  # fewer labels in a time bucket: its metric is noise, shown as "-"
BUCKET_SECONDS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 30
WINDOWS_TITLE = "Serving windows the policy judged"


METRIC_NAMES = {"roc_auc": "ROC AUC", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "f1_macro": "macro F1"}


def metric_name(key: str) -> str:
    """A metric's name for people: ``ROC AUC``, ``log loss``."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


def number(key: str, value: float | int | None) -> str:
    """A value as the report shows it: counts with thousands separators, rates to four decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in COUNT_KEYS or isinstance(value, int):
        return count(value)
    return f"{value:.4f}"


def window_label(name: str, with_year: bool = False) -> str:
    """A window's start for people: ``2026-12-01 15:05`` (UTC) from its file name stamp."""
    try:
        start = layout.window_start(name)
    except (ValueError, layout.LayoutError):
        return name
    return f"{start:%Y-%m-%d %H:%M}" if with_year else f"{start:%m-%d %H:%M}"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Report:
    """What the report says, before it is rendered: the summary, bullet lists and tables."""

    title: str
    summary: str
    checked_at: datetime
    bullets: list[tuple[str, list[str]]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


# --------------------------------------------------------------------------- the tables


def policy_table(policy: RetrainPolicy, ignored: Sequence[str] = ()) -> Table:
    floor = (
        "off" if policy.auc_floor is None else f"{policy.auc_floor:.2f} on {count(policy.min_labels)}+ labels"
    )
    champion = policy.champion_cooldown_hours
    rows = [
        ["drifting windows to retrain", f"{policy.n_windows} of the last {policy.of_last}"],
        [
            "a window drifts when",
            f"{policy.min_drifted_features}+ watched columns reach {policy.drift_threshold}",
        ],
        ["rows a window needs to count", count(policy.min_window_rows)],
        ["realized ROC AUC floor", floor],
        ["cooldown since the last retrain asked for", f"{policy.cooldown_hours:g} h"],
        [
            "cooldown since the champion's registration",
            f"{policy.cooldown_hours if champion is None else champion:g} h",
        ],
        ["mode on decay with steady inputs", policy.decay_mode + " (input drift: full)"],
    ]
    if ignored:
        rows.append(["columns not watched (clock columns)", ", ".join(ignored)])
    return Table("Policy", ["rule", "setting"], rows, "the stack's data_validator.configuration.retraining")


def windows_table(decision: PolicyDecision) -> Table | None:
    windows = decision.evidence.get("windows", [])
    if not windows:
        return None
    rows = []
    for w in windows:
        moved = ", ".join(f"{c} {s:.2f}" for c, s in w["drifted"].items()) or "-"
        rows.append(
            [
                window_label(w["window"], with_year=True),
                count(w["rows"]),
                "yes" if w["drifting"] else "no",
                moved,
                ", ".join(w.get("missing", [])) or "-",
            ]
        )
    return Table(
        WINDOWS_TITLE,
        ["window start (UTC)", "rows", "drifting", "columns beyond the threshold", "missing columns"],
        rows,
    )


def realized_table(realized: Mapping[str, float]) -> Table | None:
    if not realized.get("labels"):
        return None
    return Table(
        "Realized performance (predictions whose labels came back)",
        ["metric", "value"],
        [[metric_name(k), number(k, v)] for k, v in realized.items()],
    )


def drift_columns_table(drift: pd.DataFrame, threshold: float) -> Table | None:
    if drift.empty:
        return None
    rows = []
    for column, part in drift.groupby("column", sort=False):
        stats = part["statistic"]
        worst = float(stats.max()) if stats.notna().any() else math.nan
        notes = sorted({n for n in part["note"] if n})
        rows.append(
            [
                str(column),
                number("statistic", worst),
                f"{int((stats >= threshold).sum())} of {len(part)}",
                "; ".join(notes) or "-",
            ]
        )
    rows.sort(key=lambda r: -float(r[1]) if r[1] != "-" else 1.0)
    return Table(
        "Drift per column",
        ["column", "largest distance", "windows at or beyond the threshold", "notes"],
        rows,
    )


def skipped_table(skipped: Mapping[str, int]) -> Table | None:
    if not skipped:
        return None
    return Table("Label rows left out", ["reason", "rows"], [[k, count(v)] for k, v in skipped.items()])


def over_time_table(frame: pd.DataFrame) -> Table | None:
    if frame.empty:
        return None
    metric = str(frame["metric"].iloc[0])
    rows = [
        [f"v{r.version}", f"{r.start:%Y-%m-%d %H:%M}", count(r.labels), number(metric, r.value)]
        for r in frame.itertuples()
    ]
    return Table(
        f"Realized {metric_name(metric)} over time, per version",
        ["version", "from (UTC)", "labels", metric_name(metric)],
        rows,
        f"buckets with fewer than {MIN_BUCKET_LABELS} labels show '-'",
    )


# --------------------------------------------------------------------------- realized metrics over time


def _bucket_metric(part: pd.DataFrame, metric: str) -> float:
    if len(part) < MIN_BUCKET_LABELS:
        return math.nan
    from sklearn import metrics as skm

    y = part["label"].to_numpy("float64")
    p = part["prediction"].to_numpy("float64")
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else math.nan
    if metric == "accuracy":
        return float((p == y).mean())
    return float(((y - p) ** 2).mean() ** 0.5)


def realized_over_time(labelled: Mapping[str, pd.DataFrame], task: str) -> pd.DataFrame:
    """The task's main realized metric per version and time bucket (by prediction time), one row each.

    The bucket is the shortest of a minute .. a month that keeps the span under ``MAX_BUCKETS`` buckets,
    so an hour of replay and a quarter of production traffic both read as a curve."""
    metric = PRIMARY_METRIC.get(task, "roc_auc")
    columns = ["version", "start", "labels", "metric", "value"]
    frames = {v: f for v, f in labelled.items() if not f.empty}
    if not frames:
        return pd.DataFrame(columns=columns)
    stamps = pd.concat([f["ts"] for f in frames.values()]).astype("float64")
    span = float(stamps.max() - stamps.min())
    width = next((s for s in BUCKET_SECONDS if span / s < MAX_BUCKETS), BUCKET_SECONDS[-1])
    rows = []
    for version, frame in sorted(frames.items(), key=lambda kv: _version_key(kv[0])):
        buckets = (frame["ts"].astype("float64") // width * width).astype("int64")
        for start, part in frame.groupby(buckets, sort=True):
            rows.append(
                [
                    version,
                    datetime.fromtimestamp(int(start), UTC),
                    len(part),
                    metric,
                    _bucket_metric(part, metric),
                ]
            )
    return pd.DataFrame(rows, columns=columns)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


# --------------------------------------------------------------------------- figures

HEATMAP_INCHES_PER_WINDOW = 0.3
HEATMAP_MIN_INCHES, HEATMAP_MAX_INCHES = 5.0, 20.0
LABEL_INCHES = 0.22  # a rotated date label's height, with room between neighbours


def heatmap_layout(n_windows: int) -> tuple[float, int]:
    """The heatmap's width in inches (grows with the windows, within bounds) and the step between labelled
    windows (every window while they fit, then every 2nd, 3rd ...)."""
    width = min(HEATMAP_MAX_INCHES, max(HEATMAP_MIN_INCHES, 3.0 + HEATMAP_INCHES_PER_WINDOW * n_windows))
    slots = max(1, int((width - 3.0) / LABEL_INCHES))
    return width, max(1, math.ceil(n_windows / slots))


def heatmap(drift: pd.DataFrame, threshold: float) -> Figure | None:
    """Distance per column (rows) and window (columns), windows labelled by their start in UTC."""
    if drift.empty:
        return None
    grid = drift.pivot_table(
        index="column", columns="window", values="statistic", aggfunc="max", dropna=False
    )
    n = grid.shape[1]
    width, step = heatmap_layout(n)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.3 * grid.shape[0]), layout="constrained")
    image = ax.imshow(
        grid.to_numpy(dtype="float64"), aspect="auto", cmap="magma_r", vmin=0, vmax=max(0.5, threshold * 2)
    )
    ax.set_yticks(range(grid.shape[0]), [str(c) for c in grid.index])
    shown = list(range(0, n, step))
    ax.set_xticks(shown, [window_label(str(grid.columns[i])) for i in shown], rotation=90)
    ax.set_xlabel("window start (UTC, month-day hour:minute)")
    ax.set_title(f"Hellinger distance to the training profile (threshold {threshold})", loc="left")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    return fig


def realized_figure(frame: pd.DataFrame) -> Figure | None:
    """The realized metric over time, one line per version."""
    points = frame.dropna(subset=["value"]) if not frame.empty else frame
    if points.empty:
        return None
    buckets = points["start"].nunique()
    fig, ax = plt.subplots(figsize=(min(HEATMAP_MAX_INCHES, max(6.0, 3.0 + 0.25 * buckets)), 3.2))
    for version, part in points.groupby("version", sort=False):
        ax.plot(part["start"], part["value"], marker="o", label=f"v{version}")
    ax.set_ylabel(f"realized {metric_name(str(points['metric'].iloc[0]))}")
    ax.set_xlabel("prediction time (UTC)")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def png(figure: Figure) -> tuple[str, int, int]:
    """The figure as base64 PNG and its pixel size; ``bbox_inches='tight'`` grows the image to every label
    and title, so nothing is cut off at the edges."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
    data = buffer.getvalue()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return base64.b64encode(data).decode(), width, height


# --------------------------------------------------------------------------- assembling and rendering


def service_level_table(level: ServiceLevel | None) -> Table | None:
    """Each SLO's figure from Prometheus against its objective, the error budget left, alerts firing."""
    if level is None:
        return None
    if level.note:
        return Table("Service level", ["note"], [[level.note]])
    rows = []
    for name, objective in level.objectives.items():
        value = level.figures.get(name)
        shown = "no figure yet" if value is None else f"{value:.4g}"
        verdict = "-" if value is None else ("met" if met(name, value, objective) else "BROKEN")
        rows.append([name.replace("_", " "), shown, f"{objective:g}", verdict])
    note = f"alerts firing: {', '.join(level.firing)}" if level.firing else "no alert firing"
    return Table("Service level (Prometheus)", ["objective", "now", "target", "verdict"], rows, note)


def build(
    model: str,
    version: str,
    decision: PolicyDecision,
    policy: RetrainPolicy,
    drift: pd.DataFrame,
    realized: Mapping[str, float],
    *,
    skipped: Mapping[str, int] | None = None,
    over_time: pd.DataFrame | None = None,
    ignored: Sequence[str] = (),
    checked_at: datetime | None = None,
    service_level: ServiceLevel | None = None,
) -> Report:
    report = Report(f"Monitoring {model} v{version}", decision.summary(), checked_at or datetime.now(UTC))
    if decision.fire or decision.suppressed_by:
        what = [*decision.reasons, f"mode: {decision.mode} ({decision.mode_reason})"]
        if decision.suppressed_by:
            what.append(f"held back: {decision.suppressed_by}")
        report.bullets.append(("What fired", what))
    if decision.waiting and not decision.fire:  # once it fired, the other rules' distance is moot
        report.bullets.append(("What the policy waits for", list(decision.waiting)))
    tables = [
        realized_table(realized),
        service_level_table(service_level),
        over_time_table(over_time if over_time is not None else pd.DataFrame()),
        windows_table(decision),
        drift_columns_table(drift, policy.drift_threshold),
        skipped_table(skipped or {}),
        policy_table(policy, ignored),
    ]
    report.tables = [t for t in tables if t is not None]
    return report


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report, report_uri: str | None = None) -> str:
    """The Prefect artifact (Prefect renders Markdown): the same summary and tables as the HTML page."""
    lines = [f"# {report.title}", "", f"**{report.summary}**", ""]
    lines.append(
        f"Checked {moment(report.checked_at)}." + (f" HTML report: `{report_uri}`" if report_uri else "")
    )
    for title, items in report.bullets:
        lines += ["", f"## {title}", ""] + [f"- {_md_cell(i)}" for i in items]
    for table in report.tables:
        lines += ["", f"## {table.title}", ""]
        lines.append("| " + " | ".join(table.headers) + " |")
        lines.append("|" + "---|" * len(table.headers))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        if table.note:
            lines += ["", f"_{table.note}_"]
    return "\n".join(lines)


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:left}th{background:#f3f3f3}p.summary{font-size:1.15em;font-weight:600;padding:.6em;"
    "background:#fff6e0;border-left:4px solid #e0a000}p.note{color:#666;font-size:.9em}"
    "figure{margin:0 0 1.5em}img{max-width:100%;height:auto;display:block}"
)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    title = f"<h2>{html.escape(table.title)}</h2>" if table.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _html_figure(figure: Figure | None, alt: str, caption: str) -> str:
    if figure is None:
        return ""
    encoded, width, height = png(figure)
    return (
        f'<figure><img alt="{html.escape(alt)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{encoded}"><figcaption class="note">{html.escape(caption)}'
        "</figcaption></figure>"
    )


def to_html(report: Report, heatmap_figure: Figure | None, realized_fig: Figure | None = None) -> str:
    """A self-contained page: the summary, what fired or what the policy waits for, the tables, the drift
    heatmap and the realized metric over time."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f'<p class="summary">{html.escape(report.summary)}</p>',
        f'<p class="note">Checked {html.escape(moment(report.checked_at))}.</p>',
    ]
    for title, items in report.bullets:
        parts.append(f"<h2>{html.escape(title)}</h2><ul>")
        parts += [f"<li>{html.escape(i)}</li>" for i in items]
        parts.append("</ul>")
    heat = _html_figure(heatmap_figure, "drift heatmap", "columns by window; darker is further from training")
    heat = f"<h2>Drift heatmap</h2>{heat}" if heat else ""
    over_time = _html_figure(realized_fig, "realized metric over time", "one line per version")
    for table in report.tables:
        if table.title.startswith("Realized") and "over time" in table.title and over_time:
            parts.append(f"<h2>{html.escape(table.title)}</h2>{over_time}")
            parts.append(_html_table(Table("", table.headers, table.rows, table.note)))
            over_time = ""
            continue
        parts.append(_html_table(table))
        if table.title == WINDOWS_TITLE and heat:
            parts.append(heat)
            heat = ""
    parts.append(heat)
    parts.append("</body></html>")
    return "".join(parts)
