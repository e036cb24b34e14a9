"""``flywheel metrics``: the stack's Prometheus: write its files (``config``), and what it says now about
each model's SLOs and alerts (``status``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flywheel.cli_common import StackOption, fail

metrics_app = typer.Typer(
    help="The stack's Prometheus: its configuration and rules from the SLOs, and the SLOs' state.",
    no_args_is_help=True,
)


def _stack(stack: str | None) -> Any:
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
    except StackError as exc:
        fail(str(exc))
    if chosen.metrics is None:
        fail(f"{chosen.source}: the stack names no metrics component (flavor prometheus)")
    return chosen


@metrics_app.command("config")
def config(stack: StackOption = None) -> None:
    """Write prometheus.yml, rules.yml (from the stack's SLOs) and the targets (every service the
    stack's deployer recorded); print the configuration's path (what `make up` starts Prometheus with)."""
    from stacks.components import prometheus

    chosen = _stack(stack)
    path = prometheus.refresh(chosen)
    typer.echo(str(path))


@metrics_app.command("status")
def status(
    stack: StackOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each model's SLO figures (p99 latency, availability, error budget left, profiling loss, model age)
    and the alerts firing, from the stack's Prometheus. Exit 1 when an alert fires."""
    import json
    import math

    from stacks.components import prometheus

    chosen = _stack(stack)
    api = prometheus.PrometheusAPI(chosen.metrics.configuration)
    figures: dict[str, dict[str, float]] = {}
    try:
        for name, expr in prometheus.SLO_QUERIES.items():
            for labels, value in api.query(expr):
                figures.setdefault(labels.get("model", "?"), {})[name] = value
        firing = [a for a in api.alerts() if a.get("state") == "firing"]
    except prometheus.PrometheusUnavailable as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"models": figures, "firing": firing}, indent=2))
    else:
        for model, values in sorted(figures.items()):
            # NaN: a ratio of rates with no request in their window
            shown = ", ".join(
                f"{k} {'- (no requests lately)' if math.isnan(v) else f'{v:.4g}'}"
                for k, v in sorted(values.items())
            )
            typer.echo(f"{model}: {shown}")
        for alert in firing:
            labels = alert.get("labels", {})
            typer.echo(
                f"FIRING {labels.get('alertname')} ({labels.get('model', '-')}): "
                f"{alert.get('annotations', {}).get('summary', '')}"
            )
        if not figures and not firing:
            typer.echo("no figures yet: Prometheus has scraped no service")
    if firing:
        raise typer.Exit(1)


@metrics_app.command("dashboard")
def dashboard() -> None:
    """Print the Grafana dashboard (JSON) for the stack's Prometheus: import it in Grafana with the
    Prometheus data source (docs/grafana/flywheel-dashboard.json is this output)."""
    import json

    from stacks.components import grafana

    typer.echo(json.dumps(grafana.dashboard(), indent=2))
