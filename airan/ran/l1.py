"""The real L1 work of one cell (TS 38.211 §6.3.1/§7.3.1, TS 38.212 §6.2/§7.2) on
NumPy or CuPy, for :class:`~airan.ran.du.DuWorkload` on a real device.

Downlink encodes and modulates the live MAC's grants. Uplink replays *test vectors*:
received slots recorded at start-up from the same MAC's grants, each UE through its
own multipath channel at its SNR (as NVIDIA's cuBB test MAC replays its TVs).

**CUDA graphs** (CuPy, ``graphs=True``, the default): a slot's radio pipeline is launched
as captured graphs, not kernel by kernel (Python launch overhead is several µs per
kernel). At start-up each test vector's uplink **front end** (CP removal, FFT, subcarrier
gather) and **equalisation** (channel and noise estimation, MMSE, demapping,
descrambling) are captured once, as one graph per stage, with
:class:`~airan.sched.cupy_executor.CapturedGraph`; :meth:`L1Work.ul_work`'s first two
stages then each replay one graph on the current stream (inside an executor's
``submit``: the radio stream). Their shapes are fixed per test vector and
:meth:`PuschReceiver.front_end` / :meth:`~PuschReceiver.equalise` do no host
synchronisation after :meth:`~PuschReceiver.plan`. The graphs read the test vector's
samples and plan (kept alive here) and write the receiver's grid buffer and the
equaliser's outputs (kept alive here: the decode stage reads them), at fixed device
addresses. Each front-end graph is captured under a cuFFT plan owned by this object, so
the plan's work area cannot be freed by CuPy's plan cache while the graph refers to it.

The **decode** stage is not captured: LDPC early termination and the CRC verdicts need
the host. The **downlink** is not captured either: a graph is bound to one grant set
(PRBs, MCS, TBS, layers, RNTI, RV, slot number), and the live MAC's grant sets almost
never repeat (measured over 4000 slots, a 32-entry cache of exact grant-set keys hits
0.1 % of slots at 20 MHz, 8 UEs and 0 % at 100 MHz, 16 UEs), so a per-grant-set graph
cache would pay a warm-up and a capture for nearly every slot. Besides,
:class:`~airan.ran.phy.pdsch.PdschTransmitter` uploads host index arrays in every call
(``_map_ue``), which a capture would record as copies from transient host buffers.

Any capture failure falls back to the uncaptured path with a logged warning
(:attr:`L1Work.graph_error` says why); it never raises.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from airan.core.errors import FieldError
from airan.ran.config import RanConfig
from airan.ran.mac import Grant, Mac, SlotDecision
from airan.ran.numerology import SlotId

log = logging.getLogger(__name__)

#: The uplink stages, in the order they must run for one slot.
UL_STAGES: tuple[str, str, str] = ("pusch.front_end", "pusch.equalise", "pusch.decode")


def to_sch(g: Grant, config: RanConfig) -> Any:
    """A MAC grant as the L1's :class:`~airan.ran.phy.pusch.SchGrant`."""
    from airan.ran.phy.pusch import SchGrant

    return SchGrant(
        rnti=g.rnti,
        prb_start=g.prb_start,
        n_prb=g.n_prb,
        qm=g.qm,
        code_rate=g.code_rate / 1024.0,
        tbs=g.tbs,
        layers=g.layers,
        rv=g.rv,
        start_symbol=g.start_symbol,
        n_symbols=g.n_symbols,
        dmrs_add_pos=config.dmrs_additional_position,
        harq_id=g.harq_id,
    )


@dataclass
class _Tv:
    """One recorded uplink slot: its grants' plan and the received samples."""

    slot: int
    plan: Any
    samples: Any
    n_ues: int


@dataclass
class _UlGraphs:
    """The captured uplink stages of one test vector and the buffers they write."""

    front_end: Callable[[], object]  # launches the front-end graph on the current stream
    equalise: Callable[[], object]  # launches the equalisation graph
    grid: Any  # the receiver's grid, written by front_end, read by equalise
    soft: list[Any]  # the equaliser's outputs (UeSoft), rewritten by every launch


def _check_int(name: str, v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FieldError(name, f"must be an integer in [{lo}, {hi}], got {v!r}")
    return v


class L1Work:
    """The real L1 kernels of one cell on an array module (NumPy or CuPy).

    ``sync`` waits for the device (a no-op on NumPy); it is used only at start-up, to
    calibrate each slice kind's declared bound (the estimator learns the rest).
    ``graphs``: on CuPy, capture each test vector's uplink front end and equalisation
    as CUDA graphs at start-up and replay them in :meth:`ul_work` (ignored on NumPy;
    :attr:`graphs` says whether graphs are in use).
    """

    def __init__(
        self,
        config: RanConfig,
        xp: ModuleType,
        *,
        seed: int = 0,
        cell: int = 0,
        sync: Callable[[], None] = lambda: None,
        test_vectors: int = 8,
        graphs: bool = True,
    ) -> None:
        from airan.ran.phy.channel import TdlChannel, awgn
        from airan.ran.phy.pdsch import PdschTransmitter
        from airan.ran.phy.pusch import CellConfig, PuschReceiver

        if not isinstance(config, RanConfig):
            raise FieldError("config", f"must be a RanConfig, got {type(config).__name__}")
        name = getattr(xp, "__name__", None)
        if name not in ("numpy", "cupy"):
            raise FieldError("xp", f"must be the numpy or cupy module, got {xp!r}")
        _check_int("seed", seed, 0, 2**63 - 1)
        _check_int("cell", cell, 0, config.cells - 1)
        _check_int("test_vectors", test_vectors, 1, 256)
        if not callable(sync):
            raise FieldError("sync", f"must be callable, got {sync!r}")
        self.config = config
        self.xp = xp
        self._sync = sync
        n_id = (config.cells * 101 + cell * 3) % 1008
        self.cell = CellConfig(mu=config.numerology, n_prb=config.n_prb, n_id=n_id)
        self.rx = PuschReceiver(self.cell, config.antennas, xp=xp)
        self.tx = PdschTransmitter(self.cell, config.layers, xp=xp)
        rng = np.random.default_rng([seed, cell, 0x17])
        # random payload bits, sliced per TB (the content does not change the work)
        self._bits = xp.asarray(rng.integers(0, 2, 1 << 21, dtype=np.uint8))
        # uplink test vectors from the same MAC, each UE through its own channel
        mac = Mac(config, seed + 104_729 * (cell + 1), cell=cell)
        ue_tx = PdschTransmitter(self.cell, config.layers)  # the UEs' transmitter, on the host
        fs = ue_tx.ofdm().sample_rate_hz
        self._tvs: list[_Tv] = []
        self._warm_dl: list[SlotDecision] = []  # downlink slots run once at start-up
        index = 0
        while len(self._tvs) < test_vectors and index < 64 * test_vectors:
            slot = SlotId.from_index(index, config.numerology)
            dec = mac.schedule(slot)
            index += 1
            if dec.dl and len(self._warm_dl) < 4 * test_vectors:
                self._warm_dl.append(dec)
            if not dec.ul:
                continue
            grants = [to_sch(g, config) for g in dec.ul]
            n = slot.slot
            y: Any = None
            for g, mg in zip(grants, dec.ul, strict=True):
                bits = rng.integers(0, 2, g.tbs, dtype=np.uint8)
                x = ue_tx.transmit([g], [bits], n)[: g.layers]
                ch = TdlChannel.draw(rng, n_rx=config.antennas, n_tx=g.layers, sample_rate_hz=fs)
                # the slot as the MAC planned it: after MMSE combining (a diversity
                # gain of about N - L + 1 for N antennas and L layers), each UE is
                # received 3 dB above the SNR its link adaptation chose the MCS for,
                # the loss of this receiver (LS channel estimation, min-sum decoding)
                gain_db = 10.0 * np.log10(config.antennas - g.layers + 1)
                snr = float(mac.ul_snr_est[mg.ue]) + 3.0 - gain_db
                part = ch.propagate(x) * np.float32(10 ** (snr / 20.0))
                y = part if y is None else y + part
            samples = xp.asarray(awgn(y, 0.0, rng))
            self._tvs.append(_Tv(n, self.rx.plan(grants, n), samples, len(grants)))
        if not self._tvs:
            raise FieldError(
                "config.traffic",
                f"the MAC scheduled no uplink in {index} slots: no uplink test vectors to record",
            )
        #: why the uplink runs uncaptured although graphs were asked for on CuPy
        self.graph_error: str | None = None
        self._ul_graphs: list[_UlGraphs] | None = None
        self._keep: list[Any] = []  # what the graphs refer to: cuFFT plan, capture stream
        if graphs and name == "cupy":
            self._ul_graphs = self._capture_ul()
        self._bounds: dict[tuple[str, tuple[tuple[str, int], ...]], int] = {}
        self._calibrated_ns: dict[str, int] = {}
        from airan.ran.phy import crc, ldpc

        ldpc.warm_tables(xp)  # no lifting size pays for its tables in the run
        for poly in ("24A", "24B", "16"):
            crc.crc_parity(xp.zeros(16, dtype=xp.uint8), poly)
        self._calibrate()

    # -- CUDA graphs -------------------------------------------------------------------
    @property
    def graphs(self) -> bool:
        """Whether :meth:`ul_work`'s front end and equalisation replay CUDA graphs."""
        return self._ul_graphs is not None

    @property
    def test_vectors(self) -> int:
        """The number of recorded uplink slots replayed in turn."""
        return len(self._tvs)

    def _fft_plan(self) -> Any:
        """A cuFFT plan for the front end's batched FFT, owned by this object (``None``
        when this CuPy cannot make one: the plan cache's plan is used then)."""
        from airan.ran.phy.ofdm import SYMBOLS_PER_SLOT

        try:
            get_fft_plan = importlib.import_module("cupyx.scipy.fftpack").get_fft_plan
            shape = (self.config.antennas, SYMBOLS_PER_SLOT, self.cell.fft)
            probe = self.xp.empty(shape, dtype=self.xp.complex64)
            return get_fft_plan(probe, axes=-1, value_type="C2C")
        except Exception as e:  # an old CuPy, no cupyx: capture with the cached plan
            log.info("L1Work: no owned cuFFT plan (%s: %s)", type(e).__name__, e)
            return None

    def _capture_ul(self) -> list[_UlGraphs] | None:
        """Capture every test vector's front end and equalisation; ``None`` (with a
        logged warning and :attr:`graph_error` set) when anything fails."""
        cp: Any = self.xp
        stream: Any = None
        try:
            from airan.sched.cupy_executor import CapturedGraph

            stream = cp.cuda.Stream(non_blocking=True)  # capture needs a non-default stream
            plan = self._fft_plan()
            rx = self.rx
            out: list[_UlGraphs] = []
            for tv in self._tvs:
                held: dict[str, Any] = {}

                def fe(tv: _Tv = tv, held: dict[str, Any] = held) -> None:
                    held["grid"] = rx.front_end(tv.samples, tv.slot)

                def eq(tv: _Tv = tv, held: dict[str, Any] = held) -> None:
                    held["soft"] = rx.equalise(held["grid"], tv.plan, tv.slot)

                if plan is not None:
                    with plan:  # cupy.fft uses this plan (and its work area) inside
                        fe_graph = CapturedGraph(fe, stream)
                else:
                    fe_graph = CapturedGraph(fe, stream)
                eq_graph = CapturedGraph(eq, stream)
                # the capture run allocated the outputs in the graph's private pool: every
                # launch rewrites these very arrays
                out.append(_UlGraphs(fe_graph, eq_graph, held["grid"], list(held["soft"])))
            stream.synchronize()
            self._keep = [plan, stream]
            return out
        except Exception as e:
            self.graph_error = f"{type(e).__name__}: {e}"
            log.warning(
                "L1Work: CUDA graph capture of the uplink failed (%s); the uplink runs "
                "uncaptured (kernel by kernel)",
                self.graph_error,
            )
            if stream is not None:
                try:
                    stream.synchronize()
                except Exception as e2:  # a broken capture may leave an error behind
                    log.warning("L1Work: capture stream: %s: %s", type(e2).__name__, e2)
            return None

    # -- bounds --------------------------------------------------------------------------
    def _time(self, fn: Callable[[], object]) -> int:
        self._sync()
        t0 = time.perf_counter_ns()
        fn()
        self._sync()
        return time.perf_counter_ns() - t0

    def _calibrate(self) -> None:
        """Run every test vector once per stage: each slice kind's declared bound is
        twice the slowest stage seen (the estimator takes over after warm-up)."""
        worst: dict[str, int] = {}
        for i in range(len(self._tvs)):
            stages = self.ul_work(i, lambda ok, n: None)
            for op, fn in zip(UL_STAGES, stages, strict=True):
                worst[op] = max(worst.get(op, 0), self._time(fn))
        # the downlink twice: the first run fills the per-size caches (CRC matrices,
        # LDPC tables), which would otherwise make the first slots of a run late
        for dec in self._warm_dl:
            self._time(self.dl_work(dec))
        for dec in self._warm_dl:
            worst["pdsch.tx"] = max(worst.get("pdsch.tx", 0), self._time(self.dl_work(dec)))
        self._calibrated_ns = worst

    def bound(self, op: str, shape: dict[str, int]) -> int:
        """The declared bound of a slice: twice the slowest run of its kind at start-up."""
        base = self._calibrated_ns.get(op)
        if base is None:  # a kind not seen at start-up: the slowest kind's
            base = max(self._calibrated_ns.values())
        return max(20_000, 2 * base)

    # -- slot work -----------------------------------------------------------------------
    def ul_work(
        self, n: int, count: Callable[[int, int], None]
    ) -> tuple[Callable[[], object], Callable[[], object], Callable[[], object]]:
        """The three uplink stages of slot ``n`` (on test vector ``n mod pool``), to be
        called once each and in order (else :class:`RuntimeError`). ``count(ok, total)``
        gets the decode's CRC verdicts.

        Each stage returns what it produced (the grid, the per-UE soft outputs, the
        decode results); with graphs, the first two are buffers that the next replay of
        the same test vector overwrites, and are complete once the stream has run."""
        i = n % len(self._tvs)
        tv = self._tvs[i]
        rx = self.rx
        g = self._ul_graphs[i] if self._ul_graphs is not None else None
        state: dict[str, Any] = {"next": 0}

        def step(k: int) -> None:
            if state["next"] != k:
                done = state["next"]
                raise RuntimeError(
                    f"L1Work.ul_work(slot {n}): stage {UL_STAGES[k]} called "
                    + (f"before {UL_STAGES[done]}" if done < 3 else "after the decode")
                    + f"; the stages run once each, in the order {', '.join(UL_STAGES)}"
                )
            state["next"] = k + 1

        if g is not None:
            graphs = g

            def front_end() -> object:
                step(0)
                graphs.front_end()
                return graphs.grid

            def equalise() -> object:
                step(1)
                graphs.equalise()
                return graphs.soft

            def decode() -> object:
                step(2)
                res = rx.decode(graphs.soft, tv.plan, tv.slot)
                count(sum(r.crc_ok for r in res), len(res))
                return res

            return front_end, equalise, decode

        def front_end_eager() -> object:
            step(0)
            state["grid"] = grid = rx.front_end(tv.samples, tv.slot)
            return grid

        def equalise_eager() -> object:
            step(1)
            state["soft"] = soft = rx.equalise(state.pop("grid"), tv.plan, tv.slot)
            return soft

        def decode_eager() -> object:
            step(2)
            res = rx.decode(state.pop("soft"), tv.plan, tv.slot)
            count(sum(r.crc_ok for r in res), len(res))
            return res

        return front_end_eager, equalise_eager, decode_eager

    def dl_work(self, dec: SlotDecision) -> Callable[[], object]:
        """PDSCH transmit of the live MAC's downlink grants (uncaptured: see the module
        docstring). The work returns the transmitted samples ``(layers, samples)``."""
        return self.dl_work_grants([to_sch(g, self.config) for g in dec.dl], dec.slot.slot)

    def dl_work_grants(self, grants: list[Any], n: int) -> Callable[[], object]:
        """PDSCH transmit of ``grants`` (:class:`~airan.ran.phy.pusch.SchGrant`) in slot
        ``n`` of the frame, e.g. from the PDSCH PDUs of a DL_TTI.request."""
        tx = self.tx
        bits = self._bits
        payloads = []
        off = 0
        for g in grants:
            if off + g.tbs > bits.shape[0]:
                off = 0
            payloads.append(bits[off : off + g.tbs])
            off += g.tbs

        def work() -> object:
            return tx.transmit(grants, payloads, n)

        return work
