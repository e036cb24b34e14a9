"""The service side of a monitoring run: each SLO's figure for the model and the error budget left, from
the stack's Prometheus (the recording rules of stacks/components/prometheus.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stacks.components import prometheus
from stacks.config import PrometheusConfig


@dataclass
class ServiceLevel:
    """What Prometheus says now (None: no figure yet), against the stack's objectives, and the alerts
    firing for the model; ``note`` when Prometheus could not be asked."""

    objectives: dict[str, float]
    figures: dict[str, float | None] = field(default_factory=dict)
    firing: list[str] = field(default_factory=list)
    note: str = ""


def read(config: PrometheusConfig, model: str) -> ServiceLevel:
    slos = config.slos
    level = ServiceLevel(
        {
            "p99_latency_ms": slos.latency_p99_ms,
            "availability": slos.availability,
            "error_budget_left": 0.0,
            "profiling_loss": slos.profiling_loss,
            "model_age_days": slos.freshness_days,
        }
    )
    api = prometheus.PrometheusAPI(config)
    try:
        for name, expr in prometheus.SLO_QUERIES.items():
            values = [v for labels, v in api.query(expr) if labels.get("model") == model]
            # NaN: a ratio of rates with no request in their window, no figure rather than a broken one
            level.figures[name] = values[0] if values and not math.isnan(values[0]) else None
        level.firing = [
            str(a["labels"].get("alertname"))
            for a in api.alerts()
            if a.get("state") == "firing" and a.get("labels", {}).get("model") == model
        ]
    except prometheus.PrometheusUnavailable as exc:
        level.note = f"no service-level figures: {exc}"
    return level


def met(name: str, value: float, objective: float) -> bool:
    """Lower is better for latency, loss and age; higher for availability and the budget left."""
    if name in ("availability", "error_budget_left"):
        return value >= objective
    return value <= objective
