"""Finding, reading and selecting stacks by name.

A stack is identified by a name, never a per-machine id (ZenML's UUIDs differ on every
machine), so `FLYWHEEL_STACK=staging` means the same thing in CI, on a worker and on a laptop.
Names resolve to the files shipped in this folder first, then to stacks imported into
`flywheel_home()/stacks/`. Selection, first wins: an explicit name (`--stack`, a flow
parameter), `$FLYWHEEL_STACK`, the file written by `flywheel stack use`, then `local`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from stacks.config import STACK_NAME_PATTERN, Stack, StackError, parse_stack
from stacks.paths import flywheel_home
from stacks.selection import looks_like_path, remember_choice, remembered_choice

__all__ = [
    "STACKS_DIR",
    "active_stack_file",
    "imported_stacks_dir",
    "list_stacks",
    "load_stack",
    "read_yaml",
    "selected_stack_name",
    "stack_file",
    "stack_selection",
    "use_stack",
]

STACKS_DIR = Path(__file__).resolve().parent
DEFAULT_STACK = "local"


def imported_stacks_dir() -> Path:
    """Where `flywheel stack import` writes stacks (outside the package, per flywheel home)."""
    return flywheel_home() / "stacks"


def active_stack_file() -> Path:
    """The file `flywheel stack use` writes: one line, a stack name or a path."""
    return flywheel_home() / "active_stack"


def display_path(path: Path) -> str:
    """A path as error messages show it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently resolve to the last one.

    A stack file with two `orchestrator:` entries must fail, not quietly use the second.
    """


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:
            continue  # unhashable key: the default constructor reports it with its position
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {first}); a stack has at most one component "
                "per type and each key once",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """`line 6, column 3: <problem>` rather than PyYAML's multi-line report."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        parts = "; ".join(p for p in (exc.context, exc.problem) if p)
        return f"line {mark.line + 1}, column {mark.column + 1}: {parts}"
    return " ".join(str(exc).split())


def read_yaml(path: Path) -> Any:
    """Parse a YAML file strictly (duplicate keys are errors); StackError names the file on failure."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(f"{shown}: cannot read the file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        detail = _describe_yaml_error(exc)
        hint = ""
        if "unhashable" in detail:
            hint = ' (secret references must be quoted: key: "{{name.key}}")'
        raise StackError(f"{shown}: invalid YAML: {detail}{hint}") from None
    if data is None:
        raise StackError(f"{shown}: the file is empty; a stack needs stack_name and components")
    return data


def list_stacks() -> list[str]:
    """Names of the shipped stacks and of those imported into flywheel home, sorted, no duplicates."""
    names = {p.stem for p in STACKS_DIR.glob("*.yaml")}
    if imported_stacks_dir().is_dir():
        names |= {p.stem for p in imported_stacks_dir().glob("*.yaml")}
    return sorted(names)


def stack_selection(explicit: str | None) -> tuple[str, str]:
    """(name, where it came from) by the selection order."""
    if explicit:
        return explicit, "given explicitly"
    remembered = remembered_choice("FLYWHEEL_STACK", active_stack_file(), "flywheel stack use")
    return remembered if remembered is not None else (DEFAULT_STACK, "the default")


def selected_stack_name(explicit: str | None = None) -> str:
    """The stack to use: `explicit`, else $FLYWHEEL_STACK, else the `stack use` file, else `local`."""
    return stack_selection(explicit)[0]


def stack_file(name: str) -> Path | None:
    """The file for a stack name: shipped stacks first, then imported ones; None if there is none."""
    if not re.match(STACK_NAME_PATTERN, name):
        return None
    for folder in (STACKS_DIR, imported_stacks_dir()):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def load_stack(name_or_path: str | None = None) -> Stack:
    """Load and validate a stack by name (selection order if None) or from a YAML file path.

    Secrets are not resolved here: call `Stack.require_secrets()` where they are needed. A
    credential written in plain text (a secret key's value, a URL's password) is refused with a
    StackError naming the file, the component, the key and the reference to write instead.
    """
    chosen, origin = stack_selection(name_or_path)
    if looks_like_path(chosen):
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise StackError(f"{chosen}: no such stack file ({origin})")
    else:
        found = stack_file(chosen)
        if found is None:
            available = ", ".join(list_stacks()) or "none"
            raise StackError(
                f"unknown stack '{chosen}' ({origin}); available stacks: {available} "
                f"(shipped in {display_path(STACKS_DIR)}, imported in {imported_stacks_dir()})"
            )
        path = found
    return parse_stack(read_yaml(path), display_path(path))


def use_stack(name: str) -> Stack:
    """Make `name` the active stack for this flywheel home, after checking that it loads."""
    stack = load_stack(name)
    remember_choice(active_stack_file(), name)
    return stack
