"""L1Work: the real L1 slot work of a cell (test vectors, stage order, DL work, bounds,
CUDA graphs) and the L1 slot-timing benchmark's smoke run."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airan.backend import probe_cupy
from airan.core.errors import FieldError
from airan.ran.config import RanConfig
from airan.ran.du import DuWorkload
from airan.ran.l1 import UL_STAGES, L1Work

ROOT = Path(__file__).resolve().parents[1]
GPU = probe_cupy()
needs_gpu = pytest.mark.skipif(GPU is None, reason="no CUDA device usable through CuPy")

#: small, and decodable at the default SNRs (4 antennas for 2 layers)
SMALL = RanConfig(bandwidth_mhz=5, antennas=4, layers=2, ues=2)


@pytest.fixture(scope="module")
def l1() -> L1Work:
    return L1Work(SMALL, np, test_vectors=4)


class Counter:
    def __init__(self) -> None:
        self.ok = 0
        self.total = 0

    def __call__(self, ok: int, total: int) -> None:
        self.ok += ok
        self.total += total


def run_ul(l1: L1Work, n: int, count: Counter) -> list[object]:
    return [stage() for stage in l1.ul_work(n, count)]


def test_test_vectors_decode_with_crc_ok(l1: L1Work) -> None:
    count = Counter()
    for n in range(l1.test_vectors):
        grid, soft, res = run_ul(l1, n, count)
        assert isinstance(grid, np.ndarray) and grid.shape[0] == SMALL.antennas
        assert isinstance(soft, list) and isinstance(res, list) and len(soft) == len(res)
    assert count.total >= l1.test_vectors
    assert count.ok == count.total


def test_graphs_are_ignored_on_numpy(l1: L1Work) -> None:
    assert l1.graphs is False
    assert l1.graph_error is None


def test_stages_must_run_in_order(l1: L1Work) -> None:
    fe, eq, dc = l1.ul_work(0, Counter())
    with pytest.raises(RuntimeError, match=r"before pusch\.front_end"):
        eq()
    with pytest.raises(RuntimeError, match=r"before pusch\.front_end"):
        dc()
    fe()
    with pytest.raises(RuntimeError, match=r"before pusch\.equalise"):
        dc()
    with pytest.raises(RuntimeError, match=r"pusch\.front_end called before pusch\.equalise"):
        fe()
    eq()
    dc()
    with pytest.raises(RuntimeError, match="after the decode"):
        dc()


def test_du_slot_work_runs_and_counts_crcs(l1: L1Work) -> None:
    du = DuWorkload(SMALL, seed=3, l1=[l1])
    names: set[str] = set()
    for task in du.radio_tasks(0, 8):
        names.add(task.name)
        for s in task.slices:
            assert s.work is not None
            assert s.bound_ns >= 20_000
            out = s.work()
            if s.op == "pdsch.tx":
                assert isinstance(out, np.ndarray)
                assert out.shape == (SMALL.layers, l1.tx.ofdm(task.slot).samples_per_slot)
                assert np.isfinite(out).all() and float(np.abs(out).max()) > 0.0
    assert names == {"pusch", "pdsch"}  # DL work ran for the MAC's grants
    assert du.l1_crc_total > 0
    assert du.l1_crc_ok == du.l1_crc_total


def test_bounds_positive(l1: L1Work) -> None:
    for op in (*UL_STAGES, "pdsch.tx"):
        assert l1.bound(op, {"prb": 16}) >= 20_000


def test_bad_config_is_a_field_error() -> None:
    with pytest.raises(FieldError) as e:
        RanConfig.parse({"bandwidth_mhz": 7})
    assert e.value.field.startswith("ran.bandwidth_mhz")
    with pytest.raises(FieldError) as e:
        RanConfig.parse({"antennas": 2, "layers": 4})
    assert e.value.field.startswith("ran.layers")
    with pytest.raises(FieldError, match="config"):
        L1Work({"bandwidth_mhz": 5}, np)  # type: ignore[arg-type]
    with pytest.raises(FieldError, match="xp"):
        L1Work(SMALL, math)
    with pytest.raises(FieldError, match="test_vectors"):
        L1Work(SMALL, np, test_vectors=0)
    with pytest.raises(FieldError, match="cell"):
        L1Work(SMALL, np, cell=1)  # one cell


# -- the graph path's plumbing on the CPU, with a stand-in CuPy ---------------------------


def fake_cupy() -> types.ModuleType:
    """A module named ``cupy`` that is NumPy, plus ``cuda.Stream``."""
    mod = types.ModuleType("cupy")

    class Stream:
        def __init__(self, non_blocking: bool = False) -> None:
            self.synced = 0

        def synchronize(self) -> None:
            self.synced += 1

    mod.__getattr__ = lambda name: getattr(np, name)  # type: ignore[method-assign]
    mod.cuda = types.SimpleNamespace(Stream=Stream)  # type: ignore[attr-defined]
    return mod


class FakeGraph:
    """Stands for CapturedGraph: runs ``fn`` twice (warm-up, capture); a launch does
    nothing (a test vector's front end and equalisation are deterministic, so the
    capture run's outputs are what a replay would write)."""

    made: list[FakeGraph] = []  # noqa: RUF012

    def __init__(self, fn: Any, stream: Any = None) -> None:
        fn()
        fn()
        self.launches = 0
        FakeGraph.made.append(self)

    def __call__(self) -> None:
        self.launches += 1


@pytest.fixture
def cupy_stand_in(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    import airan.ran.phy.modulation as modulation
    import airan.sched.cupy_executor as cupy_executor

    # the demapper caches its tables by module name: keep "cupy" entries out of it
    monkeypatch.setattr(modulation, "_CONSTANTS", {})
    monkeypatch.setattr(cupy_executor, "CapturedGraph", FakeGraph)
    FakeGraph.made = []
    return fake_cupy()


def test_graph_path_replays_captured_stages(cupy_stand_in: types.ModuleType) -> None:
    l1 = L1Work(SMALL, cupy_stand_in, test_vectors=2)
    assert l1.graphs and l1.graph_error is None
    assert len(FakeGraph.made) == 2 * l1.test_vectors  # front end + equalisation per TV
    before = sum(g.launches for g in FakeGraph.made)
    count = Counter()
    for n in range(4):
        run_ul(l1, n, count)
    assert sum(g.launches for g in FakeGraph.made) - before == 2 * 4
    assert count.total > 0 and count.ok == count.total
    eager = L1Work(SMALL, cupy_stand_in, test_vectors=2, graphs=False)
    assert not eager.graphs
    soft_g = run_ul(l1, 1, Counter())[1]
    soft_e = run_ul(eager, 1, Counter())[1]
    assert isinstance(soft_g, list) and isinstance(soft_e, list)
    for a, b in zip(soft_g, soft_e, strict=True):
        np.testing.assert_array_equal(a.llr, b.llr)


def test_capture_failure_falls_back_with_a_warning(
    cupy_stand_in: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import airan.sched.cupy_executor as cupy_executor

    def broken(fn: Any, stream: Any = None) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cupy_executor, "CapturedGraph", broken)
    with caplog.at_level(logging.WARNING, logger="airan.ran.l1"):
        l1 = L1Work(SMALL, cupy_stand_in, test_vectors=2)
    assert not l1.graphs
    assert l1.graph_error is not None and "capturing" in l1.graph_error
    assert any("uncaptured" in r.getMessage() for r in caplog.records)
    count = Counter()
    run_ul(l1, 0, count)
    assert count.total > 0 and count.ok == count.total


# -- CUDA graphs on a real device ------------------------------------------------------------


def _gpu_pair(test_vectors: int = 3) -> tuple[Any, Any, L1Work, L1Work]:
    import cupy as cp

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        g = L1Work(SMALL, cp, test_vectors=test_vectors, sync=stream.synchronize)
        e = L1Work(SMALL, cp, test_vectors=test_vectors, sync=stream.synchronize, graphs=False)
    return cp, stream, g, e


@pytest.mark.gpu
@needs_gpu
def test_gpu_graph_outputs_match_uncaptured() -> None:
    cp, stream, g, e = _gpu_pair()
    assert g.graphs, g.graph_error
    assert not e.graphs
    for n in range(2 * g.test_vectors):  # every TV, twice: replays rewrite the buffers
        with stream:
            ca, ce = Counter(), Counter()
            fe_g, eq_g, dc_g = g.ul_work(n, ca)
            fe_e, eq_e, dc_e = e.ul_work(n, ce)
            grid_g = cp.asnumpy(fe_g())
            grid_e = cp.asnumpy(fe_e())
            np.testing.assert_array_equal(grid_g, grid_e)  # same cuFFT plan shape, same input
            soft_g, soft_e = eq_g(), eq_e()
            stream.synchronize()
            assert isinstance(soft_g, list) and isinstance(soft_e, list)
            for a, b in zip(soft_g, soft_e, strict=True):
                for name in ("llr", "noise_var", "snr_db", "symbols"):
                    x, y = cp.asnumpy(getattr(a, name)), cp.asnumpy(getattr(b, name))
                    scale = float(np.abs(y).max()) or 1.0
                    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * scale)
            res_g, res_e = dc_g(), dc_e()
            stream.synchronize()
            assert isinstance(res_g, list) and isinstance(res_e, list)
            assert [r.crc_ok for r in res_g] == [r.crc_ok for r in res_e]
            for a, b in zip(res_g, res_e, strict=True):
                np.testing.assert_array_equal(cp.asnumpy(a.bits), cp.asnumpy(b.bits))
            assert (ca.ok, ca.total) == (ce.ok, ce.total)
            assert ca.ok == ca.total


@pytest.mark.gpu
@needs_gpu
def test_gpu_graphs_in_the_du_under_the_executor() -> None:
    import cupy as cp

    from airan.sched.cupy_executor import CupyExecutor
    from airan.sched.executors import Stream

    ex = CupyExecutor()
    l1 = L1Work(SMALL, cp, test_vectors=2, sync=ex.radio_stream.synchronize)
    assert l1.graphs, l1.graph_error
    du = DuWorkload(SMALL, seed=1, l1=[l1])
    done: list[Any] = []
    for t, task in enumerate(du.radio_tasks(0, 6)):
        for k, s in enumerate(task.slices):
            ex.submit(s, Stream.RADIO, (t, k))
    ex.close()
    ex.poll(done)
    assert du.l1_crc_total > 0 and du.l1_crc_ok == du.l1_crc_total


@pytest.mark.gpu
@needs_gpu
def test_gpu_capture_failure_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import cupy as cp

    import airan.sched.cupy_executor as cupy_executor

    real = cupy_executor.CapturedGraph

    def sync_inside(fn: Any, stream: Any = None) -> Any:
        def bad() -> None:
            fn()
            float(cp.ones(1).sum())  # a host sync: not allowed while capturing

        return real(bad, stream)

    monkeypatch.setattr(cupy_executor, "CapturedGraph", sync_inside)
    stream = cp.cuda.Stream(non_blocking=True)
    with caplog.at_level(logging.WARNING, logger="airan.ran.l1"), stream:
        l1 = L1Work(SMALL, cp, test_vectors=2, sync=stream.synchronize)
        assert not l1.graphs and l1.graph_error
        count = Counter()
        run_ul(l1, 0, count)
        stream.synchronize()
    assert count.total > 0 and count.ok == count.total
    assert any("uncaptured" in r.getMessage() for r in caplog.records)


# -- the benchmark ----------------------------------------------------------------------------


def test_bench_l1_quick_smoke(tmp_path: Path) -> None:
    out = tmp_path / "l1.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_l1.py"), "--quick",
         "--backend", "numpy", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "largest configuration meeting µ=1 timing on" in proc.stdout
    report = json.loads(out.read_text())
    for key in ("backend", "device", "date", "slot_budget_us", "rows", "largest_meeting"):
        assert key in report
    assert report["rows"]
    row = report["rows"][0]
    for key in ("rung", "config", "variant", "slots", "slot_us", "stages_us", "meets_timing",
                "crc_ok_ratio", "init_s"):  # fmt: skip
        assert key in row
    assert set(row["slot_us"]) >= {"p50", "p99", "max"}
    assert row["slot_us"]["p50"] > 0 and row["variant"] == "numpy"
    assert set(row["stages_us"]) >= set(UL_STAGES)
