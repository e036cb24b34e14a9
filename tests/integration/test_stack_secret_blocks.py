"""A stack's `{{name.key}}` found on its own Prefect server (the test server), without PREFECT_API_URL.

The unit tests speak to a small stand-in for the one Prefect endpoint used; this proves the same
lookup against a real server, a Secret block saved with Prefect's own API.
"""

from __future__ import annotations

from typing import Any

import pytest

from stacks.config import Stack, parse_stack
from stacks.secrets import SecretNotFoundError, resolve

pytestmark = [pytest.mark.slow]


def _stack(api_url: str) -> Stack:
    doc: dict[str, Any] = {
        "stack_name": "blocks",
        "components": {
            "orchestrator": {"name": "o", "flavor": "prefect", "configuration": {"api_url": api_url}},
            "artifact_store": {"name": "a", "flavor": "local", "configuration": {"path": "artifacts"}},
            "model_deployer": {
                "name": "d",
                "flavor": "local",
                "configuration": {"auth_token": "{{flywheel_it.token}}"},
            },
        },
    }
    return parse_stack(doc, "blocks.yaml")


def test_secret_blocks_come_from_the_stacks_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()  # the test server; not in the environment
    assert api_url
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_IT_TOKEN", raising=False)
    Secret(value="token-from-the-server").save("flywheel-it-token", overwrite=True)  # type: ignore[arg-type]
    Secret(value={"user": "u", "n": 1}).save("flywheel-it-json", overwrite=True)  # type: ignore[arg-type]

    stack = _stack(api_url)
    assert stack.resolve("{{flywheel_it.token}}") == "token-from-the-server"
    assert stack.resolve("{{flywheel_it.json}}") == '{"user": "u", "n": 1}'
    stack.require_secrets()
    with pytest.raises(SecretNotFoundError, match=r"'flywheel-it-missing' on .* asked: no such block there"):
        stack.resolve("{{flywheel_it.missing}}")
    with pytest.raises(SecretNotFoundError, match="no server was asked"):
        resolve("{{flywheel_it.token}}")  # no stack and no PREFECT_API_URL: no server to ask
    monkeypatch.setenv("FLYWHEEL_IT_TOKEN", "from-env")
    assert stack.resolve("{{flywheel_it.token}}") == "from-env"  # the environment comes first
