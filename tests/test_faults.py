"""Faults, one test (at least) each: injected on purpose, detected by measurement, AI shed
first, an alarm raised, every miss blamed on the fault that caused it
(``airan.core.faults``, ``docs/reliability.md``)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airan.core import AiJob, FieldError, Policy, RanTask, Slice, SliceKind
from airan.core.faults import FaultKind, FaultPlan, FaultSchedule, FaultSpec
from airan.core.report import Reservoir
from airan.node import Node, NodeConfig
from airan.sched.arbiter import Arbiter
from airan.sched.executors import DurationDist, Failed, NumpyExecutor, SimExecutor, Stream
from airan.sched.faults import FaultInjector, InjectedFault
from airan.telemetry.trace import Recorder

US = 1000
MS = 1_000_000
RAN = Slice.make(SliceKind.RAN, "ran", 100 * US)
AI = Slice.make(SliceKind.AI, "ai", 50 * US, tokens=1)
PROFILE = {
    RAN.key: DurationDist(100 * US, 100 * US, 0.0),
    AI.key: DurationDist(50 * US, 50 * US, 0.0),
}
PERIOD = 500 * US
DEADLINE = 300 * US
HOLD_US = 5_000.0


def plan(*specs: dict[str, object]) -> FaultPlan:
    return FaultPlan.parse({"faults": list(specs)})


def sim_arbiter(faults: FaultPlan, *, tenants: tuple[str, ...] = ("llm",)) -> Arbiter:
    arb = Arbiter(SimExecutor(PROFILE, seed=1), Policy(shed_hold_us=HOLD_US))
    arb.recorder = Recorder(1 << 16)
    arb.install_faults(FaultInjector(faults, arb.executor))
    for t in tenants:
        arb.add_job(AiJob(itertools.repeat(AI), tenant=t))
    return arb


def slots(n: int) -> list[RanTask]:
    return [RanTask(i * PERIOD, i * PERIOD + DEADLINE, (RAN,)) for i in range(n)]


def ai_starts(arb: Arbiter) -> list[int]:
    assert arb.recorder is not None
    return [s.start_ns for s in arb.recorder.slices() if s.stream == "ai"]


def assert_shed(arb: Arbiter, t_fault: int) -> None:
    """No AI slice started during the hold after the fault; AI came back after it."""
    starts = ai_starts(arb)
    hold = round(HOLD_US * US)
    assert not [t for t in starts if t_fault <= t < t_fault + hold], "AI ran while shed"
    assert [t for t in starts if t >= t_fault + hold], "AI never came back after the hold"


# -- the fault plan ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"kind": "meltdown"}, "faults.0.kind", "radio_overrun"),
        ({"kind": "ai_hang", "factor": 3.0}, "faults.0", "factor does not apply to a ai_hang"),
        ({"kind": "radio_overrun", "factor": 1.0}, "faults.0.factor", "greater than 1"),
        ({"kind": "ai_raise", "count": 3}, "faults.0", "count 3 needs every_s"),
        ({"kind": "executor_error", "target": "disk"}, "faults.0.target", "'radio' or 'ai'"),
        ({"kind": "ai_hang", "hang_ms": float("nan")}, "fault_plan", "JSON"),
        ({"kind": "ai_raise", "tenant": "bad name!"}, "faults.0.tenant", "pattern"),
        ({"kind": "l2_silence", "at_s": -1}, "faults.0.at_s", "greater than or equal to 0"),
    ],
)
def test_a_bad_fault_plan_names_the_field(spec: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(FieldError) as exc:
        plan(spec)
    assert exc.value.field.removeprefix("fault_plan.").startswith(field)
    assert reason in str(exc.value)


def test_the_schedule_fires_each_occurrence_once_in_order() -> None:
    sched = FaultSchedule(
        plan(
            {"kind": "radio_overrun", "at_s": 0.001, "every_s": 0.002, "count": 3},
            {"kind": "ai_hang", "at_s": 0.0, "tenant": "b"},
        )
    )
    sched.start(10 * MS)
    assert sched.take(FaultKind.RADIO_OVERRUN, 10 * MS) is None  # not due yet
    assert sched.take(FaultKind.AI_HANG, 10 * MS, tenant="a") is None  # another tenant's
    assert sched.take(FaultKind.AI_HANG, 10 * MS, tenant="b") is not None
    fired = [sched.take(FaultKind.RADIO_OVERRUN, 10 * MS + t * MS) for t in (1, 1, 3, 5, 9)]
    assert [None if f is None else f.occurrence for f in fired] == [0, None, 1, 2, None]
    assert [j.fired_ns for j in sched.fired() if j.kind is FaultKind.RADIO_OVERRUN] == [
        1 * MS, 3 * MS, 5 * MS,
    ]  # fmt: skip
    sched.start(0)  # a new run: everything is due again
    assert not sched.fired() and sched.wants(FaultKind.RADIO_OVERRUN)


@given(st.lists(st.integers(0, 10**9), max_size=400), st.integers(1, 64))
def test_a_reservoir_is_bounded_and_keeps_the_exact_count_and_max(
    xs: list[int], capacity: int
) -> None:
    r = Reservoir(capacity, seed=3)
    for x in xs:
        r.add(x)
    assert len(r) == min(len(xs), capacity) and r.count == len(xs)
    assert r.max == (max(xs) if xs else None)
    assert set(r.values) <= set(xs)
    if len(xs) <= capacity:
        assert list(r.values) == xs  # short runs: the whole stream, exact percentiles


# -- each fault in the arbiter (simulated device: deterministic) ---------------------------


def test_a_radio_slice_overrunning_fivefold_sheds_ai_and_takes_the_blame() -> None:
    arb = sim_arbiter(plan({"kind": "radio_overrun", "at_s": 0.010, "factor": 5.0}))
    arb.run(slots(100), 100 * PERIOD)
    r = arb.report(seed=1, slots=100)
    f = r.faults
    assert f.detected == {"radio_overrun": 1}
    assert len(f.injected) == 1 and f.injected[0]["kind"] == "radio_overrun"
    rec = f.records[0]
    assert "5.0x its prediction" in rec["detail"] or "ran 500 us" in rec["detail"]
    # the overrunning task itself ends 200 µs past its 300 µs deadline: one miss, blamed
    assert r.ran.misses == 1 and f.misses_blamed == 1 and f.misses_unexplained == 0
    assert rec["misses"] == 1
    assert arb.recorder is not None
    (miss,) = arb.recorder.misses()
    assert miss.fault_id == rec["fault_id"]
    assert_shed(arb, round(rec["t_us"] * US))
    assert f.shed_us == pytest.approx(HOLD_US)


def test_an_ai_slice_that_hangs_is_detected_shed_and_blamed() -> None:
    arb = sim_arbiter(plan({"kind": "ai_hang", "at_s": 0.010, "hang_ms": 2.0}))
    arb.run(slots(100), 100 * PERIOD)
    r = arb.report(seed=1, slots=100)
    f = r.faults
    assert f.detected == {"ai_hang": 1}
    rec = f.records[0]
    assert "tenant llm ran 2000 us" in rec["detail"]
    # the slots released during the 2 ms hang could not meet their 300 µs deadlines:
    # every one of those misses, and only those, is blamed on the hang
    assert r.ran.misses >= 3
    assert f.misses_blamed == r.ran.misses == rec["misses"] and f.misses_unexplained == 0
    assert arb.recorder is not None
    t_end = round(rec["t_us"] * US)
    for m in arb.recorder.misses():
        assert m.fault_id == rec["fault_id"] and m.deadline_ns <= t_end + PERIOD
    assert_shed(arb, t_end)
    # after the hang the radio meets every deadline again (AI shed, then one slice at a time)
    late = [m for m in arb.recorder.misses() if m.deadline_ns > t_end + PERIOD]
    assert not late


def test_an_executor_error_on_a_radio_slice_loses_that_task_only() -> None:
    arb = sim_arbiter(plan({"kind": "executor_error", "at_s": 0.010, "target": "radio"}))
    arb.run(slots(100), 100 * PERIOD)
    r = arb.report(seed=1, slots=100)
    f = r.faults
    assert f.detected == {"executor_error": 1}
    assert "InjectedFault" in f.records[0]["detail"]
    assert r.ran.tasks == 100 and r.ran.misses == 1 and r.ran.dropped == 1
    assert f.misses_blamed == 1 and f.records[0]["misses"] == 1
    assert_shed(arb, round(f.records[0]["t_us"] * US))
    assert r.ai.failed_jobs == []


def test_an_executor_error_on_an_ai_slice_ends_that_job_only() -> None:
    arb = sim_arbiter(
        plan({"kind": "executor_error", "at_s": 0.010, "target": "ai"}), tenants=("a", "b")
    )
    arb.run(slots(100), 100 * PERIOD)
    r = arb.report(seed=1, slots=100)
    assert r.faults.detected == {"executor_error": 1}
    assert len(r.ai.failed_jobs) == 1 and "failed on the device" in r.ai.failed_jobs[0]
    assert r.ran.misses == 0
    failed = "a" if "tenant a" in r.ai.failed_jobs[0] else "b"
    other = "b" if failed == "a" else "a"
    t = round(r.faults.records[0]["t_us"] * US)
    assert arb.recorder is not None
    after = [s for s in arb.recorder.slices() if s.stream == "ai" and s.start_ns > t]
    assert after and {s.tenant for s in after} == {other}  # the other job goes on
    assert_shed(arb, t)


def test_an_ai_job_that_raises_is_isolated_and_reported() -> None:
    arb = sim_arbiter(plan({"kind": "ai_raise", "at_s": 0.010, "tenant": "a"}), tenants=("a", "b"))
    arb.run(slots(100), 100 * PERIOD)
    r = arb.report(seed=1, slots=100)
    (err,) = r.ai.failed_jobs
    assert "tenant a" in err and "InjectedFault" in err
    assert r.ran.misses == 0 and r.ran.tasks == 100
    assert r.ai.tenants["b"].slices > r.ai.tenants["a"].slices > 0
    assert r.faults.injected[0]["kind"] == "ai_raise"


def test_misses_without_a_fault_are_not_blamed_on_one() -> None:
    """An overload with no fault: the misses stay unexplained (nothing to blame)."""
    arb = sim_arbiter(plan({"kind": "radio_overrun", "at_s": 10.0}))  # never fires
    tasks = [RanTask(i * 100 * US, i * 100 * US + 150 * US, (RAN, RAN)) for i in range(50)]
    arb.run(tasks, 50 * 100 * US)
    r = arb.report(seed=1, slots=50)
    assert r.ran.misses > 0 and r.faults.misses_blamed == 0
    assert r.faults.misses_unexplained == r.ran.misses and r.faults.detected == {}


# -- on the CPU, for real ------------------------------------------------------------------


def test_faults_on_the_cpu_executor() -> None:
    """The real CPU executor: an exception in a slice's work comes back as a failed
    completion (the loop goes on); a radio overrun really takes five times longer."""
    a = np.ones((64, 64))

    def work() -> None:
        a @ a

    ran = Slice.make(SliceKind.RAN, "ran", 300 * US, work=work)
    ai = Slice.make(SliceKind.AI, "ai", 100 * US, work=work, tokens=1)
    ex = NumpyExecutor()
    arb = Arbiter(ex, Policy(shed_hold_us=HOLD_US, max_ai_slice_us=1000.0))
    arb.recorder = Recorder(1 << 16)
    arb.install_faults(
        FaultInjector(
            plan(
                {"kind": "radio_overrun", "at_s": 0.05, "factor": 5.0},
                {"kind": "executor_error", "at_s": 0.10, "target": "radio"},
                {"kind": "executor_error", "at_s": 0.15, "target": "ai"},
            ),
            ex,
        )
    )
    arb.add_job(AiJob(itertools.repeat(ai), tenant="llm"))
    arb.add_job(AiJob(itertools.repeat(ai), tenant="other"))
    t0 = ex.clock.now_ns() + 2 * MS
    n = 100
    tasks = [RanTask(t0 + i * 2 * MS, t0 + i * 2 * MS + 1900 * US, (ran,)) for i in range(n)]
    arb.run(tasks, t0 - ex.clock.now_ns() + n * 2 * MS)
    r = arb.report(seed=None, slots=n)
    assert r.ran.tasks == n
    assert r.faults.detected.get("executor_error") == 2
    assert r.faults.detected.get("radio_overrun", 0) >= 1
    assert len(r.ai.failed_jobs) == 1 and "InjectedFault" in r.ai.failed_jobs[0]
    overrun = [
        rec for rec in r.faults.records if rec["kind"] == "radio_overrun"
        and any(j["kind"] == "radio_overrun" for j in r.faults.injected)
    ]  # fmt: skip
    assert overrun and any("x its prediction" in rec["detail"] for rec in overrun)


def test_the_cpu_executor_reports_a_failing_slice_and_goes_on() -> None:
    ex = NumpyExecutor()

    def boom() -> None:
        raise ValueError("boom")

    ex.submit(Slice.make(SliceKind.RAN, "x", 1000, work=boom), Stream.RADIO, "t1")
    ex.submit(Slice.make(SliceKind.RAN, "y", 1000, work=lambda: None), Stream.RADIO, "t2")
    out: list[tuple[object, int, int, int]] = []
    while ex.busy() or not out:
        ex.wait(ex.clock.now_ns() + MS)
        ex.poll(out)
    ex.wait(ex.clock.now_ns() + MS)
    ex.poll(out)
    tag = out[0][0]
    assert isinstance(tag, Failed) and tag.tag == "t1" and isinstance(tag.error, ValueError)
    assert out[1][0] == "t2"


# -- the live node: alarms, watchdog, L2 silence -------------------------------------------


CONDITIONS = ("radioFault", "aiFault", "executorFault", "l2Silence", "deadlineMissRatio")


def _alarms_seen(node: Node, seconds: float, poll_s: float = 0.02) -> tuple[set[str], list[str]]:
    from airan.ric.o1 import O1Service

    o1 = O1Service(node, None, monitor=False)  # polled by hand below
    raised: set[str] = set()
    watchdog: list[str] = []
    try:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            o1.poll()
            for f in node.health().faults:
                if f.text.startswith("watchdog") and f.text not in watchdog:
                    watchdog.append(f.text)
            raised |= {c for c in CONDITIONS if o1.is_active(c)}
            time.sleep(poll_s)
    finally:
        o1.close()
    return raised, watchdog


def test_a_live_node_raises_an_alarm_for_each_fault() -> None:
    """Radio overrun, AI hang (reported by the watchdog while it lasts), AI job raising,
    executor error and L2 silence, injected into a live node (simulated device, real
    time): each raises its O1 alarm, and the node keeps serving slots."""
    cfg = NodeConfig.parse(
        {"policy": {"shed_hold_us": 20_000.0}, "alarms": {"l2_silence_ms": 100.0, "window_s": 5.0}}
    )
    node = Node.simulated(cfg, seed=3)
    node.install_faults(
        plan(
            {"kind": "radio_overrun", "at_s": 0.2, "factor": 5.0},
            {"kind": "ai_hang", "at_s": 0.4, "hang_ms": 300.0},
            {"kind": "ai_raise", "at_s": 0.9},
            {"kind": "executor_error", "at_s": 1.0, "target": "radio"},
            {"kind": "l2_silence", "at_s": 1.2, "duration_ms": 400.0},
        )
    )
    node.start(2.2)
    try:
        raised, watchdog = _alarms_seen(node, 2.0)
        tasks_before = node.arbiter.counters().tasks
        time.sleep(0.15)
        assert node.arbiter.counters().tasks > tasks_before or not node.running
    finally:
        node.stop()
    assert {"radioFault", "aiFault", "executorFault", "l2Silence"} <= raised
    assert any("AI tenant" in w and "has run" in w for w in watchdog), watchdog
    r = node.report()
    assert {"radio_overrun", "ai_hang", "executor_error"} <= set(r.faults.detected)
    assert len(r.ai.failed_jobs) == 1 and "InjectedFault" in r.ai.failed_jobs[0]
    assert r.faults.misses_unexplained <= r.ran.misses - r.faults.misses_blamed
    fired = {j["kind"] for j in r.faults.injected}
    assert fired == {"radio_overrun", "ai_hang", "ai_raise", "executor_error", "l2_silence"}


def test_an_injector_refuses_anything_but_a_fault_plan() -> None:
    ex = SimExecutor(PROFILE)
    with pytest.raises(FieldError, match="plan: must be a FaultPlan"):
        FaultInjector({"faults": [{"kind": "ai_raise"}]}, ex)  # type: ignore[arg-type]
    with pytest.raises(FieldError, match="plan: must be a FaultPlan"):
        Node.simulated(seed=1).install_faults([{"kind": "ai_raise"}])  # type: ignore[arg-type]


def test_faults_cannot_be_installed_while_running() -> None:
    node = Node.simulated(seed=1)
    node.start(0.5)
    try:
        with pytest.raises(FieldError, match="faults"):
            node.install_faults(plan({"kind": "ai_raise"}))
    finally:
        node.stop()


def test_fault_spec_times() -> None:
    spec = FaultSpec.parse({"kind": "radio_overrun", "at_s": 1.0, "every_s": 0.5, "count": 3})
    assert spec.times_ns() == [1_000_000_000, 1_500_000_000, 2_000_000_000]
    assert InjectedFault.__mro__[1] is RuntimeError
