"""Device profiles and capacity planning: the simulated cell count against the EDF bounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.backend import select_backend
from airan.cli import main
from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.profile import (
    PROFILE_P,
    DeviceProfile,
    EmpiricalDist,
    SliceProfile,
    profile_model,
)
from airan.profiling import measure_profile
from airan.ran.config import RanConfig
from airan.runner import min_deadline_us, plan_capacity, ran_defaults

# One 20 MHz µ=1 cell, full buffer: every slot has a PDSCH and a PUSCH task.
CELL = RanConfig(numerology=1, bandwidth_mhz=20, antennas=2, layers=1, ues=4, ul_deadline_slots=4)


def _const(us: float, spread: float = 0.0) -> list[float]:
    """Quantiles of a duration of ``us``, up to ``spread`` times longer in the tail."""
    return [us * (1.0 + spread * p) for p in PROFILE_P]


def _profile(scale_us: float, spread: float = 0.0) -> DeviceProfile:
    ops = {
        "pusch.front_end": 0.20,
        "pusch.equalise": 0.15,
        "pusch.decode": 0.40,
        "pdsch.tx": 0.25,
    }
    slices = [
        SliceProfile(op=op, shape={}, n=100, quantiles_us=_const(share * scale_us, spread))
        for op, share in ops.items()
    ]
    return DeviceProfile(
        device="test device",
        backend="numpy",
        measured_at="2026-11-22T00:00:00+00:00",
        ran=CELL.model_dump(mode="json"),
        slots=1000,
        slot_work_us=_const(scale_us, spread),
        slices=slices,
        ai_tokens_per_device_s=10_000.0,
    )


@pytest.mark.parametrize(("work_us", "spread"), [(110.0, 0.0), (70.0, 0.0), (90.0, 0.3)])
def test_the_planner_finds_where_misses_start_within_the_edf_bounds(
    work_us: float, spread: float
) -> None:
    """Each cell needs ``work_us`` of device time per 500 µs slot (plus a heavy tail).
    The simulated answer must lie between the density test with blocking (sufficient)
    and the utilisation bound (necessary); one more cell must miss."""
    prof = _profile(work_us, spread)
    policy = Policy(max_ai_slice_us=60.0)
    plan = plan_capacity(prof, CELL, 1500, policy, seed=2, max_cells=12)
    b = plan.bounds
    assert b.sufficient >= 1
    assert b.sufficient <= plan.fit <= b.necessary
    assert plan.runs[-1].cells == plan.fit + 1 and plan.runs[-1].misses > 0
    assert all(r.misses == 0 for r in plan.runs[:-1])
    # the analytic bounds themselves, recomputed by hand
    mean = float(np.mean([work_us * (1 + spread * p) for p in np.linspace(0, 1, 100_001)]))
    if spread == 0.0:
        assert b.necessary == int(500.0 / work_us)
    else:
        assert b.utilisation_per_cell == pytest.approx(
            EmpiricalDist(_const(work_us, spread)).mean_ns / 1000 / 500, rel=1e-6
        )
        assert mean > work_us
    assert b.min_deadline_us == min_deadline_us(CELL) == pytest.approx(900.0)
    # what is left for AI beside the cells that fit, in ms per second and tokens
    last_ok = plan.runs[plan.fit - 1]
    assert plan.ai_device_ms_per_s == pytest.approx(last_ok.ai_busy * 1000)
    assert plan.ai_tokens_per_s == pytest.approx(last_ok.ai_busy * 10_000.0)
    assert last_ok.radio_busy + last_ok.ai_busy == pytest.approx(1.0, abs=0.05)


def test_a_cell_too_large_for_the_device_fits_zero_times() -> None:
    plan = plan_capacity(_profile(700.0), CELL, 300, Policy(), seed=1, max_cells=4)
    assert plan.fit == 0 and plan.runs[0].misses > 0
    assert plan.bounds.necessary == 0 and plan.ai_device_ms_per_s == 1000.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1.0, 1e5), min_size=1, max_size=400), st.integers(0, 2**32 - 1))
def test_empirical_draws_stay_within_the_measured_range(xs: list[float], seed: int) -> None:
    sp = SliceProfile.measure("op", {}, [int(x * 1000) for x in xs])
    d = EmpiricalDist(sp.quantiles_us)
    draws = d.draw(np.random.default_rng(seed), 2000)
    lo, hi = sp.quantiles_us[0] * 1000, sp.quantiles_us[-1] * 1000
    assert draws.min() >= np.floor(lo) and draws.max() <= np.ceil(hi)
    assert lo - 1 <= d.mean_ns <= hi + 1


def test_unmeasured_shapes_take_the_nearest_measured_one() -> None:
    prof = _profile(100.0)
    prof = prof.model_copy(
        update={
            "slices": [
                SliceProfile(op="pusch.decode", shape={"kbits": 2}, n=5, quantiles_us=_const(10)),
                SliceProfile(op="pusch.decode", shape={"kbits": 64}, n=5, quantiles_us=_const(90)),
            ]
        }
    )
    model = profile_model(prof)
    assert model(("pusch.decode", (("kbits", 4),))).max_ns == 10_000
    assert model(("pusch.decode", (("kbits", 128),))).max_ns == 90_000
    with pytest.raises(FieldError, match=r"pdsch\.tx"):
        model(("pdsch.tx", ()))


def test_profiles_refuse_bad_data() -> None:
    good = _profile(100.0).model_dump(mode="json")
    bad = json.loads(json.dumps(good))
    bad["slices"][0]["quantiles_us"] = list(reversed(bad["slices"][0]["quantiles_us"]))
    bad["slices"][0]["quantiles_us"][0] += 5
    with pytest.raises(FieldError, match=r"slices\.0\.quantiles_us|non-decreasing"):
        DeviceProfile.parse(bad)
    bad = dict(good, slots=0)
    with pytest.raises(FieldError, match="slots"):
        DeviceProfile.parse(bad)
    bad = dict(good, extra=1)
    with pytest.raises(FieldError, match="extra"):
        DeviceProfile.parse(bad)
    with pytest.raises(FieldError, match="max_cells"):
        plan_capacity(_profile(1.0), CELL, 10, Policy(), max_cells=17)
    with pytest.raises(FieldError, match="quantiles_us"):
        EmpiricalDist([1.0])  # not one value per probability of PROFILE_P
    with pytest.raises(FieldError, match="slots"):
        measure_profile(select_backend("numpy"), CELL, 5)


def test_measure_a_profile_on_this_cpu_and_plan_with_it(tmp_path: Path) -> None:
    ran = RanConfig.parse(ran_defaults(False))
    prof = measure_profile(select_backend("numpy"), ran, 60, seed=1, ai_seconds=0.3)
    assert prof.backend == "numpy" and prof.slots == 40
    ops = {s.op for s in prof.slices}
    assert "pusch.front_end" in ops or "pdsch.tx" in ops
    assert all(s.quantiles_us[0] > 0 for s in prof.slices)
    assert prof.ai_tokens_per_device_s > 0
    path = tmp_path / "p.json"
    path.write_text(prof.model_dump_json())
    out = tmp_path / "plan.json"
    rc = main(
        ["simulate", "--profile", str(path), "--capacity", "--slots", "300", "--max-cells", "2",
         "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    plan = json.loads(out.read_text())
    assert plan["device"] == prof.device and plan["runs"]
    assert plan["bounds"]["sufficient"] <= plan["fit"] <= plan["bounds"]["necessary"]


def test_cli_refuses_bad_profile_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["simulate", "--capacity"]) == 2
    assert "--capacity" in capsys.readouterr().err
    assert main(["simulate", "--profile", str(tmp_path / "none.json")]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("{not json")
    assert main(["simulate", "--profile", str(tmp_path / "p.json")]) == 2
    assert "not JSON" in capsys.readouterr().err
    (tmp_path / "p.json").write_text(_profile(100.0).model_dump_json())
    assert main(["simulate", "--profile", str(tmp_path / "p.json"), "--antennas", "4"]) == 2
    assert "--antennas" in capsys.readouterr().err
    rc = main(["simulate", "--profile", str(tmp_path / "p.json"), "--slots", "200", "--cells", "2"])
    assert rc == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps lines
    assert "durations from the profile of test device" in out
