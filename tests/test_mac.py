"""The L2 MAC: config, grants, PF scheduling, HARQ, slice quotas and KPM counters."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest

from airan.core.errors import FieldError
from airan.core.rrm import SliceQuota, Snssai
from airan.ran import tables
from airan.ran.config import RanConfig
from airan.ran.mac import (
    DMRS_RE_PER_SYMBOL,
    RNTI_BASE,
    Direction,
    Grant,
    Mac,
    SlotDecision,
    bler,
    link_ok,
    period_kpm,
    period_kpm_per_slice,
    period_kpm_per_ue,
)
from airan.ran.numerology import SlotId

A, B = Snssai(sst=1), Snssai(sst=2, sd=10)


def make(seed: int = 1, ul_l1: bool = False, **cfg: Any) -> Mac:
    return Mac(RanConfig.parse(cfg), seed, ul_crc_from_l1=ul_l1)


def run(mac: Mac, n: int, start: SlotId | None = None) -> list[SlotDecision]:
    s = start or SlotId(0, 0, mac.mu)
    out = []
    for _ in range(n):
        out.append(mac.schedule(s))
        s = s + 1
    return out


def prbs_by_ue(decisions: list[SlotDecision], d: str = "dl") -> Counter[int]:
    c: Counter[int] = Counter()
    for dec in decisions:
        for g in dec.grants(d):  # type: ignore[arg-type]
            c[g.ue] += g.n_prb
    return c


def two_slices(ded_a: int = 0, min_a: int = 0, max_a: int = 100, **kw: Any) -> dict[str, Any]:
    return {
        "slice_quotas": [
            {
                "snssai": {"sst": 1},
                "dedicated_ratio": ded_a,
                "min_ratio": min_a,
                "max_ratio": max_a,
            },
            {"snssai": {"sst": 2, "sd": 10}, **kw},
        ]
    }


# -- config ------------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = RanConfig.parse({})
    assert (c.numerology, c.bandwidth_mhz, c.antennas, c.layers, c.ues, c.cells) == (
        1,
        20,
        4,
        2,
        8,
        1,
    )
    assert (c.slot_ahead, c.ul_deadline_slots, c.dl_advance_us) == (3, 2, 100.0)
    assert c.n_prb == 51 and c.slot_ns == 500_000
    assert c.traffic.kind == "full_buffer"
    assert c.ue_snssai() == (Snssai(sst=1),) * 8


@pytest.mark.parametrize(
    ("data", "field"),
    [({"numerology": 0, "bandwidth_mhz": 100}, "ran.bandwidth_mhz"),
     ({"numerology": 3, "bandwidth_mhz": 20}, "ran.bandwidth_mhz"),
     ({"numerology": 4}, "ran.numerology"), ({"antennas": 2, "layers": 3}, "ran.layers"),
     ({"ues": 0}, "ran.ues"), ({"ues": 257}, "ran.ues"), ({"cells": 17}, "ran.cells"),
     ({"slot_ahead": 9}, "ran.slot_ahead"), ({"ul_deadline_slots": 0}, "ran.ul_deadline_slots"),
     ({"antennas": 9}, "ran.antennas"), ({"traffic": {"kind": "cbr"}}, "ran.traffic.kind"),
     ({"traffic": {"on_ms": 0}}, "ran.traffic.on_ms"),
     ({"snr_db_range": [20, 10]}, "ran.snr_db_range"),
     ({"fading_coefficient": 1.5}, "ran.fading_coefficient"), ({"bogus": 1}, "ran.bogus"),
     ({"dl_symbols": 13}, "ran.dl_symbols"), ({"mcs_table": 3}, "ran.mcs_table"),
     ({**two_slices(min_a=70), "slice_quotas": [
         {"snssai": {"sst": 1}, "min_ratio": 70}, {"snssai": {"sst": 2}, "min_ratio": 40}]},
      "ran.slice_quotas"),
     ({"slice_quotas": [{"snssai": {"sst": 1}, "min_ratio": 50, "max_ratio": 40}]},
      "ran.slice_quotas.0"),
     ({"ues": 2, **two_slices(), "ue_slices": [0, 2]}, "ran.ue_slices"),
     ({"ues": 2, **two_slices(), "ue_slices": [0]}, "ran.ue_slices"),
     ({"ul_start_symbol": 3, "ul_symbols": 11, "dmrs_additional_position": 3},
      "ran.dmrs_additional_position")],
)  # fmt: skip
def test_config_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as e:
        RanConfig.parse(data)
    assert e.value.field == field


def test_config_round_trips_and_assigns_slices() -> None:
    c = RanConfig.parse({"ues": 4, **two_slices(ded_a=10, min_a=20), "ue_slices": [1, 0, 1, 1]})
    assert RanConfig.parse(c.model_dump()) == c
    assert c.ue_snssai() == (B, A, B, B)
    rr = RanConfig.parse({"ues": 3, **two_slices()})
    assert rr.ue_snssai() == (A, B, A)


# -- grants ----------------------------------------------------------------------------------


def check_grants(mac: Mac, dec: SlotDecision) -> None:
    c = mac.config
    for d in ("dl", "ul"):
        gs = dec.grants(d)
        assert len(gs) <= c.max_ues_per_slot
        assert len({g.ue for g in gs}) == len(gs)  # one TB per UE and direction
        spans = sorted((g.prb_start, g.prb_start + g.n_prb) for g in gs)
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            assert a1 <= b0
        for g in gs:
            assert g.direction == d and g.n_prb >= 1 and g.prb_start + g.n_prb <= mac.n_prb
            assert g.rnti == RNTI_BASE + g.ue and g.snssai == mac.ue_snssai[g.ue]
            assert 0 <= g.harq_id < c.harq_processes and g.ndi in (0, 1)
            assert g.rv == (0, 2, 3, 1)[g.retx] and g.layers == c.layers
            start, nsym = (c.dl_start_symbol, c.dl_symbols) if d == "dl" else (
                c.ul_start_symbol, c.ul_symbols)  # fmt: skip
            assert (g.start_symbol, g.n_symbols) == (start, nsym)
            assert all(start <= s < start + nsym for s in g.dmrs_symbols)
            e = tables.mcs_entry(g.mcs_table, g.mcs)
            assert (g.qm, g.code_rate) == (e.qm, e.rate_x1024)
            assert g.tbs == tables.tbs_for_mcs(
                g.mcs_table, g.mcs, g.n_prb, nsym, DMRS_RE_PER_SYMBOL * len(g.dmrs_symbols),
                c.x_overhead, c.layers,
            )  # fmt: skip


def test_grants_are_valid_and_deterministic() -> None:
    cfg: dict[str, Any] = {"ues": 12, "traffic": {"kind": "poisson", "dl_rate_mbps": 8},
                           "mcs_table": 2}  # fmt: skip
    a, b = make(7, **cfg), make(7, **cfg)
    da, db = run(a, 300), run(b, 300)
    assert da == db
    for dec in da:
        check_grants(a, dec)
    assert run(make(8, **cfg), 300) != da
    assert sum(len(x.dl) for x in da) > 300


def test_slot_order_enforced() -> None:
    mac = make()
    mac.schedule(SlotId(3, 4))
    with pytest.raises(FieldError) as e:
        mac.schedule(SlotId(3, 4))
    assert e.value.field == "slot"
    with pytest.raises(FieldError) as e:
        mac.schedule(SlotId(3, 5, mu=0))
    assert e.value.field == "slot.mu"
    mac.schedule(SlotId(3, 9))  # gaps are fine


def test_schedules_across_the_sfn_wrap() -> None:
    mac = make()
    decs = run(mac, 40, SlotId(1023, 10))
    assert decs[10].slot == SlotId(0, 0)
    assert all(d.dl for d in decs)


# -- proportional fair ----------------------------------------------------------------------


def test_pf_equal_snr_equal_prbs() -> None:
    mac = make(ues=6, max_ues_per_slot=2, snr_db_range=(15, 15), fading=False)
    c = prbs_by_ue(run(mac, 1200))
    assert len(c) == 6
    assert max(c.values()) / min(c.values()) < 1.05
    assert sum(c.values()) == 1200 * mac.n_prb


def test_pf_higher_snr_more_throughput_but_low_snr_served() -> None:
    mac = make(ues=2, max_ues_per_slot=1, snr_db_range=(0, 0), fading=False, cqi_period_slots=1)
    mac.mean_snr_db[:] = [25.0, 5.0]
    run(mac, 2000)
    per_ue = mac.kpm_per_ue()
    hi, lo = per_ue[RNTI_BASE], per_ue[RNTI_BASE + 1]
    assert hi["DRB.UEThpDl"] > 2.5 * lo["DRB.UEThpDl"] > 0
    # PF, not max-rate: the weak UE still gets a fair share of the time
    assert lo["RRU.PrbUsedDl"] > 0.35 * mac.n_prb


def test_fading_is_rayleigh_and_time_correlated() -> None:
    fast = make(ues=64, fading_coefficient=0.0, snr_db_range=(10, 10))
    slow = make(ues=64, doppler_hz=5.0, snr_db_range=(10, 10))
    g_fast, g_slow = [], []
    for s in range(400):
        fast._advance(1, s - 1, s)
        slow._advance(1, s - 1, s)
        g_fast.append(10 ** ((fast.snr_db - 10) / 10))
        g_slow.append(10 ** ((slow.snr_db - 10) / 10))
    gf, gs = np.array(g_fast), np.array(g_slow)
    assert gf.mean() == pytest.approx(1.0, abs=0.05)  # E|h|^2 = 1
    assert (gf < 0.1).mean() == pytest.approx(1 - np.exp(-0.1), abs=0.02)  # exponential power

    def lag1(g: np.ndarray[Any, Any]) -> float:
        return float(np.corrcoef(g[:-1].ravel(), g[1:].ravel())[0, 1])

    assert lag1(gf) < 0.1 < 0.95 < lag1(gs)


def test_poisson_load_is_carried() -> None:
    mac = make(ues=4, traffic={"kind": "poisson", "dl_rate_mbps": 2, "ul_rate_mbps": 1},
               snr_db_range=(20, 20))  # fmt: skip
    run(mac, 4000)  # 2 s
    k = mac.kpm()
    assert k["airan.mac.bitsDl"] == pytest.approx(4 * 2e6 * 2.0, rel=0.1)
    assert k["airan.mac.bitsUl"] == pytest.approx(4 * 1e6 * 2.0, rel=0.1)
    assert k["RRU.PrbTotDl"] < 50
    onoff = make(ues=4, traffic={"kind": "on_off", "dl_rate_mbps": 2, "on_ms": 50, "off_ms": 150},
                 snr_db_range=(20, 20))  # fmt: skip
    run(onoff, 4000)
    assert onoff.kpm()["airan.mac.bitsDl"] == pytest.approx(4 * 2e6 * 2.0 / 4, rel=0.35)


# -- HARQ ------------------------------------------------------------------------------------


def test_ul_crc_failure_retransmits_same_tbs_next_rv_then_drops() -> None:
    mac = make(ul_l1=True, ues=1, harq_processes=1, snr_db_range=(20, 20), fading=False)
    s = SlotId(0, 0)
    first = mac.schedule(s).ul[0]
    assert (first.rv, first.retx, first.harq_id) == (0, 0, 0)
    seen = [first]
    for _ in range(3):
        assert mac.on_ul_crc(s, first.rnti, 0, False, 19.0)
        s = s + 1
        g = mac.schedule(s).ul[0]
        seen.append(g)
    assert [g.rv for g in seen] == [0, 2, 3, 1]
    assert [g.retx for g in seen] == [0, 1, 2, 3]
    assert {(g.tbs, g.n_prb, g.mcs, g.ndi, g.harq_id) for g in seen} == {
        (first.tbs, first.n_prb, first.mcs, first.ndi, 0)
    }
    assert not mac.on_ul_crc(s - 1, first.rnti, 0, False)  # stale: not that slot
    assert mac.on_ul_crc(s, first.rnti, 0, False)  # the 4th failure: dropped
    s = s + 1
    new = mac.schedule(s).ul[0]
    assert (new.rv, new.retx, new.ndi) == (0, 0, 1 - first.ndi)
    ul = mac.counters().ul
    assert (int(ul.drops[0]), int(ul.nacks[0]), int(ul.tb_new[0]), int(ul.tb_retx[0])) == (
        1,
        4,
        2,
        3,
    )
    assert float(ul.dropped_bits[0]) == first.tbs
    assert mac.kpm()["airan.mac.harqDropsUl"] == 1.0
    assert mac.on_ul_crc(s, first.rnti, 0, True)
    assert float(mac.counters().ul.delivered_bits[0]) == new.tbs


def test_max_harq_tx_configurable() -> None:
    mac = make(ul_l1=True, ues=1, harq_processes=1, max_harq_tx=2, fading=False)
    s = SlotId(0, 0)
    g = mac.schedule(s).ul[0]
    mac.on_ul_crc(s, g.rnti, 0, False)
    s = s + 1
    assert mac.schedule(s).ul[0].retx == 1
    mac.on_ul_crc(s, g.rnti, 0, False)
    s = s + 1
    assert mac.schedule(s).ul[0].retx == 0
    assert int(mac.counters().ul.drops[0]) == 1


def test_dl_harq_by_link_abstraction() -> None:
    # the CQI says 25 dB, the channel is at -20 dB: every DL transmission fails
    mac = make(ues=1, harq_processes=1, snr_db_range=(25, 25), fading=False, cqi_period_slots=320,
               k1_slots=2)  # fmt: skip
    mac.mean_snr_db[:] = -20.0
    decs = run(mac, 20, SlotId(0, 5))
    dl = [(d.slot.slot, g) for d in decs for g in d.dl]
    assert [(s, g.rv, g.retx) for s, g in dl[:5]] == [
        (5, 0, 0), (7, 2, 1), (9, 3, 2), (11, 1, 3), (13, 0, 0)
    ]  # fmt: skip
    assert len({g.tbs for _, g in dl[:4]}) == 1
    assert dl[4][1].ndi != dl[0][1].ndi
    assert int(mac.counters().dl.drops[0]) >= 2
    assert mac.kpm()["airan.mac.blerDl"] == 1.0


def test_ul_crc_timeout_counts_as_failure() -> None:
    mac = make(ul_l1=True, ues=1, harq_processes=1, fading=False)
    decs = run(mac, 12)
    ul = [g for d in decs for g in d.ul]
    # waited K + 1 + slot_ahead + grace = 2 + 1 + 3 + 4 = 10 slots, then retransmitted
    assert [g.retx for g in ul] == [0, 1]
    assert decs[10].ul[0].retx == 1
    assert mac.kpm()["airan.mac.crcTimeoutsUl"] == 1.0


def test_on_ul_crc_bad_input() -> None:
    mac = make(ul_l1=True)
    with pytest.raises(FieldError) as e:
        mac.on_ul_crc(SlotId(0, 0), 0x1234, 0, True)
    assert e.value.field == "rnti"
    with pytest.raises(FieldError) as e:
        mac.on_ul_crc(SlotId(0, 0), RNTI_BASE, 16, True)
    assert e.value.field == "harq_id"
    assert not mac.on_ul_crc(SlotId(0, 0), RNTI_BASE, 0, True)  # nothing in flight


def test_bler_curve() -> None:
    e = tables.MCS_TABLE_1[10]
    assert e.rate_x1024 is not None and e.efficiency is not None
    thr = float(tables.snr_for_bler10_db(e.qm * e.rate_x1024 / 1024))
    assert float(bler(e.qm, e.rate_x1024, thr)) == pytest.approx(0.1)
    curve = bler(e.qm, e.rate_x1024, np.linspace(thr - 10, thr + 10, 50))
    assert np.all(np.diff(curve) < 0) and curve[0] > 0.99 and curve[-1] < 1e-6
    assert float(bler(e.qm, e.rate_x1024, thr, retx=1)) < 0.02  # +3 dB combining gain
    rng = np.random.default_rng(0)
    g = Grant("dl", 0, RNTI_BASE, A, 0, 10, 2, 12, (2, 11), 10, 1, e.qm, e.rate_x1024, 1,
              1000, 0, 0, 1, 0)  # fmt: skip
    oks = [link_ok(g, thr, rng) for _ in range(4000)]
    assert 1 - np.mean(oks) == pytest.approx(0.1, abs=0.02)


# -- slice quotas ----------------------------------------------------------------------------


def slice_prbs(decs: list[SlotDecision], s: Snssai, d: Direction = "dl") -> list[int]:
    return [sum(g.n_prb for g in dec.grants(d) if g.snssai == s) for dec in decs]


def test_dedicated_prbs_stay_unused_by_others() -> None:
    # slice A reserves 30 % (15 of 51 PRBs) but has no UE: B's UEs never get them
    mac = make(ues=6, **two_slices(ded_a=30, min_a=30), ue_slices=[1] * 6)
    decs = run(mac, 100)
    assert set(slice_prbs(decs, B)) == {51 - 15}
    assert set(slice_prbs(decs, B, "ul")) == {51 - 15}
    assert mac.kpm()["RRU.PrbTotDl"] == pytest.approx(100 * 36 / 51)


def test_max_ratio_is_a_cap() -> None:
    mac = make(ues=4, **two_slices(max_ratio=40), ue_slices=[1, 1, 1, 1])
    decs = run(mac, 100)
    assert set(slice_prbs(decs, B)) == {51 * 40 // 100}


def test_min_ratio_honoured_under_contention() -> None:
    cfg: dict[str, Any] = {"ues": 8, "ue_slices": [0] + [1] * 7, "snr_db_range": (15, 15)}
    without = run(make(**cfg, **two_slices()), 200)
    with_min = run(make(**cfg, **two_slices(min_a=50)), 200)
    assert np.mean(slice_prbs(without, A)) < 51 / 4  # one UE of eight: a small share
    assert min(slice_prbs(with_min, A)) >= 51 * 50 // 100  # guaranteed every slot
    assert min(slice_prbs(with_min, B)) > 0  # the rest goes to B


def test_min_not_reserved_when_slice_has_no_data() -> None:
    mac = make(ues=4, **two_slices(min_a=50), ue_slices=[1, 1, 1, 1])
    assert set(slice_prbs(run(mac, 50), B)) == {51}


def test_invalid_quota_set_refused_and_nothing_applied() -> None:
    mac = make(ues=4, **two_slices(max_ratio=40), ue_slices=[1, 1, 1, 1])
    before = mac.slice_quotas
    plan = mac.quota_plan
    bad_sum = [SliceQuota(snssai=A, min_ratio=60), SliceQuota(snssai=B, min_ratio=50)]
    with pytest.raises(FieldError) as e:
        mac.set_slice_quotas(bad_sum)
    assert e.value.field == "slice_quotas"
    with pytest.raises(FieldError) as e:
        mac.set_slice_quotas(
            [{"snssai": {"sst": 3}, "max_ratio": 10},
             {"snssai": {"sst": 1}, "min_ratio": 50, "max_ratio": 20}]
        )  # fmt: skip
    assert e.value.field.startswith("slice_quotas[1]")
    with pytest.raises(FieldError) as e:
        mac.set_slice_quotas([SliceQuota(snssai=A), SliceQuota(snssai=A)])
    assert e.value.field == "slice_quotas[1].snssai"
    with pytest.raises(FieldError):
        mac.set_slice_quotas([SliceQuota(snssai=A), "x"])  # type: ignore[list-item]
    assert mac.slice_quotas == before and mac.quota_plan is plan
    assert set(slice_prbs(run(mac, 20), B)) == {20}


def test_new_quotas_apply_from_the_next_slot() -> None:
    mac = make(ues=4, ue_slices=[1, 1, 1, 1], **two_slices())
    assert set(slice_prbs(run(mac, 10), B)) == {51}
    mac.set_slice_quotas([SliceQuota(snssai=B, max_ratio=20)])
    assert set(slice_prbs(run(mac, 10, SlotId(1, 0)), B)) == {10}
    mac.set_slice_quotas([])  # no quotas: everything again
    assert set(slice_prbs(run(mac, 10, SlotId(2, 0)), B)) == {51}


def test_quota_swap_from_another_thread_is_atomic() -> None:
    mac = make(ues=4, ue_slices=[1, 1, 1, 1], **two_slices())
    x = [SliceQuota(snssai=A, dedicated_ratio=20, min_ratio=20), SliceQuota(snssai=B, max_ratio=50)]
    y = [SliceQuota(snssai=B, max_ratio=90)]
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            mac.set_slice_quotas(x if i % 2 else y)
            i += 1

    th = threading.Thread(target=flip)
    th.start()
    try:
        decs = run(mac, 300)
    finally:
        stop.set()
        th.join()
    # every slot saw one whole plan: B gets min(max, N - A's dedicated) of one of them
    assert set(slice_prbs(decs, B)) <= {min(51 * 50 // 100, 51 - 10), 51 * 90 // 100, 51}


# -- KPM -------------------------------------------------------------------------------------


def test_kpm_counters_match_the_grants() -> None:
    mac = make(
        ues=6, ul_l1=True, traffic={"kind": "poisson", "dl_rate_mbps": 15, "ul_rate_mbps": 4}
    )
    decs: list[SlotDecision] = []
    s = SlotId(0, 0)
    acked_ul = 0
    rng = np.random.default_rng(3)
    for _ in range(600):
        dec = mac.schedule(s)
        decs.append(dec)
        for g in dec.ul:  # the "L1" decodes 90 % of the PUSCHs right away
            ok = bool(rng.random() < 0.9)
            mac.on_ul_crc(s, g.rnti, g.harq_id, ok)
            if ok:
                acked_ul += 1
        s = s + 1
    snap = mac.counters()
    k = mac.kpm()
    for d, name in (("dl", "Dl"), ("ul", "Ul")):
        grants = [g for dec in decs for g in dec.grants(d)]  # type: ignore[arg-type]
        used = sum(g.n_prb for g in grants)
        c = snap.direction(d)  # type: ignore[arg-type]
        assert int(c.prb_used.sum()) == used
        assert k[f"RRU.PrbUsed{name}"] == pytest.approx(used / 600)
        assert k[f"RRU.PrbTot{name}"] == pytest.approx(100 * used / (600 * 51))
        assert k[f"RRU.PrbAvail{name}"] == 51
        assert int(c.tb_new.sum()) == sum(g.retx == 0 for g in grants)
        assert int(c.tb_retx.sum()) == sum(g.retx > 0 for g in grants)
        assert np.all(c.vol_bits <= c.delivered_bits) and np.all(c.thp_slots <= 600)
        thp = c.vol_bits.sum() / (c.thp_slots.sum() * 5e-4) / 1000
        assert k[f"DRB.UEThp{name}"] == pytest.approx(thp)
    assert int(snap.ul.acks.sum()) == acked_ul
    per_ue = mac.kpm_per_ue()
    assert sum(v["RRU.PrbUsedDl"] for v in per_ue.values()) == pytest.approx(k["RRU.PrbUsedDl"])
    assert sum(v["airan.mac.bitsUl"] for v in per_ue.values()) == k["airan.mac.bitsUl"]


def test_full_buffer_throughput_is_acked_tbs_over_time() -> None:
    mac = make(ues=3, ul_l1=True)
    s = SlotId(0, 0)
    acked = 0
    for _ in range(200):
        for g in mac.schedule(s).ul:
            mac.on_ul_crc(s, g.rnti, g.harq_id, True)
            acked += g.tbs
        s = s + 1
    # full buffer: every UE has data in every slot, and no burst ever ends
    assert mac.kpm()["DRB.UEThpUl"] == pytest.approx(acked / (3 * 200 * 5e-4) / 1000)


def test_period_kpm_from_two_snapshots() -> None:
    mac = make(ues=5, **two_slices(max_ratio=60), ue_slices=[0, 0, 1, 1, 1])
    run(mac, 100)
    t0 = mac.counters()
    decs = run(mac, 150, SlotId(10, 0))
    t1 = mac.counters()
    k = period_kpm(t0, t1)
    used = sum(g.n_prb for dec in decs for g in dec.dl)
    assert k["airan.mac.slots"] == 150
    assert k["RRU.PrbUsedDl"] == pytest.approx(used / 150)
    assert period_kpm(None, t1)["airan.mac.slots"] == 250
    per_slice = period_kpm_per_slice(t0, t1)
    assert set(per_slice) == {"1", "2-00000a"}
    assert per_slice["2-00000a"]["RRU.PrbUsedDl"] == pytest.approx(np.mean(slice_prbs(decs, B)))
    assert per_slice["2-00000a"]["RRU.PrbUsedDl"] <= 51 * 60 // 100
    per_ue = period_kpm_per_ue(t0, t1)
    assert sum(v["RRU.PrbTotDl"] for v in per_ue.values()) == pytest.approx(k["RRU.PrbTotDl"])
    with pytest.raises(FieldError):
        period_kpm(t1, t0)
    assert t1.dl.prb_used.flags.writeable is False


def test_lookup_tables_match_the_functions() -> None:
    """The MAC's per-MCS / per-CQI tables give what the table functions give."""
    import math

    from airan.ran.mac import BLER_SLOPE_PER_DB

    rng = np.random.default_rng(3)
    for table in (1, 2):
        mac = make(mcs_table=table, ues=16)
        for _ in range(20):
            mac.cqi = rng.integers(0, 16, 16)
            mac.ul_snr_est = rng.uniform(-15, 35, 16)
            assert np.array_equal(mac._mcs_of("dl"), tables.mcs_from_cqi(mac.cqi, table))
            assert np.array_equal(mac._mcs_of("ul"), tables.mcs_from_snr(mac.ul_snr_est, table))
        rows = tables.mcs_table(table)
        for n in (1, 3, 8, 16, 29):
            m = rng.integers(0, len(rows), n)
            retx = rng.integers(0, 4, n)
            snr = rng.uniform(-10, 30, n)
            qm = [rows[i].qm for i in m]
            rate = [float(rows[i].rate_x1024 or 0.0) for i in m]
            eff = snr + mac._retx_gain_db[retx]
            x = BLER_SLOPE_PER_DB * (eff - mac._snr10_by_mcs[m]) + math.log(9.0)
            p = 1.0 / (1.0 + np.exp(np.clip(x, -50.0, 50.0)))
            assert np.array_equal(p, bler(qm, rate, snr, retx))
    with pytest.raises(FieldError):
        mac.cqi = np.array([16] * 16)
        mac._mcs_of("dl")
