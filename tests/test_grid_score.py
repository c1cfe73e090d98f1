"""The grid's placement logic on constructed cases: the documented score (docs/grid.md,
"The score"), the hard filters and their order, the refusals, the baselines."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.core.errors import FieldError
from airan.grid.score import (
    FILTERS,
    GridPolicy,
    GridTenant,
    LiveFacts,
    Refused,
    SiteFacts,
    SiteView,
    demand,
    place,
    place_nearest,
    place_round_robin,
    precheck,
)


def site(
    sid: str,
    *,
    j: str = "EU-DE",
    rtt: float = 10.0,
    price: float = 0.2,
    power_w: float = 300.0,
    idle_w: float = 100.0,
    budget_w: float = 1000.0,
    max_inflight: int = 16,
    step_ms: float = 2.0,
    batch: int = 4,
    **live: object,
) -> SiteView:
    facts = SiteFacts.parse(
        {
            "site_id": sid,
            "target": "127.0.0.1:1",
            "jurisdiction": j,
            "latency_ms": {"area-1": rtt},
            "energy_price_per_kwh": price,
            "device_power_w": power_w,
            "idle_power_w": idle_w,
            "power_budget_w": budget_w,
            "max_inflight": max_inflight,
            "step_ms": step_ms,
            "max_batch": batch,
        }
    )
    lv = LiveFacts(healthy=True, reason="", ai_capacity=1.0)
    for k, v in live.items():
        setattr(lv, k, v)
    return SiteView(facts, lv)


def policy(**tenant: object) -> GridPolicy:
    return GridPolicy.parse({"tenants": {"acme": tenant}})


# The documented formula, written out again independently of airan.grid.score.
def expected_score(s: SiteView, t: GridTenant, p: GridPolicy, prompt: int, n: int, d_ms: float,
                   cap: float | None) -> float:  # fmt: skip
    f, lv = s.facts, s.live
    k = max(lv.inflight, lv.queue_depth)
    waves = math.ceil((k + 1) / f.max_batch)
    lat = f.latency_ms["area-1"] + lv.lag_ms + n * f.step_ms / lv.ai_capacity * waves
    c_us = lv.device_us_per_token if lv.device_us_per_token > 0 else f.step_ms * 1000 / f.max_batch
    cost = (prompt + n) * c_us * 1e-6 * f.device_power_w * f.energy_price_per_kwh / 3.6e6
    head = 1 - (f.idle_power_w + f.device_power_w * (lv.radio_busy + lv.ai_busy)) / f.power_budget_w
    head = min(1.0, max(0.0, head))
    cref = cap if cap else t.cost_ref
    w = t.weights
    miss = p.miss_penalty if lat > d_ms else 0.0
    return w.latency * lat / d_ms + w.cost * cost / cref + w.power * (1 - head) + miss


def test_latency_weight_picks_the_lower_predicted_latency() -> None:
    pol = policy(weights={"latency": 1.0})
    # near but loaded (k=8 in batches of 4: 3 waves), far but idle
    near = site("near", rtt=5.0, inflight=8)
    far = site("far", rtt=40.0)
    d = demand(pol, "acme", 10, 20, "area-1", total_ms=1000.0)
    p = place(d, pol, [near, far])
    t = pol.tenants["acme"]
    e_near = expected_score(near, t, pol, 10, 20, 1000.0, None)
    e_far = expected_score(far, t, pol, 10, 20, 1000.0, None)
    assert e_near == pytest.approx(5.0 / 1000 + 20 * 2.0 * 3 / 1000)
    assert e_far == pytest.approx(40.0 / 1000 + 20 * 2.0 / 1000)
    assert p.chosen == "far" and e_far < e_near
    got = {c.site: c.score for c in p.candidates}
    assert got == {"near": pytest.approx(e_near), "far": pytest.approx(e_far)}
    # idle, the near one wins
    p2 = place(d, pol, [site("near", rtt=5.0), far])
    assert p2.chosen == "near"


def test_a_lagging_node_predicts_later() -> None:
    pol = policy()
    d = demand(pol, "acme", 1, 10, "area-1", total_ms=10_000.0)
    p = place(d, pol, [site("a", rtt=1.0, lag_ms=500.0), site("b", rtt=50.0)])
    assert p.chosen == "b"
    assert {c.site: c.latency_ms for c in p.candidates}["a"] == pytest.approx(521.0)


def test_ai_capacity_stretches_service_time() -> None:
    pol = policy()
    d = demand(pol, "acme", 1, 50, "area-1", total_ms=10_000.0)
    busy_radio = site("a", rtt=1.0, ai_capacity=0.1)  # 50*2/0.1 = 1000 ms
    calm = site("b", rtt=100.0, ai_capacity=1.0)  # 100 + 100 = 200 ms
    p = place(d, pol, [busy_radio, calm])
    assert p.chosen == "b"
    lat = {c.site: c.latency_ms for c in p.candidates}
    assert lat == {"a": pytest.approx(1001.0), "b": pytest.approx(200.0)}


def test_cost_weight_picks_the_cheaper_energy() -> None:
    pol = policy(weights={"latency": 0.0, "cost": 1.0}, cost_ref=1e-9)
    cheap = site("cheap", price=0.05, rtt=80.0)
    dear = site("dear", price=0.40, rtt=1.0)
    d = demand(pol, "acme", 100, 100, "area-1")
    p = place(d, pol, [dear, cheap])
    assert p.chosen == "cheap"
    t = pol.tenants["acme"]
    for c in p.candidates:
        s = cheap if c.site == "cheap" else dear
        assert c.score == pytest.approx(expected_score(s, t, pol, 100, 100, t.total_ms, None))
    # 200 tokens x 500 µs x 300 W x 0.05 /kWh
    assert p.candidates[0].cost == pytest.approx(200 * 500e-6 * 300 * 0.05 / 3.6e6)


def test_measured_device_time_per_token_replaces_the_prior() -> None:
    pol = policy(weights={"latency": 0.0, "cost": 1.0}, cost_ref=1e-9)
    d = demand(pol, "acme", 0, 10, "area-1")
    a = site("a", price=0.1, device_us_per_token=2000.0)  # measured: 4x the prior 500
    b = site("b", price=0.3)
    p = place(d, pol, [a, b])
    assert p.chosen == "b"  # 0.1 x 2000 > 0.3 x 500
    assert {c.site: c.cost for c in p.candidates}["a"] == pytest.approx(
        10 * 2000e-6 * 300 * 0.1 / 3.6e6
    )


def test_power_weight_prefers_headroom() -> None:
    pol = policy(weights={"latency": 0.0, "power": 1.0})
    d = demand(pol, "acme", 1, 1, "area-1")
    hot = site("hot", radio_busy=0.5, ai_busy=0.5)  # 100 + 300 = 400 W of 1000
    cool = site("cool", radio_busy=0.1)  # 130 W
    p = place(d, pol, [hot, cool])
    assert p.chosen == "cool"
    assert {c.site: c.headroom for c in p.candidates} == {
        "hot": pytest.approx(0.6),
        "cool": pytest.approx(0.87),
    }


def test_miss_penalty_outweighs_everything_else() -> None:
    pol = GridPolicy.parse(
        {"tenants": {"acme": {"weights": {"latency": 1, "cost": 5}, "cost_ref": 1e-12}}}
    )
    d = demand(pol, "acme", 0, 10, "area-1", total_ms=50.0)
    fast_dear = site("fast", rtt=1.0, price=1.0)  # 1 + 20 = 21 ms
    slow_cheap = site("slow", rtt=60.0, price=0.0)  # 80 ms > D: penalty 10
    p = place(d, pol, [fast_dear, slow_cheap])
    t = pol.tenants["acme"]
    s_fast = expected_score(fast_dear, t, pol, 0, 10, 50.0, None)
    s_slow = expected_score(slow_cheap, t, pol, 0, 10, 50.0, None)
    assert s_slow > 10 and (p.chosen == "fast") == (s_fast < s_slow)


def test_ties_go_to_lower_latency_then_site_id() -> None:
    pol = policy()
    d = demand(pol, "acme", 1, 1, "area-1")
    p = place(d, pol, [site("b"), site("a")])
    assert p.chosen == "a"


@pytest.mark.parametrize(
    ("live", "facts", "code"),
    [
        ({}, {"j": "US-CA"}, "residency"),
        ({"healthy": False, "reason": "no KPM report for 2 s"}, {}, "unhealthy"),
        ({"deadline_met_ratio": 0.999}, {}, "radio"),
        ({"since_miss_s": 0.5}, {}, "radio"),
        ({"radio_busy": 1.0, "ai_busy": 1.0}, {"budget_w": 500.0}, "power"),
        ({"inflight": 3}, {"max_inflight": 3}, "full"),
        ({"queue_depth": 5}, {"max_inflight": 3}, "full"),
    ],
)
def test_each_filter(live: dict[str, object], facts: dict[str, object], code: str) -> None:
    pol = GridPolicy.parse({"tenants": {"acme": {"jurisdictions": ["EU-DE"]}}})
    d = demand(pol, "acme", 1, 1, "area-1")
    p = place(d, pol, [site("x", **facts, **live), site("ok")])  # type: ignore[arg-type]
    assert p.chosen == "ok"
    assert p.filtered["x"].startswith(f"{code}:")
    assert [c.site for c in p.candidates] == ["ok"]


def test_filters_apply_in_the_documented_order() -> None:
    pol = GridPolicy.parse({"tenants": {"acme": {"jurisdictions": ["EU-DE"]}}})
    d = demand(pol, "acme", 1, 1, "area-1", exclude={"x"})
    bad = site("x", j="US-CA", healthy=False, inflight=99, deadline_met_ratio=0.5)
    assert place(d, pol, [bad]).filtered["x"].startswith("residency:")
    bad = site("x", healthy=False, inflight=99, deadline_met_ratio=0.5)
    assert place(d, pol, [bad]).filtered["x"].startswith("excluded:")
    d2 = demand(pol, "acme", 1, 1, "area-1")
    assert place(d2, pol, [bad]).filtered["x"].startswith("unhealthy:")
    assert FILTERS.index("unhealthy") < FILTERS.index("radio") < FILTERS.index("full")


def test_unreachable_area_is_filtered() -> None:
    pol = policy()
    d = demand(pol, "acme", 1, 1, "area-9")
    p = place(d, pol, [site("x")])
    assert p.chosen is None and p.filtered["x"].startswith("no-route:")


def test_spill_over_to_the_next_best_when_the_best_is_full() -> None:
    pol = policy()
    d = demand(pol, "acme", 1, 10, "area-1")
    best = site("best", rtt=1.0, inflight=4, max_inflight=4)
    second = site("second", rtt=30.0)
    third = site("third", rtt=60.0)
    p = place(d, pol, [best, second, third])
    assert p.chosen == "second" and p.filtered["best"].startswith("full:")


def test_cost_cap_filters_and_refuses() -> None:
    pol = policy(cost_cap=None)
    cheap, dear = site("cheap", price=0.1), site("dear", price=1.0)
    n = 100
    c_cheap = (1 + n) * 500e-6 * 300 * 0.1 / 3.6e6
    d = demand(pol, "acme", 1, n, "area-1", cost_cap=c_cheap * 1.5)
    p = place(d, pol, [cheap, dear])
    assert p.chosen == "cheap" and p.filtered["dear"].startswith("cost-cap:")
    d_low = demand(pol, "acme", 1, n, "area-1", cost_cap=c_cheap * 0.5)
    with pytest.raises(Refused) as e:
        precheck(d_low, pol, [cheap, dear])
    assert e.value.status == "PERMISSION_DENIED" and e.value.refusal == "cost-cap"
    assert e.value.field == "cost_cap"


def test_the_tighter_cap_of_request_and_tenant_applies() -> None:
    pol = policy(cost_cap=1e-6)
    assert demand(pol, "acme", 1, 1, "area-1", cost_cap=5e-6).cost_cap == 1e-6
    assert demand(pol, "acme", 1, 1, "area-1", cost_cap=2e-7).cost_cap == 2e-7
    assert demand(pol, "acme", 1, 1, "area-1").cost_cap == 1e-6


def test_refusals_before_any_site() -> None:
    pol = GridPolicy.parse({"tenants": {"acme": {"jurisdictions": ["EU-DE", "EU-FR"]}}})
    with pytest.raises(Refused) as e:
        demand(pol, "nobody", 1, 1, "area-1")
    assert e.value.status == "INVALID_ARGUMENT" and e.value.refusal == "unknown-tenant"
    d = demand(pol, "acme", 1, 1, "area-1")
    with pytest.raises(Refused) as e:
        precheck(d, pol, [site("us", j="US-CA"), site("jp", j="JP")])
    assert e.value.status == "FAILED_PRECONDITION" and e.value.refusal == "residency"
    assert "EU-DE" in e.value.reason and "US-CA" in e.value.reason
    d9 = demand(pol, "acme", 1, 1, "area-9")
    with pytest.raises(Refused) as e:
        precheck(d9, pol, [site("de")])
    assert e.value.status == "FAILED_PRECONDITION" and e.value.field == "user_area"
    precheck(d, pol, [site("de", healthy=False)])  # static facts only: not refused


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(FieldError, match=r"policy.tenants.acme.weights"):
        GridPolicy.parse({"tenants": {"acme": {"weights": {"latency": 0}}}})
    with pytest.raises(FieldError, match=r"policy.tenants"):
        GridPolicy.parse({"tenants": {}})
    with pytest.raises(FieldError, match="jurisdiction"):
        GridPolicy.parse({"tenants": {"acme": {"jurisdictions": ["bad code!"]}}})
    with pytest.raises(FieldError, match="total_ms"):
        GridPolicy.parse({"tenants": {"acme": {"ttft_ms": 500, "total_ms": 100}}})
    with pytest.raises(FieldError, match=r"policy.tenants.acme.cost_cap"):
        GridPolicy.parse({"tenants": {"acme": {"cost_cap": "1"}}})  # strict: no coercion
    with pytest.raises(FieldError, match="latency_ms"):
        SiteFacts.parse(
            {"site_id": "a", "target": "h:1", "jurisdiction": "X", "latency_ms": {"a": -1}}
        )


def test_baselines() -> None:
    pol = GridPolicy.parse({"tenants": {"acme": {"jurisdictions": ["EU-DE"]}}})
    d = demand(pol, "acme", 1, 1, "area-1")
    sites = [
        site("a", rtt=30.0, inflight=99, max_inflight=1),  # full: baselines do not care
        site("b", rtt=10.0, deadline_met_ratio=0.5),  # radio missing: neither
        site("c", rtt=20.0),
        site("d", j="US-CA", rtt=1.0),  # residency: both respect it
    ]
    assert place_nearest(d, pol, sites).chosen == "b"
    picks = [place_round_robin(d, pol, sites, turn).chosen for turn in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]
    assert place(d, pol, sites).chosen == "c"


jurisdictions = st.sampled_from(["EU-DE", "EU-FR", "US-CA", "JP", "BR"])


@settings(max_examples=300, deadline=None)
@given(
    allowed=st.lists(jurisdictions | st.just("*"), min_size=1, max_size=3),
    site_j=st.lists(jurisdictions, min_size=1, max_size=6),
    loads=st.lists(st.integers(0, 20), min_size=6, max_size=6),
    weights=st.tuples(st.floats(0, 5), st.floats(0, 5), st.floats(0.01, 5)),
    n=st.integers(1, 200),
)
def test_residency_is_never_violated(
    allowed: list[str],
    site_j: list[str],
    loads: list[int],
    weights: tuple[float, float, float],
    n: int,
) -> None:
    pol = GridPolicy.parse(
        {
            "tenants": {
                "acme": {
                    "jurisdictions": allowed,
                    "weights": dict(zip(("latency", "cost", "power"), weights, strict=True)),
                }
            }
        }
    )
    views = [
        site(f"s{i}", j=j, inflight=loads[i], rtt=float(i), price=0.1 * (i + 1))
        for i, j in enumerate(site_j)
    ]
    d = demand(pol, "acme", 5, n, "area-1")
    ok = "*" in allowed or any(j in allowed for j in site_j)
    if not ok:
        with pytest.raises(Refused):
            precheck(d, pol, views)
        return
    precheck(d, pol, views)
    for p in (
        place(d, pol, views),
        place_nearest(d, pol, views),
        place_round_robin(d, pol, views, n),
    ):
        for c in p.candidates:
            j = next(v.facts.jurisdiction for v in views if v.site_id == c.site)
            assert "*" in allowed or j in allowed
        if p.chosen is None:
            assert p.filtered
