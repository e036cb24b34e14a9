"""The stack's Prometheus: its configuration, the recording and alert rules made from the SLOs, the
targets file of the model services, and its HTTP API.

One folder holds what the Prometheus that ``make up`` (and staging) starts reads: ``prometheus.yml``,
``rules.yml`` and ``targets.json`` (file-based discovery, re-read by Prometheus when it changes: the
deployment flow and the scripts rewrite it from the deployer's records, :func:`write_targets`).
``promtool check config`` passes on what :func:`write_config` writes (a test runs it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stacks.config import PrometheusConfig, ServiceLevelObjectives

CONFIG_FILE, RULES_FILE, TARGETS_FILE = "prometheus.yml", "rules.yml", "targets.json"
JOB = "flywheel-services"
PREDICT_ENDPOINTS = "predict|predict_batch|predict_columns"
"""The request-metric ``endpoint`` labels the latency and availability SLOs are about."""

LATENCY_P99 = "flywheel:predict_latency_p99:seconds"
AVAILABILITY = "flywheel:predict_availability:ratio"
PROFILING_LOSS = "flywheel:profiling_loss:ratio"
AVAILABILITY_WINDOW = "flywheel:predict_availability:ratio_window"
ERROR_BUDGET_LEFT = "flywheel:error_budget_left:ratio"
MODEL_AGE = "flywheel:model_age:seconds"
SLO_QUERIES = {
    "p99_latency_ms": f"max by (model) ({LATENCY_P99}) * 1000",
    "availability": f"min by (model) ({AVAILABILITY})",
    "error_budget_left": f"min by (model) ({ERROR_BUDGET_LEFT})",
    "profiling_loss": f"max by (model) ({PROFILING_LOSS})",
    "model_age_days": f"max by (model) ({MODEL_AGE}) / 86400",
}
"""Each SLO's figure per model, as `flywheel metrics status` and the monitoring report read it."""
ALERTS = ("FlywheelLatencySLO", "FlywheelAvailabilitySLO", "FlywheelProfilingLoss", "FlywheelModelStale")


def rate_window(config: PrometheusConfig) -> str:
    """The window of the short-term rates: four scrapes, at least 20 s (fewer says little)."""
    return f"{max(4 * config.scrape_interval_s, 20)}s"


def rules(config: PrometheusConfig) -> dict[str, Any]:
    """Recording rules for each SLO's figure and an alert per SLO, by model (the targets' label)."""
    slos: ServiceLevelObjectives = config.slos
    w = rate_window(config)
    window = f"{slos.window_days}d"
    by = "model, instance"
    every = f'flywheel_requests_total{{endpoint=~"{PREDICT_ENDPOINTS}"}}'
    good = f'flywheel_requests_total{{endpoint=~"{PREDICT_ENDPOINTS}",status!~"5.."}}'
    recording = [
        {
            "record": LATENCY_P99,
            "expr": f"histogram_quantile(0.99, sum by ({by}, le) "
            f'(rate(flywheel_request_latency_seconds_bucket{{endpoint=~"{PREDICT_ENDPOINTS}"}}[{w}])))',
        },
        {
            "record": AVAILABILITY,
            "expr": f"sum by ({by}) (rate({good}[{w}])) / sum by ({by}) (rate({every}[{w}]))",
        },
        {
            "record": PROFILING_LOSS,
            "expr": f"sum by ({by}) (rate(flywheel_profile_dropped_rows_total[{w}])) / "
            f"clamp_min(sum by ({by}) (rate(flywheel_predicted_rows_total[{w}])), 1e-9)",
        },
        {
            "record": AVAILABILITY_WINDOW,
            "expr": f"sum by (model) (increase({good}[{window}])) / "
            f"sum by (model) (increase({every}[{window}]))",
        },
        {
            "record": ERROR_BUDGET_LEFT,
            "expr": f"1 - (1 - {AVAILABILITY_WINDOW}) / {1 - slos.availability:.10g}",
        },
        {"record": MODEL_AGE, "expr": "time() - max by (model) (flywheel_model_created_timestamp_seconds)"},
    ]
    hold = f"{slos.alert_for_s}s"

    def alert(name: str, expr: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": hold,
            "labels": {"severity": "page"},
            "annotations": {"summary": summary},
        }

    alerts = [
        alert(
            "FlywheelLatencySLO",
            f"{LATENCY_P99} > {slos.latency_p99_ms / 1000:.10g}",
            f"p99 latency of {{{{ $labels.model }}}} above its {slos.latency_p99_ms:g} ms SLO",
        ),
        alert(
            "FlywheelAvailabilitySLO",
            f"{AVAILABILITY} < {slos.availability:.10g}",
            f"{{{{ $labels.model }}}} answers fewer than {slos.availability:.3%} of requests without a 5xx",
        ),
        alert(
            "FlywheelProfilingLoss",
            f"{PROFILING_LOSS} > {slos.profiling_loss:.10g}",
            f"profiling of {{{{ $labels.model }}}} drops more than {slos.profiling_loss:.2%} of its rows",
        ),
        alert(
            "FlywheelModelStale",
            f"{MODEL_AGE} > {slos.freshness_days * 86400:.0f}",
            f"the champion of {{{{ $labels.model }}}} is older than {slos.freshness_days:g} days",
        ),
    ]
    return {"groups": [{"name": "flywheel-slo", "rules": recording + alerts}]}


def config_document(config: PrometheusConfig, folder: Path) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": f"{config.scrape_interval_s}s",
            "evaluation_interval": f"{config.evaluation_interval_s}s",
        },
        "rule_files": [str(folder / RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "file_sd_configs": [{"files": [str(folder / TARGETS_FILE)], "refresh_interval": "5s"}],
            }
        ],
    }


@dataclass(frozen=True)
class Target:
    """A service to scrape: ``host:port`` and the model it serves."""

    address: str
    model: str
    stack: str = ""


def write_targets(folder: Path, targets: Iterable[Target]) -> Path:
    """The file-discovery targets (written whole, then renamed: Prometheus never reads half a file)."""
    groups = [
        {"targets": [t.address], "labels": {"model": t.model, **({"stack": t.stack} if t.stack else {})}}
        for t in targets
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TARGETS_FILE
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(groups, indent=2))
    part.replace(path)
    return path


def write_config(config: PrometheusConfig, folder: Path, targets: Iterable[Target] = ()) -> Path:
    """``prometheus.yml``, ``rules.yml`` and (when it does not exist yet, or ``targets`` are given) the
    targets file, in ``folder``; the configuration's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RULES_FILE).write_text(yaml.safe_dump(rules(config), sort_keys=False, width=1000))
    given = list(targets)
    if given or not (folder / TARGETS_FILE).exists():
        write_targets(folder, given)
    path = folder / CONFIG_FILE
    path.write_text(yaml.safe_dump(config_document(config, folder), sort_keys=False))
    return path


def folder_of(stack: Any) -> Path:
    """Where the stack's Prometheus files live: ``<flywheel home>/prometheus/<stack>``."""
    from stacks.paths import flywheel_home

    return flywheel_home() / "prometheus" / stack.name


def recorded_targets(stack: Any) -> list[Target]:
    """Every model service the stack's deployer recorded, as scrape targets (``host:port`` of its URL), and
    every running stream consumer that serves its metrics (``stacks.components.stream_endpoints``)."""
    from urllib.parse import urlparse

    from stacks.components import stream_endpoints
    from stacks.components.deployers import deployer_for

    infos, _ = deployer_for(stack).statuses()
    found = []
    for info in infos:
        where = urlparse(info.url)
        if where.hostname and where.port:
            found.append(Target(f"{where.hostname}:{where.port}", info.model_name, stack.name))
    for consumer in stream_endpoints.recorded(stack.name):
        found.append(Target(consumer.address, consumer.model, stack.name))
    return found


def refresh(stack: Any) -> Path | None:
    """Rewrite the stack's Prometheus files (config, rules, targets from the deployer's records); None
    when the stack names no metrics component."""
    if stack.metrics is None:
        return None
    folder = folder_of(stack)
    path = write_config(stack.metrics.configuration, folder)
    write_targets(folder, recorded_targets(stack))  # always: the last target gone is an empty file
    return path


class PrometheusUnavailable(RuntimeError):
    """The HTTP API did not answer, or answered an error: the message says which."""


class PrometheusAPI:
    """The few calls Flywheel makes: instant queries and the alerts."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.url = config.url.rstrip("/")
        self.timeout = config.timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        import requests

        try:
            answer = requests.get(f"{self.url}{path}", params=params, timeout=self.timeout)
            body = answer.json()
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus at {self.url}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        data = self._get("/api/v1/query", {"query": expr})
        return [(r["metric"], float(r["value"][1])) for r in data.get("result", [])]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts").get("alerts", []))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets").get("activeTargets", []))
