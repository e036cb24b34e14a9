"""Which stack configuration values are secrets: one owner for the rule, the refusal and the masking.

A credential reaches a stack file in two shapes: as the value of a key that is a secret by nature
(`auth_token`, `tracking_password`, `storage_options.secret`, an environment variable `*_TOKEN`),
or inline in a URL (`postgresql://user:password@host/db`). Either way the file is the wrong place
for it: it is committed, copied into a container's stack file or a ConfigMap, and printed by
`flywheel stack show`. So a stack holds a reference there (`{{name.key}}` or `${VAR}`, see
`secrets.py`), and a plain value is refused when the configuration is validated, in the models
themselves, so that a stack built in code is held to the rule as much as a file.

A URL with an inline password is refused too, not merely warned about: the fix is the same
one-line change (the whole URL becomes a reference, as `${FLYWHEEL_OPTUNA_DB_URL}` in
production.yaml), while a warning would leave the password in the file and in every copy of it.
A user name alone (`postgresql://flywheel@host/db`) is not a secret and passes.

Every output of a configuration goes through `mask_tree` (or `mask_url` / `redact` for one
string): a reference is shown as is, any other value under a secret key as `********`, and a
URL's password as `***`. The predicate that refuses is the one that masks, so masking never
changes a stack that validates: an export of a masked stack is still the stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stacks.secrets import MASK, env_var_for, is_secret_ref, mask, prefect_block_for

__all__ = [
    "SECRET_KEYS",
    "SECRET_SUFFIXES",
    "PlainSecret",
    "has_inline_password",
    "is_secret_key",
    "is_secret_path",
    "mask_tree",
    "mask_url",
    "plain_secrets",
    "redact",
    "refusal",
]

SECRET_KEYS: frozenset[str] = frozenset(
    {
        # typed fields of the configuration models
        "auth_token",
        "tracking_password",
        "tracking_token",
        # anywhere: the generic names of a credential
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "private_key",
        "client_secret",
        # s3fs (`key`, `secret`, `token`) and botocore's client_kwargs
        "key",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "ssecustomerkey",  # s3_additional_kwargs: the SSE-C encryption key
        # adlfs (Azure)
        "account_key",
        "sas_token",
        "connection_string",
    }
)
"""Key names (compared lower-case, at any depth of a configuration) whose value is a credential."""

SECRET_SUFFIXES: tuple[str, ...] = (
    "_password",
    "_passwd",
    "_secret",
    "_token",
    "_secret_key",
    "_access_key",
    "_api_key",
    "_private_key",
    "_account_key",
    "_connection_string",
)
"""Name endings that make a key a credential: `db_password`, and environment names like `HF_TOKEN`."""

# gcsfs' `token` names how to authenticate ("google_default", "anon"...) or a service-account JSON
# file; neither is a credential itself (a token given as a mapping is checked key by key)
_GCSFS_TOKEN_MODES = frozenset({"google_default", "cache", "anon", "browser", "cloud"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# schemes whose authority ends at the first '/', '?' or '#' (urllib's reading); any other scheme is
# read as SQLAlchemy reads a database URL, where a password may contain '/'
_NETLOC_SCHEMES = frozenset(
    {
        "http",
        "https",
        "ws",
        "wss",
        "tcp",
        "tls",
        "ucx",
        "inproc",
        "file",
        "s3",
        "s3a",
        "gs",
        "gcs",
        "az",
        "abfs",
        "abfss",
        "adl",
        "hdfs",
        "ftp",
        "sftp",
        "ssh",
        "memory",
    }
)


def is_secret_key(name: object) -> bool:
    """True if a configuration key holds a credential by its name (see SECRET_KEYS, SECRET_SUFFIXES)."""
    text = str(name).lower()
    return text in SECRET_KEYS or text.endswith(SECRET_SUFFIXES)


def is_secret_path(path: tuple[object, ...] | list[object]) -> bool:
    """True if any key on a dotted path (`storage_options.client_kwargs.aws_secret_access_key`) is secret."""
    return any(is_secret_key(part) for part in path if isinstance(part, str))


def _masked_url(value: str) -> str | None:
    """The URL with its password as `***` if it carries one inline, else None."""
    text = value.strip()
    m = _SCHEME.match(text)
    if m is None or "@" not in text:
        return None
    scheme = m.group(1)
    try:
        password = urlsplit(text).password
    except ValueError:  # a malformed port or IPv6 host: no password urllib can see
        password = None
    if password:
        tail = text[m.end() :]
        ends = [i for i in (tail.find(c) for c in "/?#") if i >= 0]
        end = min(ends) if ends else len(tail)
        userinfo, _, host = tail[:end].rpartition("@")
        user = userinfo.partition(":")[0]
        return f"{scheme}://{user}:***@{host}{tail[end:]}"
    if scheme.split("+", 1)[0].lower() in _NETLOC_SCHEMES:
        return None
    from sqlalchemy.engine import make_url  # lazy: only for a database URL with an '@' in it
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        return None
    return url.render_as_string(hide_password=True) if url.password else None


def has_inline_password(value: object) -> bool:
    """True for a URL with `user:password@` (`postgresql://u:pw@host/db`, `mysql+pymysql://...`)."""
    return isinstance(value, str) and not is_secret_ref(value) and _masked_url(value) is not None


def mask_url(value: str) -> str:
    """A URL for display: its inline password replaced by `***`; anything else unchanged."""
    masked = _masked_url(value) if not is_secret_ref(value) else None
    return value if masked is None else masked


def redact(text: str) -> str:
    """A free text (an error message, a check's detail) with every URL's inline password as `***`."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)


def _is_plain(key: str, value: object) -> bool:
    """True if `value`, found under the secret key `key`, is a credential written in plain text."""
    if isinstance(value, bool) or value is None:
        return False  # `anon: true`-like flags and unset values carry nothing
    if isinstance(value, int | float):
        return True
    if not isinstance(value, str) or value.strip() == "" or is_secret_ref(value):
        return False
    gcsfs_token = key.lower() == "token" and (value in _GCSFS_TOKEN_MODES or value.endswith(".json"))
    return not gcsfs_token


@dataclass(frozen=True)
class PlainSecret:
    """A credential found in plain text: where it is and what may be shown of it (never the value)."""

    key: str  # dotted path inside the configuration, list items by index
    leaf: str  # the key name it sits under, for the suggested reference
    shown: str  # `********`, or the URL with its password masked
    inline_url: bool


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def plain_secrets(tree: Any, prefix: str = "", leaf: str = "", secret: bool = False) -> list[PlainSecret]:
    """Every plain-text credential in a configuration dump: values under secret keys, URLs with passwords."""
    found: list[PlainSecret] = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            found.extend(plain_secrets(v, _join(prefix, k), str(k), secret or is_secret_key(k)))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            found.extend(plain_secrets(v, _join(prefix, i), leaf, secret))
    elif secret:
        if _is_plain(leaf, tree):
            found.append(PlainSecret(prefix, leaf, MASK, inline_url=False))
    elif has_inline_password(tree):
        found.append(PlainSecret(prefix, leaf, mask_url(tree), inline_url=True))
    return found


def mask_tree(tree: Any, leaf: str = "", secret: bool = False) -> Any:
    """A configuration dump safe to print or export: plain credentials masked, references kept."""
    if isinstance(tree, Mapping):
        return {k: mask_tree(v, str(k), secret or is_secret_key(k)) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [mask_tree(v, leaf, secret) for v in tree]
    if secret:
        if not _is_plain(leaf, tree):
            return tree
        return mask(tree) if isinstance(tree, str) else MASK
    if isinstance(tree, str):
        return mask_url(tree)
    return tree


def refusal(found: PlainSecret, namespace: str) -> str:
    """The error for a plain credential: where it is and the reference that would replace it."""
    name = re.sub(r"[^a-z0-9_]+", "_", found.leaf.lower()).strip("_") or "value"
    ref = f"{{{{{namespace}.{name}}}}}"
    var = env_var_for(ref)
    where = (
        f'"{ref}" (read from the environment variable {var} or the Prefect Secret block '
        f"'{prefect_block_for(ref)}') or \"${{{var}}}\""
    )
    if found.inline_url:
        return (
            f"key '{found.key}' is a URL with a password inline ({found.shown}); a stack file holds no "
            f"credentials: make the whole URL a secret reference, {where}"
        )
    return (
        f"key '{found.key}' holds a plain-text secret (not shown); a stack file holds no credentials: "
        f"write a secret reference instead, {where}"
    )
