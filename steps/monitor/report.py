"""The monitoring report: a Markdown summary (Prefect artifact), an HTML page with a drift heatmap (artifact
store), and the numbers for an MLflow run."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from steps.monitor.policy import PolicyDecision


def heatmap(drift: pd.DataFrame, threshold: float) -> Figure | None:
    if drift.empty:
        return None
    grid = drift.pivot_table(index="column", columns="window", values="statistic", aggfunc="max")
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * grid.shape[1], 0.6 + 0.3 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="magma_r", vmin=0, vmax=max(0.5, threshold * 2))
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_xticks(range(grid.shape[1]), [c[9:13] if len(c) > 12 else c for c in grid.columns], rotation=90)
    ax.set_title(f"Hellinger distance to the training profile (threshold {threshold})")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def to_markdown(
    model: str, version: str, decision: PolicyDecision, drift: pd.DataFrame, realized: dict[str, float]
) -> str:
    lines = [f"# Monitoring {model} v{version}", "", f"**{decision.summary()}**", ""]
    if realized.get("labels"):
        lines += ["| realized | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in realized.items()]
        lines.append("")
    windows = decision.evidence.get("windows", [])
    if windows:
        lines += ["| window | rows | drifting | columns beyond the threshold |", "|---|---|---|---|"]
        for w in windows:
            moved = ", ".join(f"{c} {s:.2f}" for c, s in w["drifted"].items()) or "-"
            lines.append(f"| {w['window']} | {w['rows']} | {'yes' if w['drifting'] else 'no'} | {moved} |")
    elif drift.empty:
        lines.append("No serving windows yet.")
    return "\n".join(lines)


def to_html(
    title: str, markdown_summary: str, drift: pd.DataFrame, figure: Figure | None, evidence: dict[str, Any]
) -> str:
    image = ""
    if figure is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        image = f'<img alt="drift heatmap" src="data:image/png;base64,{encoded}">'
    table = (
        drift.to_html(index=False, float_format=lambda v: f"{v:.4f}")
        if not drift.empty
        else "<p>No windows.</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><pre>{html.escape(markdown_summary)}</pre>{image}"
        f"<h2>Evidence</h2><pre>{html.escape(str(evidence))}</pre><h2>Drift per window and column</h2>{table}"
        "</body></html>"
    )
