"""Secret references in stack files, resolved only at the moment a value is used.

A stack file, `prefect.yaml`, a log line and an export must never hold a password, so a stack
holds *references* instead: a value that is exactly `{{name.key}}` (ZenML's syntax, so files
move between the two) or `${ENV_VAR}`. Loading a stack keeps them as references; a flow calls
`Stack.require_secrets()` at its start, so a missing secret fails in the first second of a run
rather than halfway, and the component code calls `resolve()` where it needs the value.

Resolution order for `{{name.key}}`: the environment variable `NAME_KEY` (what CI and
containers provide), then, only when a Prefect server is configured (`PREFECT_API_URL`), a
Prefect Secret block called `name-key`. Error messages name the reference and where to put
it, never a value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SecretNotFoundError",
    "env_var_for",
    "find_refs",
    "is_secret_ref",
    "mask",
    "prefect_block_for",
    "resolve",
    "resolve_tree",
]

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ZENML_REF = re.compile(r"^\{\{\s*([^.\s{}]+)\.([^\s{}]+)\s*\}\}$")
_MASK = "********"


class SecretNotFoundError(LookupError):
    """A reference that neither the environment nor a Prefect Secret block can satisfy."""

    def __init__(self, ref: str, hint: str) -> None:
        self.ref = ref
        super().__init__(f"secret reference {ref} is not set: {hint}")


def is_secret_ref(value: object) -> bool:
    """True if `value` is a string that is exactly `{{name.key}}` or `${VAR}` (nothing around it)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(_ENV_REF.match(text) or _ZENML_REF.match(text))


def env_var_for(ref: str) -> str:
    """The environment variable that satisfies a reference: `{{s3.access_key}}` -> `S3_ACCESS_KEY`."""
    text = ref.strip()
    if m := _ENV_REF.match(text):
        return m.group(1)
    if m := _ZENML_REF.match(text):
        return re.sub(r"[^A-Za-z0-9]", "_", f"{m.group(1)}_{m.group(2)}").upper()
    raise ValueError(f"not a secret reference: {ref!r}")


def prefect_block_for(ref: str) -> str:
    """The Prefect Secret block for `{{name.key}}`: `name-key`, lower-cased with `_` as `-`.

    Prefect block names allow only lower-case letters, digits and dashes, hence the slug.
    """
    m = _ZENML_REF.match(ref.strip())
    if not m:
        raise ValueError(f"not a {{{{name.key}}}} reference: {ref!r}")
    return re.sub(r"[^a-z0-9-]+", "-", f"{m.group(1)}-{m.group(2)}".lower()).strip("-")


def _from_prefect(block: str) -> str | None:
    """Read a Prefect Secret block, or None if there is no such block or the server fails."""
    try:
        from prefect.blocks.system import Secret  # lazy: `import prefect` costs seconds

        value = Secret.load(block).get()  # type: ignore[union-attr]
    except Exception:  # no such block, server down, bad credentials: fall through to the error
        return None
    if isinstance(value, str):
        return value
    # Secret.get() JSON-decodes what it stores: turn structures back into their JSON text
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def resolve(value: str) -> str:
    """Return a non-reference unchanged, else the secret it points to (or raise SecretNotFoundError)."""
    if not is_secret_ref(value):
        return value
    text = value.strip()
    var = env_var_for(text)
    found = os.environ.get(var)
    if found is not None:
        return found
    if _ENV_REF.match(text):
        raise SecretNotFoundError(text, f"set the environment variable {var}")
    block = prefect_block_for(text)
    # only with a configured server: without one, Prefect would boot an ephemeral API (seconds)
    from_block = _from_prefect(block) if os.environ.get("PREFECT_API_URL") else None
    if from_block is not None:
        return from_block
    raise SecretNotFoundError(
        text,
        f"set the environment variable {var}, or create a Prefect Secret block named "
        f"'{block}' on the server that PREFECT_API_URL points to",
    )


def resolve_tree(obj: Any) -> Any:
    """Resolve every reference in nested dicts, lists and tuples; other values pass through."""
    if isinstance(obj, str):
        return resolve(obj)
    if isinstance(obj, Mapping):
        return {k: resolve_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [resolve_tree(v) for v in obj]
    return obj


def mask(value: str) -> str:
    """What may be displayed for a possibly secret value: a reference as is, anything else masked.

    A reference is safe to show (it says where the secret lives, not what it is); a plain
    string in a secret-bearing field may be the secret itself, so it is never echoed.
    """
    if is_secret_ref(value):
        return value.strip()
    return "" if value == "" else _MASK


def find_refs(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every reference inside `obj`, as (dotted key path, reference); list items use their index."""
    found: list[tuple[str, str]] = []
    if isinstance(obj, str):
        if is_secret_ref(obj):
            found.append((prefix, obj.strip()))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            found.extend(find_refs(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found.extend(find_refs(v, f"{prefix}.{i}" if prefix else str(i)))
    return found
