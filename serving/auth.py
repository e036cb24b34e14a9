"""Optional bearer-token auth, configured by the stack's deployer through a secret reference."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from stacks.config import Stack


def token_from_stack(stack: Stack) -> str | None:
    deployer = stack.model_deployer
    ref = deployer.configuration.auth_token if deployer is not None else None
    return stack.resolve(ref) if ref else None


def authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
