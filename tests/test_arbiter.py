"""The arbiter's loop: its edges, its bad input, and the shared-device behaviours."""

from __future__ import annotations

import itertools

import pytest

from airan.core import AiJob, FieldError, Policy, RanTask, Slice, SliceKind
from airan.sched.arbiter import Arbiter, Progress
from airan.sched.executors import DurationDist, SimExecutor

US = 1000
RAN = Slice.make(SliceKind.RAN, "ran", 100 * US)
AI = Slice.make(SliceKind.AI, "ai", 50 * US, tokens=2)
PROFILE = {RAN.key: DurationDist(100 * US, 100 * US, 0.0), AI.key: DurationDist(50 * US, 50 * US)}


def arbiter(policy: Policy | None = None, **kw: object) -> Arbiter:
    return Arbiter(SimExecutor(PROFILE, seed=1), policy or Policy(), **kw)  # type: ignore[arg-type]


def slots(n: int, period: int = 500 * US, deadline: int = 500 * US) -> list[RanTask]:
    return [RanTask(i * period, i * period + deadline, (RAN,)) for i in range(n)]


def test_ai_fills_the_idle_time_and_stops_for_radio() -> None:
    arb = arbiter()
    arb.add_job(AiJob(itertools.repeat(AI), tenant="llm"))
    arb.run(slots(100), 100 * 500 * US)
    r = arb.report(seed=1, slots=100)
    assert r.ran.misses == 0 and r.ran.tasks == 100
    assert r.ai.harvest_ratio > 0.95
    assert r.ai.tokens == 2 * r.ai.slices
    assert r.ai.tenants["llm"].slices == r.ai.slices
    # Radio waits at most one AI slice: latency <= AI slice + own work.
    assert r.ran.latency_us.max <= 150.0 + 1e-6


def test_a_source_may_ask_to_be_pulled_again_later() -> None:
    """A source fed by another process (FAPI) yields a time instead of a task: the loop
    pulls it again only once its clock is there, and serves AI meanwhile."""
    arb = arbiter()
    arb.add_job(AiJob(itertools.repeat(AI), tenant="llm"))
    pulled: list[tuple[int, int]] = []

    def source() -> object:
        for i in range(20):
            t = i * 500 * US
            yield max(0, t - 250 * US)  # "ask me again at t - 250 µs"
            pulled.append((i, arb.executor.clock.now_ns()))
            yield RanTask(t, t + 500 * US, (RAN,))
        yield 10**12  # a pause past the end ends the source

    arb.run(source(), 20 * 500 * US)  # type: ignore[arg-type]
    r = arb.report(seed=1, slots=20)
    assert r.ran.tasks == 20 and r.ran.misses == 0
    for i, now in pulled:  # never pulled before asked; announced before its release
        assert max(0, i * 500 * US - 250 * US) <= now <= i * 500 * US
    assert r.ai.harvest_ratio > 0.9  # the loop served AI while it waited


def test_tasks_released_after_the_end_are_not_waited_for() -> None:
    arb = arbiter(Policy(lookahead_us=0))
    late = RanTask(1_000_000 * US, 1_000_500 * US, (RAN,))
    arb.run([*slots(2), late], 1_000 * US)
    r = arb.report(seed=None, slots=2)
    assert r.ran.tasks == 2
    assert r.duration_s == pytest.approx(0.001)


def test_the_strategy_cannot_change_mid_run_but_knobs_can() -> None:
    arb = arbiter()
    arb.add_job(AiJob(itertools.repeat(AI)))
    changes: list[str] = []

    def progress(p: Progress) -> None:
        if not changes:
            arb.set_policy(Policy(guard_us=5))
            changes.append("knob")
            with pytest.raises(FieldError, match=r"policy\.name: cannot change the strategy"):
                arb.set_policy(Policy(name="fifo"))

    arb._progress = progress
    arb._progress_every_ns = 1
    arb.run(slots(50), 50 * 500 * US)
    assert changes == ["knob"] and arb.guard_ns == 5 * US
    arb.set_policy(Policy(name="fifo"))  # between runs: fine
    assert arb.strategy.name == "fifo"


def test_tasks_cannot_be_reused_across_runs() -> None:
    tasks = slots(3)
    arbiter().run(tasks, 1_500 * US)
    with pytest.raises(FieldError, match="has already run: make new tasks"):
        arbiter().run(tasks, 1_500 * US)


def test_release_before_the_start_and_out_of_order_are_clear_errors() -> None:
    arb = arbiter()
    arb.executor.clock.advance_to(10_000 * US)  # type: ignore[attr-defined]
    with pytest.raises(FieldError, match="before the run's start"):
        arb.run(slots(2), 1_000 * US)
    with pytest.raises(FieldError, match="must come in release order"):
        arbiter().run(list(reversed(slots(3))), 1_500 * US)
    # The arbiter is clean again after an error: a good run works.
    arb2 = arbiter()
    with pytest.raises(FieldError):
        arb2.run(list(reversed(slots(3))), 1_500 * US)
    t0 = arb2.executor.clock.now_ns()  # the failed run advanced the virtual clock
    arb2.run([RanTask(t0 + t.release_ns, t0 + t.deadline_ns, (RAN,)) for t in slots(3)], 1_500 * US)
    assert arb2.report(seed=None, slots=3).ran.tasks == 3


@pytest.mark.parametrize("duration", [0, -5, 1.5, True, 1 << 62])
def test_bad_duration(duration: object) -> None:
    with pytest.raises(FieldError, match="duration_ns"):
        arbiter().run([], duration)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"queue_capacity": 0}, "queue_capacity"),
        ({"queue_capacity": "big"}, "queue_capacity"),
        ({"progress_every_s": float("nan")}, "progress_every_s"),
    ],
)
def test_bad_arbiter_arguments(kw: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as e:
        arbiter(**kw)
    assert e.value.field == field


def test_too_much_announced_work_names_the_capacity() -> None:
    arb = arbiter(Policy(lookahead_us=100_000), queue_capacity=8)
    with pytest.raises(FieldError, match="queue_capacity: 8 radio tasks are already announced"):
        arb.run(slots(40, period=100 * US, deadline=10_000 * US), 4_000 * US)


def test_a_failing_ai_job_is_isolated_and_the_radio_goes_on() -> None:
    def broken() -> object:
        yield AI
        raise RuntimeError("CUDA error: an illegal memory access")

    arb = arbiter()
    arb.add_job(AiJob(broken(), tenant="bad", priority=1))  # type: ignore[arg-type]
    arb.add_job(AiJob(itertools.repeat(AI), tenant="good"))
    arb.run(slots(40), 40 * 500 * US)
    r = arb.report(seed=None, slots=40)
    assert r.ran.misses == 0 and r.ran.tasks == 40
    assert r.ai.tenants["bad"].slices == 1
    assert r.ai.tenants["good"].slices > 100
    assert len(r.ai.failed_jobs) == 1 and "illegal memory access" in r.ai.failed_jobs[0]


def test_share_cap_limits_ai_time() -> None:
    arb = arbiter(Policy(ai_share_cap=0.1, share_window_us=2_000))
    arb.add_job(AiJob(itertools.repeat(AI)))
    arb.run(slots(400), 400 * 500 * US)
    r = arb.report(seed=None, slots=400)
    # cap x (T + window) plus one slice, over T = 200 ms
    assert r.ai.busy_ratio <= 0.1 * (200 + 2) / 200 + 50 / 200_000
    assert r.ai.busy_ratio >= 0.09


def test_tdm_keeps_ai_in_its_window_and_fifo_blocks_the_radio() -> None:
    tdm = arbiter(Policy(name="tdm", tdm_period_us=500, tdm_radio_share=0.5))
    tdm.add_job(AiJob(itertools.repeat(AI)))
    tdm.run(slots(100), 100 * 500 * US)
    rt = tdm.report(seed=None, slots=100)
    assert rt.ran.misses == 0 and 0 < rt.ai.busy_ratio <= 0.5
    fifo = arbiter(Policy(name="fifo", fifo_depth=16))
    fifo.add_job(AiJob(itertools.repeat(AI)))
    fifo.run(slots(100), 100 * 500 * US)
    rf = fifo.report(seed=None, slots=100)
    assert rf.ran.latency_us.max > 500  # stuck behind 16 queued AI slices
    assert rf.ran.misses > 0


def test_a_kind_slower_than_declared_is_barred_and_probed_only_where_safe() -> None:
    """An AI step declared at 100 µs really takes 400 µs (max slice 200 µs). The warm-up
    trusts the declaration for its first runs, then bars the kind; later probes run
    only in radio gaps long enough to hold them, so the radio misses nothing more."""
    ai = Slice.make(SliceKind.AI, "ai.slow", 100 * US)
    ran = Slice.make(SliceKind.RAN, "ran.r", 150 * US)
    profile = {
        ai.key: DurationDist(400 * US, 400 * US, 0.0),
        ran.key: DurationDist(150 * US, 150 * US, 0.0),
    }
    # 250 µs period: gaps of 100 µs never hold a 420 µs probe (one may run after the last
    # release). 1 ms period: 850 µs gaps do, and probes run in them.
    for period, lookahead, min_probes, max_probes in ((250, 500, 0, 1), (1_000, 1_000, 5, 10**6)):
        arb = Arbiter(
            SimExecutor(profile, seed=2),
            Policy(max_ai_slice_us=200, guard_us=20, lookahead_us=lookahead),
        )
        arb.estimator.relearn_after = 200
        arb.add_job(AiJob(itertools.repeat(ai), tenant="u"))
        n = 20_000
        tasks = [RanTask(i * period * US, i * period * US + 350 * US, (ran,)) for i in range(n)]
        arb.run(tasks, n * period * US)
        r = arb.report(seed=None, slots=n)
        late = [t for t in tasks if t.completed_ns > t.deadline_ns or t.completed_ns < 0]
        assert len(late) <= 2 and all(t.release_ns < 2_000 * US for t in late)  # warm-up only
        assert min_probes <= r.ai.probes <= max_probes, r.ai.probes
        assert r.ai.overruns == 2  # the warm-up runs only: probes run within their budget
