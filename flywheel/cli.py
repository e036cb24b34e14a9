"""The ``flywheel`` command. Heavy libraries (Prefect, MLflow, XGBoost) are imported inside commands so
``flywheel --help`` answers at once."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flywheel.service_cli import service_app
from stacks.cli import stack_app

if TYPE_CHECKING:
    from stacks.config import Stack

app = typer.Typer(
    help="Flywheel: train, register, serve and monitor models, on the stack you choose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
run_app = typer.Typer(help="Run a flow once on a stack.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(stack_app, name="stack")
app.add_typer(service_app, name="service")

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="stack name or file (default: FLYWHEEL_STACK, then `flywheel stack use`, then local)",
    ),
]


@run_app.command("training")
def run_training(
    stack: StackOption = None,
    problem: Annotated[
        str, typer.Option(help="problem spec name (flows/problems/NAME.yaml) or path")
    ] = "flights",
    trials: Annotated[int | None, typer.Option(help="Optuna trials (default: the spec's)")] = None,
    timeout: Annotated[float | None, typer.Option(help="tuning time budget in seconds")] = None,
    sample_rows: Annotated[
        int | None, typer.Option(help="train on a seeded sample of this many rows")
    ] = None,
    no_pruning: Annotated[bool, typer.Option("--no-pruning", help="disable Optuna pruning")] = False,
    seed: int = 42,
    reason: str = "manual",
) -> None:
    """Ingest, validate, tune, train, evaluate, explain, register and (if it passes the gate) promote."""
    from flows.runtime import task_runner

    chosen = _prepared(stack)
    from flows.training import training
    from steps.data.sources import SourceError
    from steps.data.validate import DataValidationError
    from steps.problem import SpecError

    try:
        result = training.with_options(task_runner=task_runner(chosen))(
            stack=stack or chosen.name,
            problem=problem,
            n_trials=trials,
            timeout_s=timeout,
            sample_rows=sample_rows,
            pruning=not no_pruning,
            seed=seed,
            reason=reason,
        )
    except (DataValidationError, SourceError, SpecError, ValueError) as exc:
        typer.secho(f"training failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    _print_where_to_look(chosen, result)


def _prepared(stack: str | None) -> Stack:
    from flows.runtime import prepare_prefect
    from stacks.config import StackError

    try:
        return prepare_prefect(stack)
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@run_app.command("inference")
def run_inference(
    stack: StackOption = None,
    problem: Annotated[str, typer.Option(help="problem spec name or path")] = "flights",
    source: Annotated[str | None, typer.Option(help="URI to score (default: the spec's source)")] = None,
    alias: str = "champion",
    chunk_rows: int = 100_000,
    sample_rows: Annotated[int | None, typer.Option(help="score a seeded sample of this many rows")] = None,
) -> None:
    """Score a source with MODEL@alias into Parquet on the stack's artifact store."""
    chosen = _prepared(stack)
    from flows.inference import inference

    try:
        result = inference(
            stack=stack or chosen.name,
            problem=problem,
            source=source,
            alias=alias,
            chunk_rows=chunk_rows,
            sample_rows=sample_rows,
        )
    except ValueError as exc:
        typer.secho(f"inference failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"scored {result['rows']:,} rows with {result['model_name']} v{result['version']} "
        f"({result['rows_per_second']:,.0f} rows/s) into {result['output']}"
    )


@run_app.command("monitoring")
def run_monitoring(
    stack: StackOption = None,
    problem: Annotated[str, typer.Option(help="problem spec name or path")] = "flights",
    no_event: Annotated[bool, typer.Option("--no-event", help="report only, emit no drift event")] = False,
) -> None:
    """Compare the champion's serving windows with its training profile; emit the drift event if due."""
    chosen = _prepared(stack)
    from flows.monitoring import monitoring

    try:
        result = monitoring(stack=stack or chosen.name, problem=problem, emit=not no_event)
    except ValueError as exc:
        typer.secho(f"monitoring failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{result['model_name']} v{result['version']}: {result['reason']}")
    typer.echo(f"report: {result['report']}")


@app.command("replay")
def replay_command(
    from_month: Annotated[str, typer.Option("--from", help="first month, e.g. 2013-10")] = "2013-10",
    to_month: Annotated[str, typer.Option("--to", help="last month, e.g. 2013-12")] = "2013-12",
    rate: Annotated[float, typer.Option(help="requests per second")] = 20.0,
    limit: Annotated[int, typer.Option(help="at most this many flights")] = 5000,
    duration: Annotated[float, typer.Option(help="stop after this many seconds")] = 600.0,
    feedback_delay: Annotated[float, typer.Option(help="seconds before each true outcome is posted")] = 5.0,
    url: Annotated[str, typer.Option(help="the service")] = "http://127.0.0.1:8080",
    problem: str = "flights",
) -> None:
    """Send later months' real flights to the service, then their true outcomes to /feedback."""
    import os

    from flywheel.replay import month_range, replay

    result = replay(
        url.rstrip("/"),
        month_range(from_month, to_month),
        rate=rate,
        limit=limit,
        duration=duration,
        feedback_delay=feedback_delay,
        problem=problem,
        token=os.environ.get("FLYWHEEL_API_TOKEN"),
    )
    typer.echo(
        f"sent {result.sent} requests in {result.seconds:.1f}s, {result.failed} failed, "
        f"{result.rejected} rejected as invalid, "
        f"{result.feedback_sent} labels posted; statuses {dict(result.statuses)}; "
        f"versions {dict(result.versions)}"
    )
    if result.failed:
        raise typer.Exit(1)


def _print_where_to_look(stack: Stack, result: dict[str, Any]) -> None:
    from stacks.paths import flywheel_home

    tracking = stack.mlflow_tracking_uri()
    metrics: dict[str, float] = result.get("metrics", {})
    typer.echo("")
    typer.secho(
        f"Model {result['model_name']} v{result['version']}: "
        f"{'promoted to champion' if result['promoted'] else 'not promoted'} ({result['reason']})",
        bold=True,
    )
    typer.echo("Test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "test_rows"))
    typer.echo(f"Champion: {result['model_name']}@champion = v{result['champion_version']}")
    typer.echo("")
    typer.echo("Where to look:")
    if tracking and tracking.startswith(("http://", "https://")):
        typer.echo(f"  MLflow UI:   {tracking}")
    else:
        typer.echo(
            f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {tracking} --port 5000   "
            "then http://127.0.0.1:5000"
        )
    api_url = stack.orchestrator.configuration.api_url
    if api_url:
        typer.echo(f"  Prefect UI:  {api_url.removesuffix('/').removesuffix('/api')}")
    else:
        typer.echo(
            f"  Prefect UI:  PREFECT_HOME={flywheel_home() / 'prefect'} .venv/bin/prefect server start   "
            "then http://127.0.0.1:4200"
        )
    typer.echo(f"  Lineage:     .venv/bin/flywheel lineage {result['model_name']}@champion")


@app.command()
def serve(
    stack: StackOption = None,
    host: Annotated[str | None, typer.Option(help="default: the stack's model_deployer host")] = None,
    port: Annotated[int | None, typer.Option(help="default: the stack's model_deployer port")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn workers (default: the stack's)")] = None,
    model: Annotated[
        str | None, typer.Option(help="registered model name (default: FLYWHEEL_MODEL, then flight-delay)")
    ] = None,
) -> None:
    """Serve models:/MODEL@champion in the foreground (FastAPI + uvicorn), hot-swapping when it moves.

    The server's timeouts and connection limits are the stack's (model_deployer ``server``)."""
    import os

    import uvicorn

    from stacks.components.deployers.base import APP_FACTORY, stack_reference
    from stacks.components.deployers.server_options import uvicorn_options
    from stacks.config import LocalDeployerConfig, StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    config = chosen.model_deployer.configuration if chosen.model_deployer else LocalDeployerConfig()
    # the service and its workers load exactly this stack: a file stays a file (its name may be no stack's)
    os.environ["FLYWHEEL_STACK"] = stack_reference(chosen)
    os.environ["FLYWHEEL_MODEL"] = model or os.environ.get("FLYWHEEL_MODEL") or "flight-delay"
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # halves CPU per request at equal latency (DESIGN)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host or str(getattr(config, "host", "127.0.0.1")),
        port=port or config.port,
        workers=workers or getattr(config, "workers", 1),
        log_level="info",
        access_log=False,  # a line per request cost 14-18% of throughput (measured); /metrics counts requests
        **uvicorn_options(config.server),
    )


@app.command()
def lineage(
    reference: Annotated[
        str, typer.Argument(help="MODEL@ALIAS or MODEL/VERSION, e.g. flight-delay@champion")
    ],
    stack: StackOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Walk a model version back to the data it learned from."""
    from mlflow.exceptions import MlflowException

    from flywheel.lineage import lineage as walk
    from stacks.components.tracking import configure_mlflow
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        configure_mlflow(load_stack(selected_stack_name(stack)))
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        found = walk(reference)
    except MlflowException as exc:
        typer.secho(f"no such model version {reference!r}: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(found.__dict__, indent=2))
    else:
        typer.echo("\n".join(found.lines()))


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
