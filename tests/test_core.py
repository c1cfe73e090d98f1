"""Pure-logic pieces: slices, tasks, jobs, estimator, policy, clocks, report contract."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.core import (
    AiJob,
    Estimator,
    FieldError,
    Policy,
    RanTask,
    RunReport,
    Slice,
    SliceKind,
    Slo,
    VirtualClock,
    WallClock,
)


def ran(bound: int = 1000, **shape: int) -> Slice:
    return Slice.make(SliceKind.RAN, "ran.op", bound, shape)


# -- slices and tasks ---------------------------------------------------------------
def test_slice_key_is_op_and_sorted_shape() -> None:
    a = Slice.make(SliceKind.RAN, "pusch", 10, {"prb": 273, "layers": 4})
    b = Slice.make(SliceKind.RAN, "pusch", 10, {"layers": 4, "prb": 273})
    assert a.key == b.key == ("pusch", (("layers", 4), ("prb", 273)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bound_ns": 0}, "Slice.bound_ns"),
        ({"bound_ns": -5}, "Slice.bound_ns"),
        ({"bound_ns": 1.5}, "Slice.bound_ns"),
        ({"op": ""}, "Slice.op"),
        ({"tokens": -1}, "Slice.tokens"),
        ({"work": 42}, "Slice.work"),
    ],
)
def test_bad_slice_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"kind": SliceKind.RAN, "op": "x", "bound_ns": 10}
    args.update(kwargs)
    with pytest.raises(FieldError) as e:
        Slice(**args)  # type: ignore[arg-type]
    assert e.value.field == field
    assert field in str(e.value)


def test_ran_task_needs_a_deadline_after_release() -> None:
    with pytest.raises(FieldError, match=r"RanTask.deadline_ns: is required"):
        RanTask(0, None, (ran(),))  # type: ignore[arg-type]
    with pytest.raises(FieldError, match=r"RanTask.deadline_ns: must be after release_ns"):
        RanTask(100, 100, (ran(),))
    with pytest.raises(FieldError, match=r"RanTask.release_ns"):
        RanTask(-1, 100, (ran(),))
    with pytest.raises(FieldError, match=r"RanTask.slices: must hold at least one"):
        RanTask(0, 100, ())
    ai = Slice.make(SliceKind.AI, "ai", 10)
    with pytest.raises(FieldError, match=r"RanTask.slices: must be RAN slices"):
        RanTask(0, 100, (ai,))


def test_ran_task_ids_are_unique() -> None:
    ids = {RanTask(0, 10, (ran(),)).task_id for _ in range(100)}
    assert len(ids) == 100


def test_ai_job_peek_take_and_next_slice_source() -> None:
    a = Slice.make(SliceKind.AI, "ai", 10, tokens=1)

    class Src:
        def __init__(self) -> None:
            self.n = 0

        def next_slice(self) -> Slice | None:
            self.n += 1
            return a if self.n <= 2 else None

    job = AiJob(Src(), tenant="t")
    assert job.peek() is a and job.peek() is a  # peek does not consume
    assert job.take() is a and job.take() is a
    assert job.peek() is None and job.done
    with pytest.raises(FieldError, match="no slice left"):
        job.take()


def test_ai_job_rejects_bad_input() -> None:
    with pytest.raises(FieldError, match=r"AiJob\.tenant"):
        AiJob([], tenant="")
    with pytest.raises(FieldError, match=r"AiJob\.source"):
        AiJob(42)  # type: ignore[arg-type]
    job = AiJob([ran()])
    assert job.peek() is None and job.done
    assert job.error is not None and "not an AI Slice" in job.error

    def boom() -> Iterator[Slice]:
        raise RuntimeError("weights missing")
        yield ran()

    job = AiJob(boom(), tenant="t9")
    assert job.peek() is None and job.done
    assert job.error is not None and "weights missing" in job.error and "t9" in job.error
    with pytest.raises(FieldError, match=r"Slo\.ttft_ms"):
        Slo(ttft_ms=0)


# -- estimator -------------------------------------------------------------------
def test_estimator_uses_declared_bound_until_warm() -> None:
    est = Estimator(min_samples=100, half_life=1000)
    s = ran(bound=50_000)
    for _ in range(99):
        est.observe(s, 10_000)
    assert est.predict(s) == 50_000
    est.observe(s, 10_000)
    p = est.predict(s)
    assert 10_000 <= p <= 10_000 * 1.02 * 1.05 + 1


def test_estimator_warmup_catches_a_slow_device_but_forgives_one_outlier() -> None:
    est = Estimator(min_samples=100, half_life=1000, margin=0.0)
    cold = ran(bound=50_000, k=1)
    est.observe(cold, 5_000_000)  # one cold first call
    for _ in range(10):
        est.observe(cold, 10_000)
    assert est.predict(cold) == 50_000
    slow = ran(bound=50_000, k=2)
    for _ in range(2):
        est.observe(slow, 400_000)  # the device is slower than declared
    assert est.predict(slow) >= 400_000


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.05, 2.0),
    st.integers(1_000, 1_000_000),
    st.sampled_from([0.99, 0.999]),
)
def test_estimator_predicts_at_least_the_empirical_quantile(
    seed: int, sigma: float, median: int, q: float
) -> None:
    rng = np.random.default_rng(seed)
    xs = [int(x) for x in np.rint(median * rng.lognormal(0.0, sigma, 3_000))]
    est = Estimator(quantile=q, margin=0.0, min_samples=1_000, half_life=100_000, refresh_every=1)
    s = ran(bound=1)
    for x in xs:
        est.observe(s, x)
    pred = est.predict(s)
    # What admission relies on: at most a (1 - q) share of durations exceed the prediction.
    assert sum(x > pred for x in xs) <= (1.0 - q) * len(xs)
    # ... and it is not wastefully high: within a bucket (2 %) of the largest sample.
    assert pred <= max(xs) * 1.02 + 1


def test_estimator_follows_a_device_that_slows_down() -> None:
    est = Estimator(min_samples=100, half_life=1_000, refresh_every=1)
    s = ran(bound=1)
    for _ in range(3_000):
        est.observe(s, 10_000)
    fast = est.predict(s)
    for _ in range(3_000):
        est.observe(s, 30_000)
    assert est.predict(s) >= 30_000 > fast


def test_estimator_keeps_the_tail_across_halvings() -> None:
    """Halving must not erase the sparse top buckets that hold the p99.9."""
    rng = np.random.default_rng(5)
    est = Estimator(quantile=0.999, margin=0.0, min_samples=1_000, half_life=5_000)
    s = ran(bound=1)
    xs = [int(x) for x in np.rint(100_000 * rng.lognormal(0.0, 1.0, 40_000))]
    exceed = 0
    for n, x in enumerate(xs):
        if n >= 1_000 and x > est.predict(s):
            exceed += 1
        est.observe(s, x)
    # Online, across 7 halvings, at most ~0.1 % of durations exceed the prediction.
    assert exceed <= 0.0015 * (len(xs) - 1_000)


def test_a_refused_kind_becomes_due_for_a_probe_and_can_be_forgotten() -> None:
    est = Estimator(min_samples=10, half_life=100, relearn_after=50)
    s = ran(bound=20_000)
    for _ in range(20):
        est.observe(s, 900_000)  # a slow spell: learned far above the bound
    assert not any(est.refused(s) for _ in range(49))
    assert est.refused(s)  # the 50th refusal in a row: due for a probe
    assert est.predict(s) > 900_000  # nothing forgotten by refusing
    est.observe(s, 900_000)  # a probe that was still slow resets the count
    assert not est.refused(s)
    est.forget(s)  # what the arbiter does after a probe that fits
    assert est.predict(s) == 20_000


def test_estimator_keys_by_shape() -> None:
    est = Estimator(min_samples=10, half_life=100, refresh_every=1)
    small, big = ran(bound=1, prb=10), ran(bound=1, prb=100)
    for _ in range(20):
        est.observe(small, 1_000)
        est.observe(big, 9_000)
    assert est.predict(small) < 2_000 < 9_000 <= est.predict(big)
    assert {k.key for k in est.summary()} == {small.key, big.key}


@pytest.mark.parametrize("bad", [-1, -1_000_000])
def test_estimator_rejects_negative_duration(bad: int) -> None:
    with pytest.raises(FieldError, match=r"duration_ns: must be >= 0"):
        Estimator().observe(ran(), bad)


def test_estimator_rejects_non_integer_duration() -> None:
    with pytest.raises(FieldError, match=r"duration_ns: must be an integer"):
        Estimator().observe(ran(), 1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantile": 1.0}, "Estimator.quantile"),
        ({"margin": -0.1}, "Estimator.margin"),
        ({"min_samples": 0}, "Estimator.min_samples"),
        ({"min_samples": 10, "half_life": 15}, "Estimator.half_life"),
    ],
)
def test_estimator_bad_config(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(FieldError) as e:
        Estimator(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


# -- policy -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"guard_us": -1}, "policy.guard_us"),
        ({"max_ai_slice_us": 0}, "policy.max_ai_slice_us"),
        ({"ai_share_cap": 1.5}, "policy.ai_share_cap"),
        ({"name": "greedy"}, "policy.name"),
        ({"tdm_radio_share": 1.0}, "policy.tdm_radio_share"),
        ({"fifo_depth": 0}, "policy.fifo_depth"),
        ({"colour": "red"}, "policy.colour"),
        # strict: strings are not numbers or flags, a fraction is not an integer
        ({"guard_us": "30"}, "policy.guard_us"),
        ({"tenants": {"llm": {"paused": "yes"}}}, "policy.tenants.llm.paused"),
        ({"fifo_depth": 2.0}, "policy.fifo_depth"),
        ({"guard_us": float("nan")}, "policy"),
    ],
)
def test_bad_policy_value_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as e:
        Policy.parse(data)
    assert e.value.field == field
    assert str(e.value).startswith(field + ":")


def test_policy_guard_must_leave_room_for_a_slice() -> None:
    with pytest.raises(FieldError, match=r"guard_us .* must be smaller than max_ai_slice_us"):
        Policy.parse({"guard_us": 300, "max_ai_slice_us": 200})


def test_policy_is_frozen_and_converts_to_ns() -> None:
    p = Policy(guard_us=12.5)
    assert p.ns("guard_us") == 12_500
    with pytest.raises(ValueError):
        p.guard_us = 3  # type: ignore[misc]


# -- clocks ---------------------------------------------------------------------------
def test_virtual_clock_never_goes_back() -> None:
    c = VirtualClock()
    c.advance_to(10)
    assert c.now_ns() == 10
    with pytest.raises(FieldError, match="cannot go back"):
        c.advance_to(5)


def test_wall_clock_sleeps_until() -> None:
    c = WallClock()
    t = c.now_ns() + 2_000_000
    c.sleep_until(t)
    assert c.now_ns() >= t


# -- report contract ------------------------------------------------------------------
CONTRACT = [
    "backend",
    "device",
    "policy",
    "seed",
    "duration_s",
    "slots",
    "ran.tasks",
    "ran.misses",
    "ran.deadline_met_ratio",
    "ran.busy_ratio",
    "ran.latency_us.p50",
    "ran.latency_us.p99",
    "ran.latency_us.p999",
    "ran.latency_us.max",
    "ai.slices",
    "ai.busy_ratio",
    "ai.harvest_ratio",
    "ai.tokens",
    "ai.tokens_per_s",
    "arbiter.decision_us.p50",
    "arbiter.decision_us.p99",
]


def test_run_report_has_the_contract_fields() -> None:
    from airan.runner import simulate

    report = simulate(200, Policy(), seed=1)
    doc = json.loads(report.to_json())
    for path in CONTRACT:
        node = doc
        for part in path.split("."):
            assert part in node, f"{path} missing from the run report"
            node = node[part]
    assert doc["workload"]["synthetic"] is True
    assert RunReport.model_validate_json(report.to_json()) == report
