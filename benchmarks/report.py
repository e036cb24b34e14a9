"""Plain-text tables and ratio lines, and a JSON copy of every result under .flywheel/bench/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}\n(no rows)"
    columns = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [title, line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def ratio_line(name: str, value: float, target: str, ok: bool) -> str:
    return f"{name:<58} {value:8.3f}   target {target:<14} {'MET' if ok else 'NOT MET'}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def save(name: str, payload: dict[str, Any], home: Path) -> Path:
    target = home / "bench" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2, default=str))
    return target
