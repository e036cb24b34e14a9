"""Per-model service state: one record, log and lock per model of a stack, and a port per model that
stays the model's across stops and redeploys."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from stacks.components.deployers import DeploymentError, ServiceInfo
from stacks.components.deployers.state import (
    PORT_RANGE,
    allocate_port,
    clear_state,
    list_states,
    log_path,
    model_lock,
    model_slug,
    ports_path,
    read_ports,
    read_state,
    require_model_name,
    state_path,
    write_state,
)


def _info(model: str = "flight-delay", **changes: Any) -> ServiceInfo:
    base = ServiceInfo(
        flavor="local",
        stack="mini",
        url="http://127.0.0.1:8080",
        model_name=model,
        model_version="3",
        started_at="2026-11-22T08:00:00+00:00",
        handle="4242",
        pid=4242,
        port=8080,
    )
    return base.with_(**changes)


def _never_taken(port: int) -> bool:
    return False


def test_each_model_has_its_own_record(home: Path) -> None:
    a, b = _info("flight-delay"), _info("diamond-price", port=8081, url="http://127.0.0.1:8081")
    path = write_state(a)
    write_state(b)
    assert path == home / "services" / "mini" / "flight-delay.json" == state_path("mini", "flight-delay")
    assert log_path("mini", "diamond-price") == home / "services" / "mini" / "diamond-price.log"
    assert read_state("mini", "flight-delay") == a and read_state("mini", "diamond-price") == b
    assert not list(path.parent.glob("*.tmp"))  # written atomically
    assert list_states("mini") == ([b, a], [])  # by model name
    assert clear_state("mini", "flight-delay") and not path.exists()
    assert read_state("mini", "flight-delay") is None and read_state("mini", "diamond-price") == b
    assert not clear_state("mini", "flight-delay")
    assert list_states("other") == ([], [])


def test_a_corrupt_record_is_named_and_does_not_hide_the_others(home: Path) -> None:
    write_state(_info("diamond-price"))
    path = state_path("mini", "flight-delay")
    path.write_text("{not json")
    with pytest.raises(DeploymentError, match=r"flight-delay.json: unreadable service state file"):
        read_state("mini", "flight-delay")
    found, problems = list_states("mini")
    assert [i.model_name for i in found] == ["diamond-price"]
    assert len(problems) == 1 and "flight-delay.json" in problems[0]


def test_a_record_of_another_model_is_not_taken_for_this_one(home: Path) -> None:
    path = state_path("mini", "flight-delay")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_info("someone-else").to_dict()))
    with pytest.raises(DeploymentError, match="records model 'someone-else', not 'flight-delay'"):
        read_state("mini", "flight-delay")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("flight-delay", "flight-delay"),
        ("diamond-price", "diamond-price"),
        ("Flight_Delay", None),
        ("../../etc/passwd", None),
        ("x" * 200, None),
    ],
)
def test_model_slugs_are_safe_and_distinct(name: str, slug: str | None) -> None:
    made = model_slug(name)
    if slug is not None:
        assert made == slug
    else:
        assert made != name and len(made) <= 40 and made.replace("-", "").isalnum() and made.islower()
    assert model_slug("Flight_Delay") != model_slug("flight-delay") != model_slug("flight_delay")


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 257, None, 7])
def test_model_names_are_checked(bad: Any) -> None:
    with pytest.raises(DeploymentError):
        require_model_name(bad)
    assert require_model_name("flight-delay") == "flight-delay"


def test_ports_start_at_the_stacks_port_and_stay_with_their_model(home: Path) -> None:
    assert allocate_port("mini", "flight-delay", 9000, _never_taken) == 9000
    assert allocate_port("mini", "diamond-price", 9000, _never_taken) == 9001
    assert allocate_port("mini", "flight-delay", 9000, _never_taken) == 9000  # a redeploy: same port
    clear_state("mini", "flight-delay")  # a stop forgets the service, not its port
    assert allocate_port("mini", "fraud", 9000, _never_taken) == 9002
    assert allocate_port("mini", "flight-delay", 9000, _never_taken) == 9000
    assert read_ports("mini") == {"flight-delay": 9000, "diamond-price": 9001, "fraud": 9002}
    assert allocate_port("other-stack", "diamond-price", 9000, _never_taken) == 9000  # per stack


def test_a_port_in_use_is_skipped_for_a_new_model(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        def taken(p: int) -> bool:
            return p == port

        assert allocate_port("mini", "diamond-price", port, taken) == port + 1


def test_a_changed_stack_port_gives_ports_out_again(home: Path) -> None:
    assert allocate_port("mini", "flight-delay", 9000, _never_taken) == 9000
    assert allocate_port("mini", "flight-delay", 7000, _never_taken) == 7000


def test_no_free_port_is_a_clear_error(home: Path) -> None:
    with pytest.raises(DeploymentError, match=r"no free port for 'm' on stack 'mini' in 9000-9099"):
        allocate_port("mini", "m", 9000, lambda port: True)
    for i in range(PORT_RANGE):
        allocate_port("mini", f"model-{i}", 9000, _never_taken)
    with pytest.raises(DeploymentError, match=r"100 are held by other models"):
        allocate_port("mini", "one-too-many", 9000, _never_taken)


def test_concurrent_allocations_never_share_a_port(home: Path) -> None:
    got: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: got.append(allocate_port("mini", f"m{i}", 9000, _never_taken)))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(9000, 9008))


def test_an_unreadable_port_table_is_named(home: Path) -> None:
    path = ports_path("mini")
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(DeploymentError, match=r"ports.json: expected a mapping"):
        allocate_port("mini", "m", 9000, _never_taken)


def test_a_single_service_record_of_an_older_version_becomes_its_models(home: Path) -> None:
    """`services/<stack>.json` (one service per stack) is found, moved and its port kept for its model."""
    legacy = home / "services" / "mini.json"
    legacy.parent.mkdir(parents=True)
    old = _info(port=None, url="http://127.0.0.1:8085")
    legacy.write_text(json.dumps(old.to_dict()))
    assert list_states("mini") == ([old], [])
    assert not legacy.exists() and read_state("mini", "flight-delay") == old
    assert read_ports("mini") == {"flight-delay": 8085}
    assert allocate_port("mini", "diamond-price", 8085, _never_taken) == 8086


def test_model_locks_are_per_model(home: Path) -> None:
    with model_lock("mini", "flight-delay", timeout_s=1):
        with model_lock("mini", "diamond-price", timeout_s=1):  # another model does not wait
            pass
        failed: list[BaseException] = []

        def second() -> None:
            try:
                with model_lock("mini", "flight-delay", timeout_s=0.5):
                    pass
            except DeploymentError as exc:
                failed.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert failed and "another deploy or stop of 'flight-delay'" in str(failed[0])
