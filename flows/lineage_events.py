"""OpenLineage run events of a flow: START when it knows its stack and problem, COMPLETE or FAIL at the end.

A flow is decorated with :func:`emits` (under ``@flow``) and, once it has resolved its stack and spec,
calls :func:`bind`; afterwards :func:`snapshot`, :func:`dataset` and :func:`model` add the run's inputs
and outputs as it learns them. The events use the client's own classes (``event_v2``, ``facet_v2``): a
content-addressed snapshot carries its digest in the standard ``version`` facet and in
``flywheelSnapshot`` (digest, role, rows, original source), a model version is the dataset
``models/<name>/<version>``. A flow that fails before :func:`bind` emits nothing (it has no stack to
send to); a transport that fails logs a warning and the flow goes on.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlparse

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
)
from openlineage.client.uuid import generate_new_uuid
from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from flywheel.contracts.model_version import models_uri
from stacks.components.lineage import LineageSink, sink_for
from stacks.config import Stack
from steps.data.ingest import Snapshot

PRODUCER = "https://github.com/flywheel-ml/flywheel"
NAMESPACE = "flywheel"
"""The namespace of Flywheel's jobs and of its model versions (a registry URI may carry credentials)."""

P = ParamSpec("P")
R = TypeVar("R")


@attr.define
class FlywheelSnapshotDatasetFacet(DatasetFacet):
    """A Flywheel snapshot: its content digest, what the run used it for, its rows and original source."""

    digest: str
    role: str
    rows: int
    sourceUri: str  # OpenLineage facets are camelCase

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/blob/main/docs/lineage/FlywheelSnapshotDatasetFacet.json"


@attr.define
class FlywheelWindowsDatasetFacet(DatasetFacet):
    """The serving windows of a version that a monitoring run checked."""

    windows: list[str]

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/blob/main/docs/lineage/FlywheelWindowsDatasetFacet.json"


@dataclass
class LineageRun:
    """One flow run's lineage: its job, its datasets so far and where its events go."""

    job_type: str
    sink: LineageSink | None = None
    job_name: str = ""
    run_id: str = field(default_factory=lambda: str(generate_new_uuid()))
    inputs: dict[tuple[str, str], InputDataset] = field(default_factory=dict)
    outputs: dict[tuple[str, str], OutputDataset] = field(default_factory=dict)

    def event(self, state: RunState, error: BaseException | None = None) -> RunEvent:
        """The run event of ``state`` with every dataset recorded so far."""
        run_facets: dict[str, Any] = {}
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{type(error).__name__}: {error}"[:2000],
                programmingLanguage="python",
                stackTrace="".join(traceback.format_exception(error))[-8000:],
                producer=PRODUCER,
            )
        job_facets: dict[str, JobFacet] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH",
                integration="FLYWHEEL",
                jobType=self.job_type.upper(),
                producer=PRODUCER,
            )
        }
        return RunEvent(
            eventType=state,
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=self.run_id, facets=run_facets),
            job=Job(namespace=NAMESPACE, name=self.job_name, facets=job_facets),
            inputs=list(self.inputs.values()),
            outputs=list(self.outputs.values()),
            producer=PRODUCER,
        )

    def send(self, state: RunState, error: BaseException | None = None) -> None:
        if self.sink is None:
            return
        problem = self.sink.emit(self.event(state, error))
        if problem is not None:
            where = self.sink.where
            _warn(f"OpenLineage {state.value} event of {self.job_name} not delivered to {where}: {problem}")


_current: contextvars.ContextVar[LineageRun | None] = contextvars.ContextVar("lineage_run", default=None)


def emits(job_type: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a flow function: its run emits START (at :func:`bind`), then COMPLETE, or FAIL when it
    raises (the exception still propagates)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            lineage = LineageRun(job_type)
            token = _current.set(lineage)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                lineage.send(RunState.FAIL, exc)
                raise
            finally:
                _current.reset(token)
            lineage.send(RunState.COMPLETE)
            return result

        # Prefect builds its parameter model from the signature, resolving string annotations in the
        # function's globals (this module's, for the wrapper): hand it the annotations already resolved
        run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        return run

    return wrap


def bind(stack: Stack, problem: str) -> None:
    """The flow knows its stack and problem: name the job ``<problem>.<job type>`` and emit START."""
    lineage = _current.get()
    if lineage is None or lineage.sink is not None:
        return
    lineage.sink = sink_for(stack)
    lineage.job_name = f"{problem}.{lineage.job_type}"
    lineage.send(RunState.START)


def split_uri(uri: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) of a file or object: ``s3://bucket`` and the key, ``file`` and the
    absolute path for a local one."""
    parsed = urlparse(uri)
    if parsed.scheme and parsed.scheme != "file" and len(parsed.scheme) > 1:  # not a Windows drive
        return f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/") or "/"
    return "file", parsed.path if parsed.scheme == "file" else uri


def dataset(uri: str, *, output: bool = False, facets: dict[str, Any] | None = None) -> None:
    """Record a file or folder the run read (or, ``output``, wrote)."""
    namespace, name = split_uri(uri)
    _add(namespace, name, output, facets or {})


def snapshot(role: str, snap: Snapshot | None) -> None:
    """Record a content-addressed snapshot the run read, its digest in the ``version`` facet."""
    if snap is None:
        return
    dataset(
        snap.uri,
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=snap.digest, producer=PRODUCER
            ),
            "flywheelSnapshot": FlywheelSnapshotDatasetFacet(
                digest=snap.digest, role=role, rows=snap.rows, sourceUri=snap.source_uri, producer=PRODUCER
            ),
        },
    )


def model(name: str, version: str, *, output: bool = False) -> None:
    """Record a registered model version, the dataset named by its registry URI ``models:/<name>/<version>``
    (namespace ``flywheel``: the registry's own address may carry credentials)."""
    facets = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=version, producer=PRODUCER
        )
    }
    _add(NAMESPACE, models_uri(name, version), output, facets)


def serving_windows(uri: str, names: list[str]) -> None:
    """Record a version's serving profiles the run read, the windows it checked in a facet."""
    dataset(uri, facets={"flywheelWindows": FlywheelWindowsDatasetFacet(windows=names, producer=PRODUCER)})


def _add(namespace: str, name: str, output: bool, facets: dict[str, Any]) -> None:
    lineage = _current.get()
    if lineage is None:
        return
    if output:
        lineage.outputs[(namespace, name)] = OutputDataset(namespace=namespace, name=name, facets=facets)
    else:
        lineage.inputs[(namespace, name)] = InputDataset(namespace=namespace, name=name, facets=facets)


def _warn(message: str) -> None:
    """A warning in the flow run's log (or the module's logger outside a run)."""
    try:
        get_run_logger().warning("%s", message)
    except MissingContextError:
        logging.getLogger(__name__).warning("%s", message)
