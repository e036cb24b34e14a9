"""A choice remembered in the flywheel home, as ``flywheel stack use`` and ``flywheel problem use`` keep it.

Both take a name or a file's path; the order after an explicit option is the environment variable, then
the one-line file the ``use`` command wrote. One implementation, so stacks and problems are chosen alike.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["looks_like_path", "remember_choice", "remembered_choice"]


def looks_like_path(value: str) -> bool:
    """A YAML file or anything with a path separator, rather than a name looked up among the shipped ones."""
    return value.endswith((".yaml", ".yml")) or "/" in value or os.sep in value


def remembered_choice(env_var: str, marker: Path, command: str) -> tuple[str, str] | None:
    """(name or path, where it came from) from ``$env_var``, then the ``marker`` file; None without either."""
    env = os.environ.get(env_var, "").strip()
    if env:
        return env, f"from ${env_var}"
    if marker.is_file():
        chosen = marker.read_text(encoding="utf-8").strip()
        if chosen:
            return chosen, f"set by `{command}` in {marker}"
    return None


def remember_choice(marker: Path, name: str) -> None:
    """Write ``name`` (a path made absolute, so it means the same from any folder) as the choice."""
    value = str(Path(name).expanduser().resolve()) if looks_like_path(name) else name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(value + "\n", encoding="utf-8")
