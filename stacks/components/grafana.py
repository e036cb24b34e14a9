"""A Grafana dashboard for the stack's Prometheus: requests, latency against the SLO, the version each
model serves, rollouts (rows by version and role, shadow agreement), the error budget, profiling loss.

Built from the recording rules' names (stacks/components/prometheus.py) and the service's metric names,
so it cannot drift from what is scraped; ``flywheel metrics dashboard`` prints it, and
``docs/grafana/flywheel-dashboard.json`` is that output (a test holds the two equal and has promtool parse
every query). Import it in Grafana (Dashboards > New > Import) and pick the Prometheus data source.
"""

from __future__ import annotations

from typing import Any

from stacks.components import prometheus

SCHEMA_VERSION = 39
"""Grafana's dashboard JSON schema version the panels are written for (Grafana 10.x)."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    pid: int, title: str, exprs: list[tuple[str, str]], x: int, y: int, unit: str = "short"
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def queries() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, unit, [(PromQL, legend)]) of each panel, in order."""
    every = 'model=~"$model"'
    return [
        (
            "Requests per second by status",
            "reqps",
            [
                (
                    f"sum by (model, status) (rate(flywheel_requests_total{{{every}}}[1m]))",
                    "{{model}} {{status}}",
                ),
            ],
        ),
        (
            "p99 latency of /predict* against the SLO",
            "s",
            [
                (f"max by (model) ({prometheus.LATENCY_P99}{{{every}}})", "{{model}} p99"),
            ],
        ),
        (
            "Version served",
            "none",
            [
                (f"max by (model, version) (flywheel_model_version{{{every}}})", "{{model}} v{{version}}"),
            ],
        ),
        (
            "Rollout: rows scored by version and role",
            "short",
            [
                (
                    "sum by (model, version, role) "
                    f"(rate(flywheel_version_scored_rows_total{{{every}}}[1m]))",
                    "{{model}} v{{version}} {{role}}",
                ),
            ],
        ),
        (
            "Rollout: shadow decisions agreeing with the champion",
            "percentunit",
            [
                (
                    f'sum by (model) (rate(flywheel_shadow_decisions_total{{{every},agree="true"}}[5m])) / '
                    f"sum by (model) (rate(flywheel_shadow_decisions_total{{{every}}}[5m]))",
                    "{{model}}",
                ),
            ],
        ),
        (
            "Error budget left (SLO window)",
            "percentunit",
            [
                (f"min by (model) ({prometheus.ERROR_BUDGET_LEFT}{{{every}}})", "{{model}}"),
            ],
        ),
        (
            "Availability of /predict*",
            "percentunit",
            [
                (f"min by (model) ({prometheus.AVAILABILITY}{{{every}}})", "{{model}}"),
            ],
        ),
        (
            "Profiling loss and model age",
            "short",
            [
                (f"max by (model) ({prometheus.PROFILING_LOSS}{{{every}}})", "{{model}} rows lost (ratio)"),
                (
                    f"max by (model) ({prometheus.MODEL_AGE}{{{every}}}) / 86400",
                    "{{model}} champion age (days)",
                ),
            ],
        ),
    ]


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, unit, exprs) in enumerate(queries()):
        panels.append(_panel(i + 1, title, exprs, x=12 * (i % 2), y=8 * (i // 2), unit=unit))
    return {
        "uid": "flywheel-services",
        "title": "Flywheel: model services",
        "description": "Requests, latency against the SLO, versions, rollouts, error budget (Flywheel).",
        "tags": ["flywheel"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "model",
                    "type": "query",
                    "label": "Model",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(flywheel_model_version, model)", "refId": "models"},
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }
