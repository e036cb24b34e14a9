"""stacks/config.py, scale-out keys: where a run's Dask cluster comes from; the mistakes that are errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from stacks.config import DaskCluster, StackError, parse_stack
from stacks.loader import load_stack

Doc = Callable[..., dict[str, Any]]


def _orchestrator(**config: Any) -> dict[str, Any]:
    return {"name": "runner", "flavor": "prefect", "configuration": config}


def _compute(flavor: str = "local", **config: Any) -> dict[str, Any]:
    return {"name": "cpu", "flavor": flavor, "configuration": config}


def test_local_stack_has_no_dask_cluster() -> None:
    stack = load_stack("local")
    assert stack.dask_cluster() is None  # the default stays threads and pandas: no cluster is started


def test_production_names_a_kubernetes_pool_and_a_scheduler() -> None:
    stack = load_stack("production")
    assert stack.orchestrator.configuration.work_pool_type == "kubernetes"
    assert stack.dask_cluster() == DaskCluster("orchestrator", "tcp://dask-scheduler.flywheel.svc:8786", 2, 1)
    assert stack.compute is not None and stack.compute.configuration.engine == "dask"


def test_orchestrator_dask_runner_names_a_local_cluster(minimal: Doc) -> None:
    doc = minimal(orchestrator=_orchestrator(task_runner="dask", dask_n_workers=3, dask_threads_per_worker=2))
    cluster = parse_stack(doc, "s.yaml").dask_cluster()
    assert cluster == DaskCluster("orchestrator", None, 3, 2)
    assert cluster.describe() == "Dask LocalCluster (3 workers x 2 threads)"


def test_compute_engine_dask_alone_gets_its_own_cluster(minimal: Doc) -> None:
    doc = minimal(compute=_compute(engine="dask"))
    assert parse_stack(doc, "s.yaml").dask_cluster() == DaskCluster("compute", None, 2, 1)
    doc = minimal(compute=_compute("dask", engine="dask", dask_address="tls://sched:8786"))
    cluster = parse_stack(doc, "s.yaml").dask_cluster()
    assert cluster == DaskCluster("compute", "tls://sched:8786", 2, 1)
    assert cluster.describe() == "Dask scheduler tls://sched:8786"


def test_compute_uses_the_orchestrators_cluster(minimal: Doc) -> None:
    doc = minimal(
        orchestrator=_orchestrator(task_runner="dask", dask_address="tcp://sched:8786"),
        compute=_compute("dask", engine="dask", device="cuda", partition_rows=50_000),
    )
    stack = parse_stack(doc, "s.yaml")
    assert stack.dask_cluster() == DaskCluster("orchestrator", "tcp://sched:8786", 2, 1)
    assert stack.compute is not None and stack.compute.configuration.device == "cuda"


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        (
            {"compute": _compute(dask_n_workers=4)},
            "s.yaml: component 'compute' (name 'cpu', flavor 'local'): dask_n_workers set but engine is "
            "'pandas'; set engine: dask",
        ),
        (
            {"compute": _compute(engine="dask", dask_address="tcp://s:8786", dask_n_workers=4)},
            "s.yaml: component 'compute' (name 'cpu', flavor 'local'): dask_n_workers and "
            "dask_threads_per_worker size a LocalCluster; a scheduler at dask_address has its own "
            "workers: give one or the other",
        ),
        (
            {"compute": _compute("dask")},
            "s.yaml: component 'compute' (name 'cpu', flavor 'dask'): flavor 'dask' computes on a Dask "
            "cluster but engine is 'pandas'; set engine: dask, or use flavor 'local'",
        ),
        (
            {"compute": _compute(engine="dask", dask_address="dask-scheduler:8786")},
            "s.yaml: component 'compute' (name 'cpu', flavor 'local'): key 'dask_address': dask_address "
            "must be a scheduler address such as tcp://dask-scheduler:8786 (got 'dask-scheduler:8786')",
        ),
        (
            {"orchestrator": _orchestrator(task_runner="dask", dask_address="http://sched:8786")},
            "s.yaml: component 'orchestrator' (name 'runner', flavor 'prefect'): key 'dask_address': "
            "dask_address must be a scheduler address such as tcp://dask-scheduler:8786 "
            "(got 'http://sched:8786')",
        ),
        (
            {"compute": _compute(engine="dask", partition_rows=10)},
            "s.yaml: component 'compute' (name 'cpu', flavor 'local'): key 'partition_rows': Input should "
            "be greater than or equal to 1000 (got 10)",
        ),
        (
            {
                "orchestrator": _orchestrator(task_runner="dask"),
                "compute": _compute(engine="dask", dask_address="tcp://other:8786"),
            },
            "s.yaml: component 'compute' (name 'cpu', flavor 'local'): dask_address set, but the "
            "orchestrator's Dask task runner already names the run's cluster; set them on the "
            "orchestrator only",
        ),
    ],
)
def test_dask_mistakes_are_precise_errors(minimal: Doc, components: dict[str, Any], expected: str) -> None:
    with pytest.raises(StackError) as caught:
        parse_stack(minimal(**components), "s.yaml")
    assert str(caught.value) == expected
