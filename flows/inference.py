"""The batch inference flow: score any source ingest accepts with a registered model (the champion by
default), in chunks, into Parquet on the artifact store, with a whylogs profile of what was scored; and,
when the stack names a prediction store and the spec names its key columns, into that table, where the
service looks predictions up by key (``GET /predictions/{key}``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import lineage_events
from flows.cluster import dask_client
from flows.runtime import StackContext, compute_summary, ingest_joins, resolve_stack
from flows.tasks import StepTimer
from flywheel.contracts import layout
from flywheel.contracts.model_version import CHAMPION
from flywheel.contracts.problem import ProblemSpec, load_spec
from stacks.components.model_registry import load_model
from stacks.components.model_versions import alias_version
from stacks.components.prediction_store import PredictionWriter, key_kinds
from steps.data import features, ingest
from steps.inference import score_dask
from steps.inference.score import score_chunks


def prediction_writer(
    ctx: StackContext, spec: ProblemSpec, raw: pd.DataFrame, model_version: str, batch: str
) -> PredictionWriter | None:
    """The writer of the stack's prediction store for this run, its tables ready; None when the stack
    names no store or the spec no ``key_columns`` (nothing could be looked up)."""
    component = ctx.stack.prediction_store
    if component is None or not spec.key_columns:
        return None
    missing = [k for k in spec.key_columns if k not in raw.columns]
    if missing:
        raise ValueError(
            f"the spec's key_columns {missing} are not columns of the scored source (it has "
            f"{', '.join(map(str, raw.columns[:30]))}): fix key_columns or score a source with them"
        )
    url = ctx.stack.prediction_store_url()
    assert url is not None
    writer = PredictionWriter(
        url=url,
        table=component.configuration.table,
        model_name=spec.model_name,
        model_version=model_version,
        key_columns=key_kinds(raw[list(spec.key_columns)].dtypes.to_dict()),
        batch=batch,
        scored_at=datetime.now(UTC),
        timeout_s=component.configuration.timeout_s,
    )
    writer.prepare()
    return writer


@flow(name="batch-inference", log_prints=True)
@lineage_events.emits("inference")
def inference(
    problem: str,
    stack: str | None = None,
    source: str | None = None,
    alias: str = CHAMPION,
    version: str | None = None,
    chunk_rows: int = 100_000,
    sample_rows: int | None = None,
    keep_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Score ``source`` (default: the spec's) with ``MODEL@alias`` (or an explicit version).

    Output rows carry ``row``, their position in the input snapshot (recorded in the summary and in
    lineage), plus ``keep_columns`` from the input when given (identifiers to join on) and the spec's
    ``key_columns``. Those rows are upserted into the stack's prediction store when it names one. With the
    stack's compute engine ``dask`` the workers read the snapshot's row groups and score one partition each
    (features are then derived inside the score step); otherwise chunks of ``chunk_rows`` are scored here.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    ctx = resolve_stack(stack)
    spec = load_spec(problem)
    lineage_events.bind(ctx.stack, spec.name)
    timer = StepTimer()
    chosen = version or alias_version(spec.model_name, alias)
    if chosen is None:
        raise ValueError(f"no version of {spec.model_name!r} has the alias {alias!r}: train one first")
    model = timer.run(load_model, "load-model", spec.model_name, chosen, retries=2)
    uri = source or spec.source
    raw, snapshot = timer.run(
        ingest.ingest,
        "ingest",
        uri,
        ctx.store,
        ctx.validator,
        ctx.storage_options,
        sample_rows=sample_rows,
        row_group_rows=ctx.partition_rows,
        retries=2,
    )
    joined, join_snapshots = ingest_joins(timer, ctx, spec)
    lineage_events.model(spec.model_name, model.version)
    lineage_events.snapshot("source", snapshot)
    for join_name, join_snapshot in join_snapshots.items():
        lineage_events.snapshot(f"join:{join_name}", join_snapshot)
    output = layout.batch_output(spec.model_name, model.version, time.time(), snapshot.digest)
    sink = prediction_writer(ctx, spec, raw, model.version, ctx.store.uri(output))
    kept = list(dict.fromkeys([*(keep_columns or []), *(spec.key_columns if sink is not None else [])]))
    if ctx.engine == "dask":
        del raw  # the workers read the snapshot themselves
        with dask_client(ctx.stack) as client:
            result = timer.run(
                score_dask.score_partitions,
                "score",
                client,
                model,
                score_dask.read_snapshot(snapshot.uri, ctx.storage_options),
                spec,
                joined,
                ctx.store,
                ctx.validator,
                output,
                keep_columns=kept or None,
                sink=sink,
                retries=1,
            )
    else:
        derived = timer.run(
            features.derive, "features", raw, spec, joined, model.schema.classes, strict_label=False
        )
        encoded = timer.run(features.encode, "encode", derived, model.schema)
        result = timer.run(
            score_chunks,
            "score",
            model,
            encoded,
            ctx.store,
            ctx.validator,
            output,
            keys=raw[kept] if kept else None,
            chunk_rows=chunk_rows,
            sink=sink,
            retries=1,
        )
    lineage_events.dataset(ctx.store.uri(output), output=True)
    summary = {
        "model_name": spec.model_name,
        "version": model.version,
        "source": uri,
        "snapshot": snapshot.digest,
        "rows": result.rows,
        "parts": result.parts,
        "output": ctx.store.uri(output),
        "profile": result.profile_uri,
        "rows_per_second": result.rows_per_second,
        "predict_seconds": result.predict_seconds,
        "score_seconds": result.total_seconds,
        "positive_rate": result.positive_rate,
        "prediction_store": None
        if sink is None
        else {"table": sink.table, "keys": list(spec.key_columns), "stored": sink.stored(), "at": repr(sink)},
        "compute": compute_summary(ctx),
        "timings": dict(timer.seconds),
        "flow_s": time.perf_counter() - started,
    }
    create_table_artifact(
        [{"what": k, "value": str(v)} for k, v in summary.items() if k not in ("parts", "timings")],
        key=f"{spec.name}-batch-inference".replace("_", "-"),
        description=f"Batch scoring with {spec.model_name} v{model.version}",
    )
    logger.info(
        "scored %s rows with %s v%s into %s (%.0f rows/s)",
        f"{result.rows:,}",
        spec.model_name,
        model.version,
        summary["output"],
        result.rows_per_second,
    )
    return summary
