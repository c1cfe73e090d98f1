"""AI tenants: weighted shares of the radio's idle time, quotas, pause, metering."""

from __future__ import annotations

import itertools

import pytest

from airan.core import AiJob, FieldError, Policy, RanTask, Slice, SliceKind
from airan.core.policy import TenantPolicy
from airan.sched.arbiter import Arbiter
from airan.sched.executors import DurationDist, SimExecutor

US = 1000
RAN = Slice.make(SliceKind.RAN, "ran", 200 * US)
PROFILE = {RAN.key: DurationDist(150 * US, 200 * US)}


def ai_slice(tenant: str, mean_us: float) -> Slice:
    s = Slice.make(SliceKind.AI, f"ai.{tenant}", int(mean_us * 1.5 * US), tokens=1)
    PROFILE[s.key] = DurationDist(mean_us * US, int(mean_us * 1.5 * US))
    return s


def radio(slots: int) -> list[RanTask]:
    return [RanTask(i * 500 * US, (i + 1) * 500 * US, (RAN,)) for i in range(slots)]


def run(policy: Policy, jobs: list[tuple[str, float]], slots: int = 4000) -> Arbiter:
    slices = [(tenant, ai_slice(tenant, mean_us)) for tenant, mean_us in jobs]
    arb = Arbiter(SimExecutor(PROFILE, seed=2), policy)
    for tenant, s in slices:
        arb.add_job(AiJob(itertools.repeat(s), tenant=tenant))
    arb.run(radio(slots), slots * 500 * US)
    return arb


def test_weighted_shares_follow_the_weights_within_5_percent() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0}
    policy = Policy(tenants={k: TenantPolicy(weight=w) for k, w in weights.items()})
    # Different slice sizes per tenant: fairness is in device time, not in slices.
    arb = run(policy, [("a", 30), ("b", 60), ("c", 45)])
    r = arb.report(seed=2, slots=4000)
    assert r.ran.misses == 0
    total = sum(u.busy_us for u in r.ai.tenants.values())
    for name, w in weights.items():
        share = r.ai.tenants[name].busy_us / total
        assert share == pytest.approx(w / 6.0, rel=0.05), (name, share)


def test_a_tenant_over_its_quota_is_throttled_and_the_others_take_the_rest() -> None:
    policy = Policy(
        tenants={"capped": TenantPolicy(weight=10, quota_us_per_s=50_000), "free": TenantPolicy()}
    )
    arb = run(policy, [("capped", 40), ("free", 40)])
    r = arb.report(seed=2, slots=4000)
    seconds = r.duration_s
    capped = r.ai.tenants["capped"]
    # 50 ms of device time per second, plus the bucket's burst (share_window_us) and a slice
    assert capped.busy_us / 1e6 <= 0.05 * seconds + 0.05 * 0.01 + 60e-6
    assert capped.busy_us / 1e6 >= 0.045 * seconds
    assert capped.throttled > 0
    assert r.ai.tenants["free"].busy_us > 5 * capped.busy_us
    assert r.ran.misses == 0


def test_a_paused_tenant_gets_nothing_and_resumes() -> None:
    tenants = {"x": TenantPolicy(paused=True), "y": TenantPolicy()}
    r = run(Policy(tenants=tenants), [("x", 40), ("y", 40)], slots=200).report(seed=2, slots=200)
    assert r.ai.tenants["x"].slices == 0 and r.ai.tenants["y"].slices > 0


def test_unknown_tenant_is_refused_and_other_jobs_go_on() -> None:
    nobody, known = ai_slice("nobody", 40), ai_slice("known", 40)
    arb = Arbiter(SimExecutor(PROFILE, seed=2), Policy(tenants={"known": TenantPolicy()}))
    with pytest.raises(FieldError, match=r"AiJob\.tenant: unknown tenant 'nobody'.*known"):
        arb.add_job(AiJob(itertools.repeat(nobody), tenant="nobody"))
    arb.add_job(AiJob(itertools.repeat(known), tenant="known"))
    arb.run(radio(100), 100 * 500 * US)
    r = arb.report(seed=2, slots=100)
    assert set(r.ai.tenants) == {"known"} and r.ai.tenants["known"].slices > 0


def test_a_policy_that_drops_a_tenant_with_jobs_is_refused_whole() -> None:
    before = Policy(guard_us=10, tenants={"a": TenantPolicy(), "b": TenantPolicy()})
    arb = Arbiter(SimExecutor(PROFILE), before)
    arb.add_job(AiJob(itertools.repeat(ai_slice("a", 40)), tenant="a"))
    with pytest.raises(FieldError, match=r"policy\.tenants: jobs of tenant"):
        arb.set_policy(Policy(guard_us=50, tenants={"b": TenantPolicy()}))
    assert arb.policy is before and arb.guard_ns == 10 * US  # nothing half-applied


@pytest.mark.parametrize(
    ("tenants", "needle"),
    [
        ({"a": {"weight": 0}}, "weight"),
        ({"a": {"quota_us_per_s": -1}}, "quota_us_per_s"),
        ({"bad name!": {}}, "tenant name 'bad name!'"),
        ({"a": {"colour": 1}}, "colour"),
    ],
)
def test_bad_tenant_policy(tenants: dict[str, dict[str, object]], needle: str) -> None:
    with pytest.raises(FieldError, match=needle):
        Policy.parse({"tenants": tenants})


def test_a_quota_too_small_for_one_slice_is_refused() -> None:
    with pytest.raises(FieldError, match="tenant 'tiny': quota_us_per_s x share_window_us"):
        Policy.parse({"tenants": {"tiny": {"quota_us_per_s": 5_000}}})


def _shares(arb: Arbiter, before: dict[str, float]) -> dict[str, float]:
    now = {j.tenant: j.busy_ns for j in arb.jobs}
    delta = {k: now[k] - before.get(k, 0) for k in now}
    total = sum(delta.values())
    return {k: v / total for k, v in delta.items()}


def test_resuming_or_reweighting_banks_no_credit() -> None:
    """A tenant unpaused mid-run, or whose weight changes, gets its fair share from then
    on, not a catch-up burst (regression)."""
    a, b = ai_slice("a", 40), ai_slice("b", 40)
    tenants = {"a": TenantPolicy(), "b": TenantPolicy(paused=True)}
    arb = Arbiter(SimExecutor(PROFILE, seed=2), Policy(tenants=tenants))
    arb.add_job(AiJob(itertools.repeat(a), tenant="a"))
    arb.add_job(AiJob(itertools.repeat(b), tenant="b"))
    snapshots: list[dict[str, float]] = []

    def progress(p: object) -> None:
        t = arb.executor.clock.now_ns()
        if t >= 200_000 * US and len(snapshots) == 0:
            snapshots.append({j.tenant: j.busy_ns for j in arb.jobs})
            arb.set_policy(Policy(tenants={"a": TenantPolicy(), "b": TenantPolicy()}))
        elif t >= 400_000 * US and len(snapshots) == 1:
            assert _shares(arb, snapshots[0])["b"] == pytest.approx(0.5, abs=0.05)
            snapshots.append({j.tenant: j.busy_ns for j in arb.jobs})
            arb.set_policy(Policy(tenants={"a": TenantPolicy(weight=3), "b": TenantPolicy()}))
        elif t >= 600_000 * US and len(snapshots) == 2:
            assert _shares(arb, snapshots[1])["a"] == pytest.approx(0.75, abs=0.05)
            snapshots.append({})

    arb._progress = progress  # type: ignore[assignment]
    arb._progress_every_ns = 1
    arb.run(radio(1400), 1400 * 500 * US)
    assert len(snapshots) == 3


def test_a_newcomer_is_levelled_with_competing_tenants_not_paused_ones() -> None:
    """C joins mid-run beside B (running for a while) and P (paused, served nothing):
    C shares with B from then on; it is not levelled down to P and given a burst."""
    p, b, c = ai_slice("p", 40), ai_slice("b", 40), ai_slice("c", 40)
    tenants = {n: TenantPolicy(paused=(n == "p")) for n in ("p", "b", "c")}
    arb = Arbiter(SimExecutor(PROFILE, seed=2), Policy(tenants=tenants))
    arb.add_job(AiJob(itertools.repeat(p), tenant="p"))
    arb.add_job(AiJob(itertools.repeat(b), tenant="b"))
    marks: list[dict[str, float]] = []

    def progress(_: object) -> None:
        t = arb.executor.clock.now_ns()
        if t >= 100_000 * US and not marks:
            arb.add_job(AiJob(itertools.repeat(c), tenant="c"))
            marks.append({j.tenant: j.busy_ns for j in arb.jobs})
        elif t >= 150_000 * US and len(marks) == 1:
            shares = _shares(arb, marks[0])
            assert shares["c"] == pytest.approx(0.5, abs=0.05), shares
            marks.append({})

    arb._progress = progress  # type: ignore[assignment]
    arb._progress_every_ns = 1
    arb.run(radio(400), 400 * 500 * US)
    assert len(marks) == 2
