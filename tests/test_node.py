"""The node facade: thread-safe control, atomic configuration, measurements."""

from __future__ import annotations

import threading
import time

import pytest

from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.rrm import SliceQuota
from airan.node import Node, NodeConfig, restart_fields


def _config(**policy: object) -> NodeConfig:
    return NodeConfig.parse(
        {
            "policy": {"tenants": {"llm": {}, "batch": {}}, **policy},
            "ran": {"numerology": 1, "bandwidth_mhz": 20, "ues": 4},
        }
    )


@pytest.fixture
def node() -> Node:
    n = Node.simulated(_config(), seed=1)
    n.start()
    yield n
    n.stop()


def test_a_control_changes_what_the_arbiter_does_next(node: Node) -> None:
    time.sleep(0.3)
    a = node.snapshot()
    time.sleep(0.3)
    b = node.snapshot()
    before = Node.measurements(a, b).node
    assert before["airan.Tenant.batch.Busy"] > 0.05
    ticket = node.set_tenant_paused("batch", True)
    assert ticket.error is None and ticket.applied_ns >= ticket.requested_ns
    assert node.arbiter.policy.tenants["batch"].paused
    c = node.snapshot()
    time.sleep(0.3)
    d = node.snapshot()
    after = Node.measurements(c, d).node
    assert after["airan.Tenant.batch.Busy"] < 0.01
    assert after["airan.Tenant.llm.Busy"] > before["airan.Tenant.llm.Busy"]
    assert after["airan.DeadlineMetRatio"] == 1.0
    for name in Node.NODE_MEASUREMENTS:
        assert name in after, name


def test_a_refused_policy_changes_nothing(node: Node) -> None:
    before = node.config
    with pytest.raises(FieldError, match=r"policy\.name"):
        node.set_policy(Policy.parse({"name": "fifo", "tenants": {"llm": {}, "batch": {}}}))
    assert node.config == before
    assert node.arbiter.policy.name == "airan"
    with pytest.raises(FieldError, match="tenant"):
        node.set_tenant_paused("nobody", True)


def test_apply_config_rolls_back_what_it_applied(node: Node) -> None:
    old = node.config
    new = NodeConfig.parse(
        {
            **old.model_dump(),
            "policy": {**old.policy.model_dump(), "guard_us": 42.0},
            "ran": {
                **old.ran.model_dump(),
                "slice_quotas": [{"snssai": {"sst": 1}, "min_ratio": 10, "max_ratio": 50}],
            },
        }
    )

    def broken(quotas: object) -> None:
        raise FieldError("ran.slice_quotas", "the MAC refused it")

    real = node.du.set_slice_quotas
    node.du.set_slice_quotas = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(FieldError, match="MAC refused"):
            node.apply_config(new)
    finally:
        node.du.set_slice_quotas = real  # type: ignore[method-assign]
    assert node.config == old
    assert node.arbiter.policy.guard_us == old.policy.guard_us  # rolled back
    restart = node.apply_config(new)
    assert restart == []
    assert node.arbiter.policy.guard_us == 42.0
    assert node.du.macs[0].slice_quotas == new.ran.slice_quotas


def test_restart_fields_name_what_is_not_live() -> None:
    old = _config()
    new = NodeConfig.parse(
        {**old.model_dump(), "ran": {**old.ran.model_dump(), "bandwidth_mhz": 40}}
    )
    assert restart_fields(old, new) == ["ran.bandwidth_mhz"]


def test_controls_from_many_threads_are_all_applied(node: Node) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            node.set_slice_quotas(
                [SliceQuota.parse({"snssai": {"sst": 1}, "max_ratio": 50 + i})]
            )
            node.set_tenant_paused("batch", i % 2 == 0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert node.config.policy == node.arbiter.policy
    assert node.config.ran.slice_quotas == node.du.macs[0].slice_quotas
    assert node.health().misses == 0


def test_a_control_that_times_out_is_withdrawn_not_applied_later() -> None:
    from airan.sched.arbiter import ControlTimeoutError

    node = Node.simulated(_config(), seed=2)
    arb = node.arbiter
    arb._running = True  # a loop that does not come round to its mailbox in time
    new = Policy.parse({**node.config.policy.model_dump(), "guard_us": 77.0})
    with pytest.raises(ControlTimeoutError, match="not applied"):
        node.set_policy(new, timeout_s=0.05)
    arb._running = False
    arb._drain_mailbox()  # the loop comes round: the withdrawn change is skipped
    assert arb.policy.guard_us != 77.0
    assert node.config.policy.guard_us != 77.0


def test_update_config_is_read_modify_write(node: Node) -> None:
    def bump(weight: float) -> None:
        def change(cfg: NodeConfig) -> NodeConfig:
            data = cfg.model_dump()
            data["policy"]["tenants"]["llm"]["weight"] += weight
            return NodeConfig.parse(data)

        node.update_config(change)

    threads = [threading.Thread(target=bump, args=(1.0,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert node.config.policy.tenants["llm"].weight == 7.0  # no update lost
    assert node.arbiter.policy.tenants["llm"].weight == 7.0
