"""The DU's slot work as radio tasks: timing (TS 38.211 §4.3), shapes, simulation."""

from __future__ import annotations

import numpy as np
import pytest

from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.ran.config import RanConfig
from airan.ran.du import DuWorkload, cost_model, du_period_figures
from airan.runner import simulate


def _cfg(**kw: object) -> RanConfig:
    return RanConfig.parse({"numerology": 1, "bandwidth_mhz": 20, "ues": 4, **kw})


def test_tasks_follow_the_slot_timing() -> None:
    cfg = _cfg(slot_ahead=3, ul_deadline_slots=2, dl_advance_us=100)
    du = DuWorkload(cfg, seed=3)
    T = cfg.slot_ns
    start = 10 * T
    tasks = list(du.radio_tasks(start, 40))
    releases = [t.release_ns for t in tasks]
    assert releases == sorted(releases), "tasks must come in release order"
    ul = [t for t in tasks if t.name == "pusch"]
    dl = [t for t in tasks if t.name == "pdsch"]
    assert ul and dl
    for t in ul:  # released when the slot's last samples are in, due K slots later
        assert t.release_ns == start + (t.slot + 1) * T
        assert t.deadline_ns == t.release_ns + 2 * T
        assert [s.op for s in t.slices] == ["pusch.front_end", "pusch.equalise", "pusch.decode"]
    for t in dl:  # released slot_ahead - 1 slots before air time, due before it
        air = start + t.slot * T
        assert t.deadline_ns == air - 100_000
        assert t.release_ns == max(start, air - 2 * T)
    assert {t.slot for t in ul} <= set(range(40))


def test_shapes_grow_with_the_allocation() -> None:
    small = cost_model(("pusch.decode", (("kbits", 1),))).mean_ns
    large = cost_model(("pusch.decode", (("kbits", 64),))).mean_ns
    assert large > small
    with pytest.raises(KeyError):
        cost_model(("nope", ()))


def test_slice_quotas_are_all_or_nothing() -> None:
    cfg = _cfg()
    du = DuWorkload(cfg, seed=1)
    before = [m.slice_quotas for m in du.macs]
    bad = [
        {"snssai": {"sst": 1}, "min_ratio": 60, "max_ratio": 100},
        {"snssai": {"sst": 2}, "min_ratio": 60, "max_ratio": 100},
    ]
    from airan.core.rrm import SliceQuota

    with pytest.raises(FieldError, match="min_ratio"):
        du.set_slice_quotas([SliceQuota.parse(q) for q in bad])
    assert [m.slice_quotas for m in du.macs] == before


def test_period_figures_report_the_kpm_names() -> None:
    du = DuWorkload(_cfg(), seed=2)
    a = du.counters()
    for _ in du.radio_tasks(0, 200):
        pass
    b = du.counters()
    node, ues = du_period_figures(a, b)
    for name in DuWorkload.NODE_MEASUREMENTS:
        assert name in node, name
    assert node["DRB.UEThpDl"] > 0 and 0 < node["RRU.PrbTotDl"] <= 100
    assert len(ues) == 4
    assert all(set(DuWorkload.UE_MEASUREMENTS) <= set(f) for f in ues.values())


def test_du_simulation_airan_misses_nothing_where_fifo_does() -> None:
    heavy = RanConfig.parse(
        {"numerology": 1, "bandwidth_mhz": 100, "antennas": 8, "layers": 4, "ues": 16}
    )
    airan = simulate(1500, Policy.parse({"name": "airan"}), seed=5, workload=heavy)
    fifo = simulate(1500, Policy.parse({"name": "fifo"}), seed=5, workload=heavy)
    assert airan.ran.tasks == fifo.ran.tasks > 2000
    assert airan.ran.misses == 0
    assert fifo.ran.misses > 0
    assert airan.ai.harvest_ratio > 0.5
    assert airan.workload["workload"] == "du"


def test_simulation_is_deterministic() -> None:
    a = simulate(300, Policy(), seed=9, workload=_cfg())
    b = simulate(300, Policy(), seed=9, workload=_cfg())
    assert a.ran.latency_us == b.ran.latency_us
    assert np.isclose(a.ai.busy_ratio, b.ai.busy_ratio)


def test_one_l1_per_cell_is_required() -> None:
    with pytest.raises(FieldError, match="one L1Work per cell"):
        DuWorkload(_cfg(cells=2), seed=1, l1=[])
