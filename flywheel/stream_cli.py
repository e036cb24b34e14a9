"""``flywheel stream``: the champion scores a Redis stream (``serve``), records go in (``send``) and the
streams' state comes out (``status``). The stack's ``stream`` component names the Redis and the streams;
the wire format is :mod:`flywheel.contracts.stream`; the consumer is :mod:`serving.stream`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from flywheel.cli_common import ModelOption, ProblemOption, StackOption, fail, model_or_fail

stream_app = typer.Typer(
    help="Streaming: the champion scores records from a Redis stream into another, at least once.",
    no_args_is_help=True,
)
MAX_SEND_LINE = 64 * 1_048_576
"""The longest line ``send`` reads (the consumer's own limit, max_record_bytes, is what refuses a record)."""


def _stack(stack: str | None) -> Any:
    from serving.stream.service import NoStream, stream_of
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name

    try:
        chosen = load_stack(selected_stack_name(stack))
        stream_of(chosen)
        return chosen
    except (StackError, NoStream) as exc:
        fail(str(exc))


def _client(chosen: Any) -> Any:
    import redis

    config = chosen.stream.configuration
    return redis.Redis.from_url(
        chosen.stream_url(), socket_connect_timeout=config.timeout_s, socket_timeout=config.timeout_s
    )


@stream_app.command("serve")
def serve(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    name: Annotated[
        str | None, typer.Option("--name", help="consumer name in the group (default: <host>-<pid>)")
    ] = None,
    profiling: Annotated[
        bool, typer.Option("--profiling/--no-profiling", help="profile the traffic for monitoring")
    ] = True,
    watch_interval_s: Annotated[
        float | None, typer.Option("--watch-interval", min=0.1, help="seconds between champion checks")
    ] = None,
) -> None:
    """Score the model's request stream with its champion until SIGTERM or Ctrl-C (the read in hand is
    finished and acknowledged first); predictions and dead letters go to the stack's streams."""
    import logging
    import os
    import signal
    import threading

    from serving.stream.service import serve as serve_stream

    chosen = _stack(stack)
    model_name = model_or_fail(model, problem)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a log, not a terminal
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    counts = serve_stream(
        stack or chosen.name,
        model_name,
        stop,
        consumer_name=name,
        profiling=profiling,
        watch_interval_s=watch_interval_s,
    )
    typer.echo(
        f"stopped: {counts.predicted:,} predicted, {counts.dead_letters:,} dead letters, "
        f"{counts.claimed:,} claimed from other consumers, in {counts.reads:,} reads"
    )


TABLE_SUFFIXES = (".csv", ".parquet")


def _lines(source: str, chosen: Any, model_name: str) -> Iterator[bytes]:
    """The records of SOURCE, one JSON object each: a JSON lines file's lines as they are, or a CSV or
    Parquet file's rows with the champion's feature columns (missing ones null, others left out)."""
    if source == "-":
        yield from iter(lambda: sys.stdin.buffer.readline(MAX_SEND_LINE), b"")
        return
    path = Path(source)
    if not path.is_file():
        fail(f"{source}: no such file")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        with path.open("rb") as handle:
            yield from iter(lambda: handle.readline(MAX_SEND_LINE), b"")
        return
    import pandas as pd

    from stacks.components.model_versions import by_alias, feature_schema
    from stacks.components.tracking import configure_mlflow

    configure_mlflow(chosen, create_experiment=False)
    champion = by_alias(model_name)
    if champion is None or not champion.run_id:
        fail(f"{model_name} has no champion: its feature columns choose what a row sends")
    names = feature_schema(champion.run_id).names
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    for start in range(0, len(frame), 10_000):
        part = frame.iloc[start : start + 10_000].reindex(columns=names)
        yield from (line.encode() for line in part.to_json(orient="records", lines=True).splitlines())


@stream_app.command("send")
def send(
    source: Annotated[
        str, typer.Argument(help="JSON lines file (one record a line), a CSV or Parquet file, or - (stdin)")
    ],
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    rate: Annotated[
        float, typer.Option(min=0.0, help="records per second (0: as fast as Redis takes them)")
    ] = 0.0,
) -> None:
    """Add SOURCE's records to the model's request stream (``record`` field); the consumer judges each
    as ``POST /predict`` would. A CSV or Parquet row sends the champion's feature columns."""
    import redis

    from flywheel.contracts.stream import RECORD_FIELD

    chosen = _stack(stack)
    model_name = model_or_fail(model, problem)
    stream, _, _ = chosen.stream.configuration.stream_names(model_name)
    client = _client(chosen)
    sent, started = 0, time.monotonic()
    try:
        pipe = client.pipeline(transaction=False)
        for raw in _lines(source, chosen, model_name):
            line = raw.strip()
            if not line:
                continue
            pipe.xadd(stream, {RECORD_FIELD: line})
            sent += 1
            if rate:
                pipe.execute()
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
            elif sent % 500 == 0:
                pipe.execute()
        pipe.execute()
    except redis.RedisError as exc:
        fail(f"Redis: {exc} (after {sent:,} records)")
    typer.echo(f"sent {sent:,} records to {stream}")


@stream_app.command("peek")
def peek(
    stack: StackOption = None,
    model: ModelOption = None,
    problem: ProblemOption = None,
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="the dead letters instead")] = False,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="how many")] = 5,
) -> None:
    """The newest predictions (or dead letters) of the model's streams, newest first, one JSON a line."""
    import json

    import redis

    chosen = _stack(stack)
    model_name = model_or_fail(model, problem)
    _, output, dead = chosen.stream.configuration.stream_names(model_name)
    try:
        entries = _client(chosen).xrevrange(dead if dead_letters else output, count=count)
    except redis.RedisError as exc:
        fail(f"Redis: {exc}")
    for entry_id, fields in entries:
        shown = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        typer.echo(json.dumps({"id": entry_id.decode(), **shown}))


@stream_app.command("status")
def status(stack: StackOption = None, model: ModelOption = None, problem: ProblemOption = None) -> None:
    """Each stream's length, and the consumer group's pending records, lag and consumers."""
    import redis

    chosen = _stack(stack)
    model_name = model_or_fail(model, problem)
    config = chosen.stream.configuration
    client = _client(chosen)
    try:
        for what, stream in zip(
            ("requests", "predictions", "dead letters"), config.stream_names(model_name), strict=True
        ):
            length = client.xlen(stream)
            typer.echo(f"{what:<13} {stream}: {length:,} entr{'y' if length == 1 else 'ies'}")
        requests = config.stream_names(model_name)[0]
        groups = (
            {g["name"].decode(): g for g in client.xinfo_groups(requests)} if client.exists(requests) else {}
        )
        group = groups.get(config.group)
        if group is None:
            typer.echo(f"group         {config.group!r}: not created yet (the first consumer creates it)")
            return
        lag = group.get("lag")
        typer.echo(
            f"group         {config.group!r}: {group['pending']:,} pending (taken, not acknowledged), "
            f"lag {'unknown' if lag is None else f'{lag:,}'} (not taken yet)"
        )
        for consumer in client.xinfo_consumers(requests, config.group):
            typer.echo(
                f"consumer      {consumer['name'].decode()}: {consumer['pending']:,} pending, "
                f"idle {consumer['idle'] / 1000:.1f} s"
            )
    except redis.RedisError as exc:
        fail(f"Redis: {exc}")
