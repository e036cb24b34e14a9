"""Nothing outside flywheel/contracts spells a contract's strings, and only one module calls MLflow's version
API: a tag key, an artifact-store path, an event name or an alias written inline is a second definition
that the next change to the contract misses.

The source is read as Python (``ast``): docstrings and comments may name a key for the reader, code may not.
The allow-list is explicit, each entry with its reason.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flywheel.contracts import events, layout
from flywheel.contracts import model_version as mv

ROOT = Path(__file__).resolve().parents[3]
SOURCE_ROOTS = ("flywheel", "flows", "steps", "stacks", "serving", "benchmarks", "experiments")
CONTRACTS = ROOT / "flywheel" / "contracts"
VERSIONS_MODULE = "stacks/components/model_versions.py"

_RUN_PARAMETER = "a run parameter (shown beside the hyper-parameters), not a tag"
ALLOWED: dict[tuple[str, str], str] = {
    ("benchmarks/serving_setup.py", "flywheel.bench"): "a benchmark's own run tag, read by nobody",
    ("benchmarks/serving_setup.py", "feature_schema.json"): "the benchmark's local copy, not a run's",
    ("steps/model/track.py", "dataset.digest"): _RUN_PARAMETER,
    ("steps/model/track.py", "dataset.source"): _RUN_PARAMETER,
}
ALLOWED_API_CALLERS = {
    "benchmarks/": "the benchmarks move aliases by hand (timed, as an operator in the MLflow UI would) to "
    "stage hot swaps and registry faults",
}
MLFLOW_VERSION_API = {
    "create_model_version",
    "delete_model_version_tag",
    "delete_registered_model_alias",
    "get_model_version",
    "get_model_version_by_alias",
    "register_model",
    "search_model_versions",
    "set_model_version_tag",
    "set_registered_model_alias",
}

TAG_KEYS = {
    value
    for name, value in vars(mv).items()
    if name.isupper() and isinstance(value, str) and value.startswith("flywheel.")
}
TAG_SHAPE = re.compile(r"^flywheel\.[a-z_]+(\.[a-z_-]+)*\.?$")
TAG_FAMILIES = ("dataset.", "promotion.", "service.")
LAYOUT_TOPS = tuple(
    f"{top}/"
    for top in (layout.SNAPSHOTS, layout.MODELS, layout.SERVING, layout.INFERENCE, layout.MONITORING)
)
LAYOUT_FILES = (
    layout.TRAINING_REFERENCE,
    layout.REQUEST_ID_KEY.rsplit("/", 1)[-1],
    mv.artifact_file(mv.FEATURE_SCHEMA_ARTIFACT),
    mv.artifact_file(mv.TRAINING_PROFILE_ARTIFACT),
)
LAYOUT_PIECES = (
    "/part-",
    "/profile.bin",
    "/meta.json",
    "/data.parquet",
    "/state.json",
    "/reports/",
    "/profiles/",
)
ALIASES = (mv.CHAMPION, mv.CHALLENGER)


@dataclass(frozen=True)
class Found:
    path: str
    line: int
    value: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.value!r}"


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for top in SOURCE_ROOTS:
        for file in sorted((ROOT / top).rglob("*.py")):
            if CONTRACTS in file.parents:
                continue
            yield file.relative_to(ROOT).as_posix(), ast.parse(file.read_text(), str(file))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the constants that are docstrings (or bare string statements, which document the line above)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _logger_names(tree: ast.Module) -> set[int]:
    return {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getLogger"
        for arg in node.args
    }


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of each string in the code, f-strings' literal pieces included."""
    skip = _docstrings(tree) | _logger_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _scan(matches: Callable[[str], bool]) -> list[Found]:
    return [
        Found(path, line, value)
        for path, tree in _sources()
        for line, value in _strings(tree)
        if (path, value) not in ALLOWED and matches(value)
    ]


def _is_tag_key(value: str) -> bool:
    if value in TAG_KEYS or TAG_SHAPE.match(value):
        return True
    return value.startswith(TAG_FAMILIES) or value.startswith(tuple(f".{f}" for f in TAG_FAMILIES))


def _is_layout(value: str) -> bool:
    return (
        value.startswith(LAYOUT_TOPS)
        or value.startswith(LAYOUT_PIECES)
        or any(f in value for f in LAYOUT_FILES)
    )


def _is_event(value: str) -> bool:
    return value in events.EVENTS or value.startswith((events.RESOURCE_PREFIX, "prefect.resource."))


def test_the_scan_sees_the_old_spellings() -> None:
    """The matchers catch each way keys and paths used to be written (else the tests below prove nothing)."""
    assert all(
        _is_tag_key(v) for v in ("flywheel.promotion.reason", "flywheel.warnings", ".dataset.snapshot")
    )
    assert all(_is_tag_key(v) for v in ("dataset.join.", "flywheel.service.url", "flywheel.training_profile"))
    assert all(
        _is_layout(v) for v in ("serving/", "models/", "/training_profile.bin", "snapshots/", "/part-")
    )
    assert all(
        _is_layout(v) for v in ("serving/request-id.key", "monitoring/", "model_meta/feature_schema.json")
    )
    assert all(_is_event(v) for v in ("flywheel.model.promoted", "flywheel.model.", "prefect.resource.id"))
    assert not any(_is_tag_key(v) for v in ("flywheel", "flywheel_threshold", "flywheel.io/stack", "reason"))
    assert not _is_layout("models:/flight-delay/1") and not _is_event("flywheel.model=flight-delay")


def test_no_module_spells_a_tag_key() -> None:
    found = _scan(_is_tag_key)
    assert not found, "tag keys spelt outside flywheel/contracts/model_version.py:\n" + "\n".join(
        map(str, found)
    )


def test_no_module_spells_an_artifact_store_path() -> None:
    found = _scan(_is_layout)
    assert not found, "store paths spelt outside flywheel/contracts/layout.py:\n" + "\n".join(map(str, found))


def test_no_module_spells_an_event_name() -> None:
    found = _scan(_is_event)
    assert not found, "event names spelt outside flywheel/contracts/events.py:\n" + "\n".join(map(str, found))


def test_no_module_spells_an_alias() -> None:
    """An alias passed to a call or given as a parameter's default is spelt where it is used."""
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                values = [*node.args, *(k.value for k in node.keywords)]
            elif isinstance(node, ast.arguments):
                values = [*node.defaults, *(d for d in node.kw_defaults if d is not None)]
            else:
                continue
            found += [
                Found(path, v.lineno, v.value)
                for v in values
                if isinstance(v, ast.Constant) and v.value in ALIASES
            ]
    assert not found, "aliases spelt outside flywheel/contracts/model_version.py:\n" + "\n".join(
        map(str, found)
    )


def test_one_module_calls_mlflows_version_api() -> None:
    found = []
    for path, tree in _sources():
        if path == VERSIONS_MODULE or path.startswith(tuple(ALLOWED_API_CALLERS)):
            continue
        for node in ast.walk(tree):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in MLFLOW_VERSION_API:
                found.append(Found(path, func.lineno, func.attr))
    assert not found, f"model versions read or written outside {VERSIONS_MODULE}:\n" + "\n".join(
        map(str, found)
    )


@pytest.mark.parametrize(("path", "value"), sorted(ALLOWED))
def test_each_allowance_is_still_needed(path: str, value: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    assert value in {text for _, text in _strings(tree)}, (
        f"{path} no longer spells {value!r}: drop it from ALLOWED"
    )
