"""The AI grid end to end: site processes on loopback, the router in front of them.

Residency is never violated (a property test over random policies and requests),
failover (a site SIGKILLed or frozen mid-stream) loses and duplicates nothing, the router
picks what the documented score says, and bad requests are refused before any site is
touched."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airan.grid.router import RouterServer, serve_router
from airan.grid.score import GridPolicy, SiteFacts
from airan.grid.site import SiteHandle, spawn_site
from airan.ric.inference import GenerateSpec, InferenceClient, InferenceError
from airan.ric.xapp import KpmReport

TENANTS = ["acme", "globex", "initech"]
JURIS = {"de-1": "EU-DE", "fr-1": "EU-FR", "us-1": "US-CA"}
PROMPT = tuple(range(5, 25))


def start_sites(n: int = 3, **opts: object) -> list[SiteHandle]:
    ids = list(JURIS)[:n]
    handles: list[SiteHandle] = []
    try:
        for i, sid in enumerate(ids):
            handles.append(spawn_site({"site_id": sid, "tenants": TENANTS, "seed": i, **opts}))
    except BaseException:
        for h in handles:
            h.stop()
        raise
    return handles


def facts(handles: list[SiteHandle], **per_site: dict[str, object]) -> list[SiteFacts]:
    rtt = {"de-1": 5.0, "fr-1": 80.0, "us-1": 160.0}  # far apart: live noise cannot reorder
    out = []
    for h in handles:
        raw: dict[str, object] = {
            "site_id": h.site,
            "target": h.target,
            "jurisdiction": JURIS[h.site],
            "latency_ms": {"eu-west": rtt[h.site], "us-west": 200.0 - rtt[h.site]},
        }
        raw.update(per_site.get(h.site, {}))
        out.append(SiteFacts.parse(raw))
    return out


def policy(**tenants: dict[str, object]) -> GridPolicy:
    return GridPolicy.parse(
        {"tenants": {t: tenants.get(t, {}) for t in TENANTS}, "stale_after_s": 1.0}
    )


@pytest.fixture(scope="module")
def sites() -> Iterator[list[SiteHandle]]:
    hs = start_sites()
    yield hs
    for h in hs:
        h.stop()


@pytest.fixture(scope="module")
def grid(sites: list[SiteHandle]) -> Iterator[RouterServer]:
    srv = serve_router(facts(sites), policy(), kpm_period_ms=50)
    srv.wait_ready(30)
    yield srv
    srv.stop()


_n = iter(range(10**9))


def rid() -> str:
    return f"g{next(_n)}"


def site_requests(handles: list[SiteHandle]) -> dict[str, int]:
    out = {}
    for h in handles:
        with InferenceClient(h.target) as c:
            out[h.site] = sum(x.requests for x in c.status().counters)
    return out


# ----------------------------------------------------------------------------- residency


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    allowed=st.fixed_dictionaries(
        {
            t: st.lists(
                st.sampled_from(["EU-DE", "EU-FR", "US-CA", "JP", "*"]), min_size=1, max_size=3
            )
            for t in TENANTS
        }
    ),
    weights=st.fixed_dictionaries(
        {t: st.tuples(st.floats(0.01, 3), st.floats(0, 3), st.floats(0, 3)) for t in TENANTS}
    ),
    requests=st.lists(
        st.tuples(
            st.sampled_from(TENANTS), st.sampled_from(["eu-west", "us-west"]), st.integers(1, 3)
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_residency_is_never_violated(
    grid: RouterServer,
    allowed: dict[str, list[str]],
    weights: dict[str, tuple[float, float, float]],
    requests: list[tuple[str, str, int]],
) -> None:
    pol = policy(
        **{
            t: {
                "jurisdictions": allowed[t],
                "weights": dict(zip(("latency", "cost", "power"), weights[t], strict=True)),
            }
            for t in TENANTS
        }
    )
    grid.call(lambda: grid.router.set_policy(pol))
    allowed_sites = {
        t: {s for s, j in JURIS.items() if "*" in allowed[t] or j in allowed[t]} for t in TENANTS
    }
    served: dict[str, str] = {}
    try:
        with InferenceClient(grid.target) as c:
            for tenant, area, n in requests:
                ok = allowed_sites[tenant]
                spec = GenerateSpec(rid(), tenant, PROMPT, n, user_area=area)
                served[spec.request_id] = tenant
                if not ok:
                    with pytest.raises(InferenceError) as e:
                        c.generate_all(spec)
                    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
                    assert e.value.refusal == "residency"
                    continue
                a = c.generate_all(spec)
                assert a.admission.site in ok, (tenant, allowed[tenant], a.admission.site)
                assert a.finished is not None and a.finished.site in ok
                assert len(a.tokens) == n
    finally:
        grid.call(lambda: grid.router.set_policy(policy()))
    for rec in grid.router.audit.records("placement"):
        tenant = served.get(rec["request_id"])
        if tenant is None:
            continue
        assert rec["chosen"] in allowed_sites[tenant]
        assert {c["site"] for c in rec["candidates"]} <= allowed_sites[tenant]
        for s in set(JURIS) - allowed_sites[tenant]:
            assert rec["filtered"][s].startswith("residency:")


def test_audit_records_every_decision_with_its_reasons(grid: RouterServer) -> None:
    pol = policy(acme={"jurisdictions": ["EU-DE", "EU-FR"]})
    grid.call(lambda: grid.router.set_policy(pol))
    try:
        with InferenceClient(grid.target) as c:
            r = rid()
            a = c.generate_all(GenerateSpec(r, "acme", PROMPT, 2, user_area="eu-west"))
        rec = next(x for x in grid.router.audit.records("placement") if x["request_id"] == r)
        assert rec["chosen"] == a.admission.site and a.admission.decision_id == rec["id"]
        assert rec["filtered"]["us-1"].startswith("residency:")
        scores = [cand["score"] for cand in rec["candidates"]]
        assert scores == sorted(scores) and rec["candidates"][0]["site"] == rec["chosen"]
        for cand in rec["candidates"]:
            assert cand["score"] == pytest.approx(sum(cand["terms"].values()))
    finally:
        grid.call(lambda: grid.router.set_policy(policy()))


# ----------------------------------------------------------------------------- refusals


def test_bad_requests_are_refused_before_any_site_is_touched(
    grid: RouterServer, sites: list[SiteHandle]
) -> None:
    pol = policy(
        globex={"jurisdictions": ["JP"]},
        initech={"cost_cap": 1e-15},
    )
    grid.call(lambda: grid.router.set_policy(pol))
    try:
        before = site_requests(sites)
        attempts = grid.router.meter.total("attempts")
        cases = [
            (GenerateSpec(rid(), "umbrella", PROMPT, 4, user_area="eu-west"),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown-tenant", "tenant"),
            (GenerateSpec(rid(), "globex", PROMPT, 4, user_area="eu-west"),
             grpc.StatusCode.FAILED_PRECONDITION, "residency", "tenant"),
            (GenerateSpec(rid(), "initech", PROMPT, 4, user_area="eu-west"),
             grpc.StatusCode.PERMISSION_DENIED, "cost-cap", "cost_cap"),
            (GenerateSpec(rid(), "acme", PROMPT, 4, user_area="eu-west", cost_cap=1e-18),
             grpc.StatusCode.PERMISSION_DENIED, "cost-cap", "cost_cap"),
            (GenerateSpec(rid(), "acme", PROMPT, 4, user_area="mars"),
             grpc.StatusCode.FAILED_PRECONDITION, "residency", "user_area"),
            (GenerateSpec(rid(), "acme", (1, 9999), 4, user_area="eu-west"),
             grpc.StatusCode.INVALID_ARGUMENT, "bad-request", "prompt"),
            (GenerateSpec(rid(), "acme", PROMPT, 255, user_area="eu-west"),
             grpc.StatusCode.INVALID_ARGUMENT, "bad-request", "max_new_tokens"),
        ]  # fmt: skip
        with InferenceClient(grid.target) as c:
            for spec, code, refusal, field in cases:
                with pytest.raises(InferenceError) as e:
                    c.generate_all(spec)
                assert (e.value.code, e.value.refusal, e.value.field) == (code, refusal, field)
                assert e.value.reason
        assert site_requests(sites) == before
        assert grid.router.meter.total("attempts") == attempts
        refusals = grid.router.audit.records("refusal")[-len(cases) :]
        assert [r["refusal"] for r in refusals] == [c[2] for c in cases]
    finally:
        grid.call(lambda: grid.router.set_policy(policy()))


def test_duplicate_ids_join_or_are_refused(grid: RouterServer) -> None:
    r = rid()
    with InferenceClient(grid.target) as c:
        a = c.generate_all(GenerateSpec(r, "acme", PROMPT, 6, user_area="eu-west"))
        b = c.generate_all(GenerateSpec(r, "acme", PROMPT, 6, user_area="eu-west"))
        assert b.admission.joined and b.tokens == a.tokens
        with pytest.raises(InferenceError) as e:
            c.generate_all(GenerateSpec(r, "globex", PROMPT, 6, user_area="eu-west"))
        assert e.value.code == grpc.StatusCode.ALREADY_EXISTS


# ----------------------------------------------------------------------------- the score


def _score_case(
    sites: list[SiteHandle],
    tenant_policy: dict[str, object],
    per_site: dict[str, dict[str, object]],
    area: str = "eu-west",
) -> tuple[str, dict[str, object]]:
    srv = serve_router(facts(sites, **per_site), policy(acme=tenant_policy), kpm_period_ms=50)
    try:
        srv.wait_ready(30)
        r = rid()
        with InferenceClient(srv.target) as c:
            a = c.generate_all(GenerateSpec(r, "acme", PROMPT, 2, user_area=area))
        rec = next(x for x in srv.router.audit.records("placement") if x["request_id"] == r)
        return a.admission.site, rec
    finally:
        srv.stop()


def test_the_router_picks_what_the_score_says(sites: list[SiteHandle]) -> None:
    # latency only: the nearest by far (the live terms, queueing and lag, are small)
    far = {
        "de-1": {"latency_ms": {"eu-west": 5.0, "us-west": 400.0}},
        "fr-1": {"latency_ms": {"eu-west": 150.0, "us-west": 300.0}},
        "us-1": {"latency_ms": {"eu-west": 300.0, "us-west": 5.0}},
    }
    site, rec = _score_case(sites, {"weights": {"latency": 1}}, far)
    assert site == "de-1"
    site, _ = _score_case(sites, {"weights": {"latency": 1}}, far, area="us-west")
    assert site == "us-1"
    # cost only, EU residency: the cheaper EU site, although a cheaper one is in the US
    prices = {
        "de-1": {"energy_price_per_kwh": 0.5},
        "fr-1": {"energy_price_per_kwh": 0.1},
        "us-1": {"energy_price_per_kwh": 0.01},
    }
    site, rec = _score_case(
        sites,
        {"weights": {"latency": 0, "cost": 1}, "jurisdictions": ["EU-DE", "EU-FR"]},
        prices,
    )
    assert site == "fr-1" and rec["filtered"]["us-1"].startswith("residency:")
    costs = {c["site"]: c["cost"] for c in rec["candidates"]}
    assert min(costs, key=lambda k: costs[k]) == "fr-1" and set(costs) == {"de-1", "fr-1"}
    for c in rec["candidates"]:  # cost only: the score is the cost over the reference
        assert c["score"] == pytest.approx(c["cost"] / 1e-6)
    # power only: the site with the most headroom under its budget
    budgets = {
        "de-1": {"power_budget_w": 500.0},
        "fr-1": {"power_budget_w": 5000.0},
        "us-1": {"power_budget_w": 1000.0},
    }
    site, rec = _score_case(sites, {"weights": {"latency": 0, "power": 1}}, budgets)
    assert site == "fr-1"
    heads = {c["site"]: c["headroom"] for c in rec["candidates"]}
    assert heads["fr-1"] > heads["us-1"] > heads["de-1"]
    # the documented terms, from the facts: latency term = L / D with D the tenant default
    site, rec = _score_case(
        sites, {"weights": {"latency": 2}, "ttft_ms": 200.0, "total_ms": 400.0}, {}
    )
    for c in rec["candidates"]:
        assert c["terms"]["latency"] == pytest.approx(2 * c["latency_ms"] / 400.0)
        assert c["terms"]["miss_penalty"] == (10.0 if c["latency_ms"] > 400.0 else 0.0)


def test_spill_over_when_the_best_site_is_full(sites: list[SiteHandle]) -> None:
    srv = serve_router(
        facts(sites, **{"de-1": {"max_inflight": 1}}),
        policy(acme={"weights": {"latency": 1}}),
        kpm_period_ms=50,
    )
    try:
        srv.wait_ready(30)
        placed: list[str] = []
        lock = threading.Lock()

        def run(i: int) -> None:
            with InferenceClient(srv.target) as c:
                a = c.generate_all(
                    GenerateSpec(f"spill-{i}-{rid()}", "acme", PROMPT, 120, user_area="eu-west")
                )
            with lock:
                placed.append(a.admission.site)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(60)
        assert sorted(placed).count("de-1") >= 1 and len(set(placed)) >= 2
        recs = srv.router.audit.records("placement")
        assert any(r["filtered"].get("de-1", "").startswith("full:") for r in recs)
    finally:
        srv.stop()


def test_a_site_whose_radio_misses_deadlines_gets_nothing(grid: RouterServer) -> None:
    reg = grid.router.registry
    st_de = reg.sites["de-1"]

    def inject() -> None:  # a KPM report from de-1 saying its radio missed a deadline
        values = {
            "airan.DeadlineMetRatio": 0.99,
            "airan.RadioMisses": 3.0,
            "airan.Infer.Healthy": 1.0,
        }
        reg._update(st_de, KpmReport(0.0, 1, values, {}, 1, 0, 0, 50, 0))

    grid.call(inject)
    with InferenceClient(grid.target) as c:
        r = rid()
        a = c.generate_all(GenerateSpec(r, "acme", PROMPT, 2, user_area="eu-west"))
    assert a.admission.site != "de-1"
    rec = next(x for x in grid.router.audit.records("placement") if x["request_id"] == r)
    assert rec["filtered"]["de-1"].startswith("radio:")
    # the hold-off: healthy reports after the miss do not clear it at once
    time.sleep(0.2)
    assert grid.call(lambda: reg.views()[0].live.since_miss_s) < 2.0
    assert not math.isinf(grid.call(lambda: st_de.last_miss))
    grid.call(lambda: setattr(st_de, "last_miss", -math.inf))


# ----------------------------------------------------------------------------- failover


@pytest.fixture
def victims() -> Iterator[list[SiteHandle]]:
    hs = start_sites()
    yield hs
    for h in hs:
        if h.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.proc.pid, signal.SIGCONT)  # a frozen one must wake to exit
        h.stop()


def _stream(
    c: InferenceClient, spec: GenerateSpec, on_tokens: object = None
) -> tuple[list[int], object, list[str]]:
    """The answer, the done event, and the site of each tokens event, checking that the
    client sees every token once, in order."""
    toks: list[int] = []
    done = None
    site = ""
    sites: list[str] = []
    for ev in c.generate(spec, timeout_s=120):
        w = ev.WhichOneof("event")
        if w == "admission":
            site = ev.admission.site
        elif w == "tokens":
            assert ev.tokens.start_index == len(toks), "a gap or a duplicate reached the client"
            toks.extend(ev.tokens.tokens)
            sites.append(ev.tokens.site)
            if callable(on_tokens):
                on_tokens(site, len(toks))
        elif w == "done":
            done = ev.done
    return toks, done, sites


def test_failover_after_sigkill_loses_and_duplicates_nothing(victims: list[SiteHandle]) -> None:
    srv = serve_router(facts(victims), policy(acme={"weights": {"latency": 1}}), kpm_period_ms=50)
    try:
        srv.wait_ready(30)
        n = 150
        prompts = [tuple((7 * i + k) % 500 for k in range(12)) for i in range(5)]
        with InferenceClient(srv.target) as c:
            # the uninterrupted answers, straight from a site that stays up
            with InferenceClient(victims[2].target) as direct:
                ref = [
                    direct.generate_all(GenerateSpec(f"ref{i}", "acme", p, n)).tokens
                    for i, p in enumerate(prompts)
                ]
            killed: list[str] = []
            results: dict[int, tuple[list[int], object, list[str]]] = {}

            def kill_when(site: str, k: int) -> None:
                if k >= 40 and not killed:
                    h = next(h for h in victims if h.site == site)
                    killed.append(site)
                    h.kill()

            def run(i: int) -> None:
                spec = GenerateSpec(f"fo{i}-{rid()}", "acme", prompts[i], n, user_area="eu-west")
                results[i] = _stream(c, spec, kill_when if i == 0 else None)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert len(killed) == 1
        victim = killed[0]  # the site request 0 was on (the nearest, unless it lagged)
        for i in range(5):
            toks, done, _ = results[i]
            assert toks == ref[i], (
                f"request {i}: the failover stream differs from the uninterrupted one"
            )
            assert done is not None and done.tokens == n and done.reason == 1
        stats = srv.call(lambda: dict(srv.router.stats))
        assert stats["failed"] == 0 and stats["completed"] == 5
        assert stats["failovers"] >= 1
        moved = [r for r in results.values() if r[1].failovers]  # type: ignore[attr-defined]
        assert moved and all(r[1].site != victim for r in moved)  # type: ignore[attr-defined]
        labels = results[0][2]  # the tokens events say which site made them
        assert labels[0] == victim and labels[-1] != victim
        cut = labels.index(labels[-1])
        assert set(labels[:cut]) == {victim} and set(labels[cut:]) == {labels[-1]}
        fo = srv.router.audit.records("failover")
        assert fo and all(f["from"] == victim for f in fo)
        rows = {(r.tenant, r.site): r for r in srv.router.meter.rows()}
        assert sum(r.tokens for r in rows.values()) == 5 * n  # each delivered token once
        assert rows[("acme", victim)].unreported_attempts >= 1
    finally:
        srv.stop()


def test_failover_when_a_site_stops_reporting(victims: list[SiteHandle]) -> None:
    pol = GridPolicy.parse(
        {"tenants": {t: {"weights": {"latency": 1}} for t in TENANTS}, "stale_after_s": 0.5}
    )
    srv = serve_router(facts(victims), pol, kpm_period_ms=50, stall_timeout_s=30.0)
    try:
        srv.wait_ready(30)
        with InferenceClient(victims[1].target) as direct:
            ref = direct.generate_all(GenerateSpec("ref", "acme", PROMPT, 150)).tokens
        frozen: list[str] = []

        def freeze(site: str, k: int) -> None:
            if k >= 30 and not frozen:
                h = next(h for h in victims if h.site == site)
                frozen.append(site)
                os.kill(h.proc.pid, signal.SIGSTOP)  # alive, silent: no KPM, no tokens

        t0 = time.monotonic()
        with InferenceClient(srv.target) as c:
            toks, done, _ = _stream(
                c, GenerateSpec(rid(), "acme", PROMPT, 150, user_area="eu-west"), freeze
            )
        assert len(frozen) == 1 and toks == ref
        assert done is not None and done.failovers == 1 and done.site != frozen[0]  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < 20  # the stale KPM moved it, not the 30 s stall timeout
        fo = srv.router.audit.records("failover")
        assert "no KPM report" in fo[0]["reason"]
    finally:
        srv.stop()


def test_the_grid_status_and_metering_exports(grid: RouterServer) -> None:
    with InferenceClient(grid.target) as c:
        c.generate_all(GenerateSpec(rid(), "globex", PROMPT, 5, user_area="eu-west"))
        st_ = c.status()
    assert st_.site == "grid" and len(st_.model_digest) == 64
    assert {s.site for s in st_.sites} == set(JURIS) and all(s.healthy for s in st_.sites)
    csv_text = grid.router.meter.to_csv()
    header, *lines = csv_text.strip().splitlines()
    assert header == "tenant,site,requests,attempts,unreported_attempts,tokens,device_us"
    assert any(line.startswith("globex,") for line in lines)
    import json

    doc = json.loads(grid.router.meter.to_json())
    globex = [r for r in doc["rows"] if r["tenant"] == "globex"]
    assert sum(r["tokens"] for r in globex) >= 5 and all(
        r["device_us"] > 0 for r in globex if r["requests"]
    )


def test_the_example_kills_a_site_and_loses_nothing() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "grid_failover.py"),
            "--seconds",
            "5",
            "--rate",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "killed " in out and "(SIGKILL)" in out
    assert "lost requests: 0\n" in out
    assert "duplicated tokens: 0 (gaps: 0)" in out
    assert "acme served only in the EU: yes" in out
    sent = int(out.split("requests: ")[1].split(" sent")[0])
    completed = int(out.split(" sent, ")[1].split(" completed")[0])
    assert sent == completed > 0


def test_the_command_lines_refuse_bad_configs(tmp_path: Path) -> None:
    from airan.grid import router, site

    with pytest.raises(SystemExit, match="tenants"):
        site.main(["--options", '{"tenants": ["bad name!"]}'])
    with pytest.raises(SystemExit, match="ai_share_cap"):
        site.main(["--ai-share-cap", "0"])
    cfg = tmp_path / "grid.json"
    cfg.write_text('{"sites": [{"site_id": "a", "target": "127.0.0.1:1"}], "policy": {}}')
    with pytest.raises(SystemExit, match=r"sites\.0\.jurisdiction"):
        router.main(["--config", str(cfg)])
    with pytest.raises(SystemExit, match="--config"):
        router.main(["--config", str(tmp_path / "missing.json")])
