"""Optional bearer-token auth, configured by the stack's deployer through a secret reference."""

from __future__ import annotations

import hmac

from fastapi import Request


def token_from_stack(stack: object) -> str | None:
    from stacks.secrets import resolve

    deployer = getattr(stack, "model_deployer", None)
    ref = getattr(getattr(deployer, "configuration", None), "auth_token", None)
    return resolve(ref) if ref else None


def authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
