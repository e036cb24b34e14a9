"""The run's Dask client, opened by the flow and handed to steps as a plain argument.

Steps never look for a cluster themselves: the flow (the Prefect layer) decides from the stack whether
there is one and where it is, so a step is tested with any ``distributed.Client`` and the local stack,
which names no Dask, pays nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stacks.config import Stack

log = logging.getLogger(__name__)


def _active_dask_runner() -> Any | None:
    """The flow run's DaskTaskRunner, when the flow was started with one (``flywheel run`` does that)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if runner is None or type(runner).__name__ != "DaskTaskRunner":
        return None
    return runner


@contextmanager
def dask_client(stack: Stack) -> Iterator[Any | None]:
    """Yield a ``distributed.Client`` for the stack's Dask cluster, or None when the stack names none.

    Under the orchestrator's DaskTaskRunner the runner's own cluster is reused (Prefect closes it);
    otherwise a scheduler address is connected to, or a LocalCluster started for this run and closed
    after it.
    """
    cluster = stack.dask_cluster()
    if cluster is None:
        yield None
        return
    runner = _active_dask_runner() if cluster.named_by == "orchestrator" else None
    if runner is not None:
        log.info("Dask: the task runner's cluster")
        yield runner.client
        return
    from distributed import Client, LocalCluster

    log.info("Dask: %s", cluster.describe())
    if cluster.address:
        with Client(cluster.address, timeout="30s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=cluster.n_workers,
            threads_per_worker=cluster.threads_per_worker,
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client
