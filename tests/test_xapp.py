"""The xApp SDK (airan.ric.xapp) against a FakeNode (airan.testing), sync and asyncio,
and the example xApps."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from airan.core.rrm import SliceQuota, Snssai
from airan.ric.e2 import E2Cause
from airan.ric.xapp import (
    COSCHED_OID,
    KPM_OID,
    RC_OID,
    AsyncE2Client,
    E2Client,
    E2Error,
    KpmReport,
)
from airan.testing import FakeNode

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeNode]:
    with FakeNode(seed=5) as f:
        yield f


@pytest.fixture
def e2(fake: FakeNode) -> Iterator[E2Client]:
    policy = fake.node.config.policy
    quotas = fake.node.config.ran.slice_quotas
    with E2Client(fake.e2_target, requestor_id=42) as c:
        yield c
    fake.node.set_policy(policy)
    fake.node.set_slice_quotas(quotas)


def test_setup_and_lookup_by_oid(fake: FakeNode, e2: E2Client) -> None:
    s = e2.setup()
    assert s.node_id == fake.node.node_id
    assert e2.function(KPM_OID).short_name == "ORAN-E2SM-KPM"
    assert e2.function(RC_OID).ran_function_id != e2.function(COSCHED_OID).ran_function_id
    assert "airan.RadioSlackLowUs" in e2.function(KPM_OID).measurements(1)
    with pytest.raises(E2Error) as info:
        e2.function("1.3.6.1.4.1.1.2.3")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.cause == E2Cause("ricService", "ran-function-not-supported")
    assert info.value.field == "oid"


def test_kpm_subscription_iterates_reports(fake: FakeNode, e2: E2Client) -> None:
    with e2.kpm.subscribe(["airan.AiBusy", "DRB.UEThpDl"], period_ms=30) as sub:
        assert sub.admitted == (1,) and not sub.not_admitted
        assert sub.request_id[0] == 42
        reports = [r for _, r in zip(range(5), sub, strict=False)]
    assert [r.sequence for r in reports] == [1, 2, 3, 4, 5]
    for r in reports:
        assert set(r.values) == {"airan.AiBusy", "DRB.UEThpDl"}
        assert r.start_ns < r.end_ns <= r.received_ns
        assert 0 <= r.latency_s < 1.0
        assert r.time == pytest.approx(r.end_ns / 1e9)
    # cancelling closed the stream: the node forgot the subscription
    end = time.monotonic() + 5
    while fake.agent.active and time.monotonic() < end:
        time.sleep(0.01)
    assert e2.list_subscriptions() == []


def test_per_ue_reports_and_callbacks(e2: E2Client) -> None:
    got: list[KpmReport] = []
    done = threading.Event()

    def on_report(r: KpmReport) -> None:
        got.append(r)
        if len(got) >= 3:
            done.set()

    sub = e2.kpm.subscribe(["DRB.UEThpDl"], period_ms=30, style=5, callback=on_report)
    try:
        assert done.wait(10)
    finally:
        sub.cancel()
    assert sub.error is None
    assert all(r.ues and not r.values for r in got)
    assert all(set(v) == {"DRB.UEThpDl"} for v in got[-1].ues.values())


def test_delete_ends_the_iteration_with_the_notice(e2: E2Client) -> None:
    sub = e2.kpm.subscribe(["airan.AiBusy"], period_ms=20)
    first = next(sub)
    sub.delete()
    rest = list(sub)
    assert sub.ended is not None
    assert sub.ended.ended_by == "ric"
    assert sub.ended.last_sequence[1] == first.sequence + len(rest)


def test_refusals_raise_typed_errors(e2: E2Client) -> None:
    with pytest.raises(E2Error) as info:
        e2.kpm.subscribe(["airan.NotAThing"], period_ms=100)
    e = info.value
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.cause == E2Cause("ricRequest", "requested-information-unavailable")
    assert e.field == "ric_actions[0].kpm.measurement_names[0]"
    assert "airan.NotAThing" in e.reason and e.field in str(e)
    with pytest.raises(E2Error) as info:
        e2.kpm.subscribe(["airan.AiBusy"], period_ms=0)
    assert info.value.field == "ric_event_trigger.reporting_period_ms"
    with pytest.raises(E2Error) as info:
        e2.cosched.set_policy(max_ai_slice_us=0.5)
    assert info.value.field == "ric_control_message.policy.fields.max_ai_slice_us"
    assert info.value.cause == E2Cause("ricRequest", "control-message-invalid")
    with pytest.raises(E2Error) as info:
        e2.cosched.pause_tenant("ghost")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_cosched_and_rc_controls(fake: FakeNode, e2: E2Client) -> None:
    r = e2.cosched.set_policy(ai_share_cap=0.4, guard_us=30.0)
    assert fake.node.arbiter.policy.ai_share_cap == pytest.approx(0.4)
    assert fake.node.arbiter.policy.guard_us == 30.0
    assert r.applied["ai_share_cap"] == pytest.approx(0.4)
    assert 0 < r.control_to_effect_ns < 1e9 and r.rtt_ns > 0
    e2.cosched.pause_tenant("llm")
    assert fake.node.arbiter.policy.tenants["llm"].paused
    e2.cosched.resume_tenant("llm")
    assert not fake.node.arbiter.policy.tenants["llm"].paused
    q = [
        SliceQuota(snssai=Snssai(sst=1), min_ratio=20, max_ratio=70, dedicated_ratio=10),
        SliceQuota(snssai=Snssai(sst=2, sd=0xA), min_ratio=10, max_ratio=40),
    ]
    res = e2.rc.slice_prb_quota(q)
    assert fake.node.du.macs[0].slice_quotas == tuple(q)
    assert res.applied[1]["snssai"] == {"sst": 2, "sd": 0xA}


def test_async_client(fake: FakeNode) -> None:
    async def run() -> None:
        async with AsyncE2Client(fake.e2_target) as e2:
            setup = await e2.setup()
            assert setup.node_id == fake.node.node_id
            sub = await e2.kpm.subscribe(["airan.AiBusy", "airan.RadioBusy"], period_ms=20)
            seqs = []
            async for r in sub:
                seqs.append(r.sequence)
                assert 0 <= r.values["airan.RadioBusy"] <= 1
                if len(seqs) == 3:
                    break
            assert seqs == [1, 2, 3]
            await sub.delete()
            async for _ in sub:
                pass
            assert sub.ended is not None and sub.ended.ended_by == "ric"
            got: list[KpmReport] = []

            async def on_report(r: KpmReport) -> None:
                got.append(r)
                if len(got) == 2:
                    sub2.cancel()

            sub2 = await e2.kpm.subscribe(["airan.AiBusy"], period_ms=20, callback=on_report)
            await asyncio.wait_for(sub2.wait(), 10)
            assert [r.sequence for r in got] == [1, 2]
            res = await e2.cosched.set_policy(ai_share_cap=0.5)
            assert res.applied["ai_share_cap"] == 0.5
            await e2.cosched.set_policy(ai_share_cap=1.0)
            with pytest.raises(E2Error) as info:
                await e2.kpm.subscribe(["airan.AiBusy"], period_ms=3_600_001)
            assert info.value.cause == E2Cause("ricRequest", "event-trigger-not-supported")
            with pytest.raises(E2Error) as info:
                await e2.rc.slice_prb_quota(
                    [
                        SliceQuota(snssai=Snssai(sst=1), min_ratio=60),
                        SliceQuota(snssai=Snssai(sst=2), min_ratio=60),
                    ]
                )
            assert info.value.field == "ric_control_message.slice_prb_quota.quotas"

    asyncio.run(run())


def test_node_shutdown_ends_sdk_subscriptions() -> None:
    f = FakeNode(seed=6, o1=False).start()
    try:
        e2 = E2Client(f.e2_target)
        sub = e2.kpm.subscribe(["airan.AiBusy"], period_ms=20)
        next(sub)
    finally:
        f.stop()
    list(sub)
    assert sub.ended is not None
    assert sub.ended.ended_by == "e2-node"
    assert sub.ended.cause == E2Cause("misc", "om-intervention")
    e2.close()


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_kpm_monitor_example() -> None:
    out = run_example("xapp_kpm_monitor.py", "--seconds", "2", "--period-ms", "400")
    assert "ORAN-E2SM-KPM" in out
    assert "[node]" in out and "airan.RadioSlackLowUs=" in out and "DRB.UEThpDl=" in out
    assert "[ues ]" in out and "ue " in out
    assert out.rstrip().endswith("done")


def _closed_loop_example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "xapp_closed_loop", EXAMPLES / "xapp_closed_loop.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_closed_loop_example_lowers_and_raises_the_cap() -> None:
    """The example's loop against a node it does not own: where the slack is always below
    the low threshold it must lower the cap, and the node's arbiter runs with the cap the
    loop chose; above the high threshold it raises it again."""
    example = _closed_loop_example()
    lines: list[str] = []
    with FakeNode(seed=2, o1=False) as fake, E2Client(fake.e2_target) as e2:
        assert fake.node.arbiter.policy.ai_share_cap == 1.0
        # every period's 1st-percentile slack is far below 1 s: lower, each period
        cap, decisions = example.run_loop(
            e2, seconds=0.5, period_ms=100, low_us=1e6, high_us=1e6, cap=1.0, log=lines.append
        )
        assert decisions >= 1 and cap < 1.0
        assert any("-> lower ai_share_cap to 0.500" in line for line in lines)
        assert not any("raise" in line for line in lines)
        assert fake.node.arbiter.policy.ai_share_cap == pytest.approx(cap)
        assert fake.node.config.policy.ai_share_cap == pytest.approx(cap)
        # every slack is above -0.5 us: from the lowered cap the loop raises it
        lines.clear()
        low = cap
        cap, decisions = example.run_loop(
            e2, seconds=0.3, period_ms=100, low_us=-0.5, high_us=-0.5, cap=low, log=lines.append
        )
        assert decisions >= 1 and cap > low
        assert not any("lower" in line for line in lines)
        assert fake.node.arbiter.policy.ai_share_cap == pytest.approx(cap)


def test_closed_loop_example_runs_from_the_command_line() -> None:
    out = run_example(
        "xapp_closed_loop.py", "--seconds", "0.5", "--period-ms", "100", "--low-us", "1e9",
        "--high-us", "1e9",
    )  # fmt: skip
    assert "-> lower ai_share_cap to 0.500" in out
    assert "raise" not in out and "decisions, last cap" in out
