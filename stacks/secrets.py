"""Secret references in stack files, resolved only at the moment a value is used.

A stack file, `prefect.yaml`, a log line and an export must never hold a password, so a stack
holds *references* instead: a value that is exactly `{{name.key}}` (ZenML's syntax, so files
move between the two) or `${ENV_VAR}`. Loading a stack keeps them as references; a flow calls
`Stack.require_secrets()` at its start, so a missing secret fails in the first second of a run
rather than halfway, and the code that connects calls `Stack.resolve()` (or `resolve()` where
there is no stack) where it needs the value. A plain-text credential in a stack file is refused
when the stack is validated (`secret_keys.py` owns which keys are secrets).

Resolution order for `{{name.key}}`: the environment variable `NAME_KEY` (what CI and
containers provide), then a Prefect Secret block called `name-key` on the stack's own Prefect API
(its orchestrator's `api_url`, the server its flows run on), then on the server `PREFECT_API_URL`
names, when that is another one. `${VAR}` is read from the environment only. Without either
server no Prefect lookup is made (Prefect would boot an ephemeral API for it, seconds, to find
nothing). A lookup is bounded by `timeout`: a server that is down or does not answer is reported
as such in the error, never waited on. Error messages name the reference and where to put it,
never a value.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "LOOKUP_TIMEOUT_S",
    "MASK",
    "SecretNotFoundError",
    "SecretResolver",
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
MASK = "********"
LOOKUP_TIMEOUT_S = 5.0  # one Prefect Secret block lookup, connection included


class SecretNotFoundError(LookupError):
    """A reference that neither the environment nor a Prefect Secret block can satisfy."""

    def __init__(self, ref: str, hint: str) -> None:
        self.ref = ref
        self.hint = hint
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


def _read_block(api_url: str, block: str, timeout: float) -> str:
    """The value of the Prefect Secret block `block` on `api_url`; raises Prefect's and httpx's errors.

    The client is built for this URL rather than from the settings, so a configured or missing
    PREFECT_API_URL cannot redirect the lookup (nor boot an ephemeral API), and retries are off: a
    server that fails once is reported, not retried on a back-off schedule. The configured API key
    or auth string is sent only to the server it is configured for, never to another one.
    """
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    # the environment first, as `servers()` reads it (Prefect's settings object may predate it)
    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or ""
    own = configured.rstrip("/") == api_url.rstrip("/")
    key = os.environ.get("PREFECT_API_KEY") or PREFECT_API_KEY.value()
    auth = os.environ.get("PREFECT_API_AUTH_STRING") or PREFECT_API_AUTH_STRING.value()
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
        client = SyncPrefectClient(
            api_url,
            api_key=key if own else None,
            auth_string=auth if own else None,
            httpx_settings={"timeout": timeout},
        )
        with client:
            document = client.read_block_document_by_name(name=block, block_type_slug="secret")
    # Secret.get() JSON-decodes what it stores: turn structures back into their JSON text
    value = Secret(value=document.data["value"]).get()
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _import_prefect() -> str | None:
    """Import what a block lookup uses; None when done, else why Prefect cannot be asked."""
    try:
        for module in (
            "httpx",
            "prefect.blocks.system",
            "prefect.client.orchestration",
            "prefect.exceptions",
        ):
            importlib.import_module(module)
    except ImportError as exc:
        return f"cannot ask it: {_one_line(exc)}"
    return None


def _lookup(api_url: str, block: str, timeout: float) -> tuple[str | None, str, bool]:
    """(value, why not, server down) for one block on one server, within `timeout` seconds.

    The request runs in a daemon thread that is waited on for `timeout` only: httpx's own timeouts
    bound each phase, but not a connect that the transport retries, and a stack check or a flow
    start must not hang on an unroutable host.
    """
    # lazy (`import prefect` costs a second or more), and before the clock starts
    cannot = _import_prefect()
    if cannot is not None:
        return None, cannot, True
    import httpx
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = _read_block(api_url, block, timeout)
        except Exception as exc:  # reported below; this thread must not print a traceback
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"prefect-secret-{block}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return None, f"server did not answer within {timeout:g} s", True
    if "value" in box:
        return box["value"], "", False
    error: Exception = box["error"]
    if isinstance(error, ObjectNotFound):
        return None, "no such block there", False
    if isinstance(error, PrefectHTTPStatusError):
        code = error.response.status_code
        auth = (
            " (its PREFECT_API_KEY or PREFECT_API_AUTH_STRING is missing or wrong)"
            if code in (401, 403)
            else ""
        )
        return None, f"the server answered HTTP {code}{auth}", code >= 500
    if isinstance(error, httpx.TransportError):
        return None, f"server unreachable ({_one_line(error)})", True
    return None, f"unexpected answer ({type(error).__name__})", False


class SecretResolver:
    """Resolves references for one stack (or none): the environment, then Prefect Secret blocks.

    The servers asked for `{{name.key}}`, in order: `api_url` (the stack's orchestrator API, where
    its flows run and so where its blocks are), then PREFECT_API_URL's when that is another server.
    A resolver remembers the blocks it read and the servers that did not answer, so an operation
    that resolves several references (`Stack.require_secrets()`, `stack check`) waits on a dead
    server once, not once per reference. Create one per operation: nothing here expires.
    """

    def __init__(self, api_url: str | None = None, timeout: float = LOOKUP_TIMEOUT_S) -> None:
        self.api_url = api_url.strip() if api_url and not is_secret_ref(api_url) else None
        self.timeout = timeout
        self._found: dict[tuple[str, str], str] = {}
        self._down: dict[str, str] = {}

    def servers(self) -> list[tuple[str, str]]:
        """The Prefect APIs asked for Secret blocks, in order, each with the reason it is asked."""
        found: list[tuple[str, str]] = []
        if self.api_url:
            found.append((self.api_url, "the stack's orchestrator api_url"))
        env = os.environ.get("PREFECT_API_URL", "").strip()
        if env and env.rstrip("/") != (self.api_url or "").rstrip("/"):
            found.append((env, "PREFECT_API_URL"))
        return found

    def warm_up(self, refs: Iterable[str]) -> None:
        """Import Prefect now if one of `refs` will need a block lookup.

        For callers that run lookups under a deadline of their own (`stack check`, one thread per
        component): the import, a second or more, is then paid once up front, not inside one
        component's time while it slows the others.
        """
        needs_block = any(
            _ZENML_REF.match(r.strip()) and env_var_for(r) not in os.environ for r in refs if is_secret_ref(r)
        )
        if needs_block and self.servers():
            _import_prefect()

    def _block(self, api_url: str, block: str) -> tuple[str | None, str]:
        if api_url in self._down:
            return None, self._down[api_url]
        if (api_url, block) in self._found:
            return self._found[(api_url, block)], ""
        value, problem, down = _lookup(api_url, block, self.timeout)
        if value is not None:
            self._found[(api_url, block)] = value
        elif down:
            self._down[api_url] = problem
        return value, problem

    def resolve(self, value: str) -> str:
        """A non-reference unchanged, else the secret it points to (or raise SecretNotFoundError)."""
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
        asked = []
        for api_url, why in self.servers():
            from_block, problem = self._block(api_url, block)
            if from_block is not None:
                return from_block
            asked.append(f"on {api_url} ({why}; asked: {problem})")
        where = (
            " or ".join(asked)
            if asked
            else "on the Prefect server that PREFECT_API_URL or the stack's orchestrator api_url names "
            "(neither is set, so no server was asked)"
        )
        raise SecretNotFoundError(
            text,
            f"set the environment variable {var}, or create a Prefect Secret block named '{block}' {where}",
        )

    def resolve_tree(self, obj: Any) -> Any:
        """Resolve every reference in nested dicts, lists and tuples; other values pass through."""
        if isinstance(obj, str):
            return self.resolve(obj)
        if isinstance(obj, Mapping):
            return {k: self.resolve_tree(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.resolve_tree(v) for v in obj]
        return obj


def resolve(value: str, api_url: str | None = None, *, timeout: float = LOOKUP_TIMEOUT_S) -> str:
    """Return a non-reference unchanged, else the secret it points to (or raise SecretNotFoundError).

    `api_url` is the Prefect API of the stack in use; code that has a stack calls `Stack.resolve()`,
    which passes it. Without it, blocks are looked up only where PREFECT_API_URL points.
    """
    return SecretResolver(api_url, timeout).resolve(value)


def resolve_tree(obj: Any, api_url: str | None = None, *, timeout: float = LOOKUP_TIMEOUT_S) -> Any:
    """Resolve every reference in nested dicts, lists and tuples (see `resolve`); others pass through."""
    return SecretResolver(api_url, timeout).resolve_tree(obj)


def mask(value: str) -> str:
    """What may be displayed for a possibly secret value: a reference as is, anything else masked.

    A reference is safe to show (it says where the secret lives, not what it is); a plain
    string in a secret-bearing field may be the secret itself, so it is never echoed.
    """
    if is_secret_ref(value):
        return value.strip()
    return "" if value == "" else MASK


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
