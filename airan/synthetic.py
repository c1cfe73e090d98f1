"""A synthetic slot workload: radio tasks with load bursts and a token-producing AI job.

This stands in for the real DU (``airan.ran``) and the real transformer (``airan.ai``)
until those land; every report it feeds says ``"synthetic": true``. The radio follows
the 3GPP NR slot structure (TS 38.211 §4.3.2: a slot of 14 symbols lasting
1 ms / 2^µ): each slot releases a downlink task (one slice, due ``dl_deadline_slots``
after release) and an uplink task (front end then decode, due ``ul_deadline_slots``
after release). The slot's radio load follows a two-state (normal / burst) Markov
chain whose mean is ``radio_load``; the work of each slice is proportional to the
slot's load and its duration is heavy-tailed (:class:`DurationDist`).

On a real backend every slice runs array work (FFTs for the radio, matrix products
for AI) calibrated on the device to the slice's mean duration.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, model_validator

from airan.core.policy import CheckedModel
from airan.core.slices import RanTask, Slice, SliceKey, SliceKind
from airan.sched.executors import DurationDist

#: The radio slices of a slot and their share of the slot's radio work.
RADIO_OPS: tuple[tuple[str, float], ...] = (("dl.tx", 0.35), ("ul.rx", 0.25), ("ul.decode", 0.40))
_LEVELS = tuple(range(5, 101, 5))  # slot load in percent, quantised


class SyntheticConfig(CheckedModel):
    """The knobs of the synthetic workload (all validated, errors name the field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "workload"

    slot_us: float = Field(500.0, ge=62.5, le=1000.0, description="Slot length (µ=1: 500 µs).")
    radio_load: float = Field(0.6, gt=0.0, le=1.0, description="Mean radio load.")
    burst_load: float = Field(0.9, gt=0.0, le=1.0, description="Radio load during bursts.")
    burst_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of slots in a burst.")
    mean_burst_slots: float = Field(20.0, ge=1.0, le=1e6, description="Mean burst length.")
    load_spread: float = Field(0.15, ge=0.0, le=0.5, description="Slot-to-slot load spread.")
    dl_deadline_slots: float = Field(1.0, gt=0.0, le=16.0)
    ul_deadline_slots: float = Field(2.0, gt=0.0, le=16.0)
    jitter: float = Field(0.15, ge=0.0, le=1.0, description="Heavy-tailed share of a duration.")
    alpha: float = Field(2.5, gt=1.0, le=100.0, description="Tail index of durations.")
    max_factor: float = Field(1.5, ge=1.0, le=10.0, description="Worst case over mean.")
    ai_batches: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1)
    ai_step_us: tuple[float, ...] = Field((20.0, 30.0, 50.0, 80.0), min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticConfig:
        if self.burst_fraction > 0 and self.burst_load < self.radio_load:
            raise ValueError(
                f"burst_load ({self.burst_load}) must be >= radio_load ({self.radio_load})"
            )
        if self.burst_fraction > 0 and self.base_load <= 0:
            raise ValueError(
                f"radio_load {self.radio_load} is too low for burst_load {self.burst_load} "
                f"in {self.burst_fraction:.0%} of slots"
            )
        if len(self.ai_batches) != len(self.ai_step_us):
            raise ValueError("ai_batches and ai_step_us must have the same length")
        if any(b < 1 for b in self.ai_batches) or any(t <= 0 for t in self.ai_step_us):
            raise ValueError("ai_batches must be >= 1 and ai_step_us > 0")
        return self

    @property
    def base_load(self) -> float:
        """Load outside bursts, so that the mean over slots is ``radio_load``."""
        f = self.burst_fraction
        return (self.radio_load - f * self.burst_load) / (1.0 - f)


def _dist(mean_ns: float, cfg: SyntheticConfig) -> DurationDist:
    return DurationDist(
        mean_ns=mean_ns,
        max_ns=int(mean_ns * cfg.max_factor) + 1,
        jitter=cfg.jitter,
        alpha=cfg.alpha,
    )


WorkFactory = Callable[[str, float], Callable[[], object]]


class SyntheticWorkload:
    """Radio tasks and AI slices for a run; the same seed gives the same workload."""

    def __init__(
        self, cfg: SyntheticConfig | None = None, seed: int = 0, work: WorkFactory | None = None
    ) -> None:
        self.cfg = cfg if cfg is not None else SyntheticConfig()
        self.seed = seed
        self.slot_ns = round(self.cfg.slot_us * 1000)
        self._profile: dict[SliceKey, DurationDist] = {}
        # Slice templates: radio ones per (op, load level), AI ones per batch size.
        self._radio: dict[int, tuple[Slice, ...]] = {}
        for pct in _LEVELS:
            row = []
            for op, share in RADIO_OPS:
                mean = self.slot_ns * pct / 100.0 * share
                d = _dist(mean, self.cfg)
                fn = work("ran", mean) if work is not None else None
                s = Slice.make(SliceKind.RAN, op, d.max_ns, {"load_pct": pct}, fn)
                self._profile[s.key] = d
                row.append(s)
            self._radio[pct] = tuple(row)
        self._ai: list[Slice] = []
        for batch, step_us in zip(self.cfg.ai_batches, self.cfg.ai_step_us, strict=True):
            d = _dist(step_us * 1000.0, self.cfg)
            fn = work("ai", d.mean_ns) if work is not None else None
            s = Slice.make(SliceKind.AI, "ai.decode", d.max_ns, {"batch": batch}, fn, batch)
            self._profile[s.key] = d
            self._ai.append(s)

    def profile(self) -> dict[SliceKey, DurationDist]:
        """Duration distributions of every slice, for :class:`SimExecutor`."""
        return dict(self._profile)

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "synthetic": True, **self.cfg.model_dump(mode="json")}

    def radio_tasks(self, start_ns: int, slots: int) -> Iterator[RanTask]:
        """Two tasks per slot (downlink, uplink) for ``slots`` slots from ``start_ns``."""
        cfg = self.cfg
        rng = random.Random(self.seed * 1_000_003 + 17)
        slot = self.slot_ns
        dl_dead = round(cfg.dl_deadline_slots * slot)
        ul_dead = round(cfg.ul_deadline_slots * slot)
        p_off = 1.0 / cfg.mean_burst_slots
        f = cfg.burst_fraction
        p_on = f * p_off / (1.0 - f) if f > 0 else 0.0
        base, spread, burst_load = cfg.base_load, cfg.load_spread, cfg.burst_load
        in_burst = False
        templates = self._radio
        for n in range(slots):
            in_burst = (rng.random() >= p_off) if in_burst else (rng.random() < p_on)
            if in_burst:
                u = burst_load + (rng.random() - 0.5) * 0.1
            else:
                u = base + (rng.random() * 2.0 - 1.0) * spread
            pct = min(100, max(5, 5 * round(u * 20.0)))
            dl, ul_rx, ul_dec = templates[pct]
            t = start_ns + n * slot
            yield RanTask(t, t + dl_dead, (dl,), "dl", n)
            yield RanTask(t, t + ul_dead, (ul_rx, ul_dec), "ul", n)

    def decoder(
        self, fits: Callable[[Slice], bool] | None = None, steps: int | None = None
    ) -> SyntheticDecoder:
        """An AI slice source: decode steps of a continuously batched decoder."""
        return SyntheticDecoder(self._ai, random.Random(self.seed * 7_919 + 3), fits, steps)


class SyntheticDecoder:
    """Decode steps of a continuously batched decoder, sized to fit the arbiter.

    Each step wants a batch (the requests in flight vary from step to step). If the
    estimator predicts that the whole batch would not fit in the arbiter's largest AI
    slice (``fits``), the step is cut into the largest sub-batches that do, so the job
    never stalls behind a slice the arbiter will refuse. A source with nothing that
    fits offers its smallest slice and is refused until the device speeds up.
    """

    def __init__(
        self,
        templates: list[Slice],
        rng: random.Random,
        fits: Callable[[Slice], bool] | None,
        steps: int | None,
    ) -> None:
        self._by_size = sorted(templates, key=lambda s: -s.tokens)
        self._rng = rng
        self._fits = fits
        self._steps = steps
        self._step = 0
        self._left = 0  # tokens of the current step still to issue

    def next_slice(self) -> Slice | None:
        if self._left == 0:
            if self._steps is not None and self._step >= self._steps:
                return None
            self._step += 1
            by_size = self._by_size
            self._left = by_size[int(self._rng.random() * len(by_size))].tokens
        fits = self._fits
        for s in self._by_size:
            if s.tokens <= self._left and (fits is None or fits(s)):
                self._left -= s.tokens
                return s
        smallest = self._by_size[-1]
        self._left = max(0, self._left - smallest.tokens)
        return smallest


def array_work_factory(xp: Any, sync: Callable[[], None]) -> WorkFactory:
    """Calibrated array work on ``xp`` (NumPy or CuPy): FFTs for radio, matmuls for AI.

    Each kind has a ladder of unit operations of growing size, each timed on the
    device once. A slice of mean duration ``m`` repeats the largest unit that still
    takes at most ``m / 8`` (so rounding costs at most ~6 %), or the smallest unit.
    """
    gen = xp.random.default_rng(0)

    def ran_unit(n: int) -> Callable[[], object]:
        sig = (gen.standard_normal(n) + 1j * gen.standard_normal(n)).astype(xp.complex64)
        return lambda: xp.fft.ifft(xp.fft.fft(sig))

    def ai_unit(rows: int) -> Callable[[], object]:
        a = gen.standard_normal((rows, 128)).astype(xp.float32)
        w = gen.standard_normal((128, 128)).astype(xp.float32)
        return lambda: xp.tanh(a @ w)

    def unit_ns(fn: Callable[[], object]) -> float:
        for _ in range(20):
            fn()
        sync()
        samples = []
        for _ in range(9):
            t0 = time.perf_counter_ns()
            for _ in range(20):
                fn()
            sync()
            samples.append((time.perf_counter_ns() - t0) / 20)
        samples.sort()
        return samples[len(samples) // 2]

    ladders: dict[str, list[tuple[Callable[[], object], float]]] = {}
    for kind, factory, sizes in (
        ("ran", ran_unit, (64, 256, 1024, 4096)),
        ("ai", ai_unit, (4, 16, 64, 256)),
    ):
        units = [factory(n) for n in sizes]
        ladders[kind] = sorted(((fn, unit_ns(fn)) for fn in units), key=lambda u: -u[1])

    def make(kind: str, mean_ns: float) -> Callable[[], object]:
        ladder = ladders[kind]
        fn, t = next(((f, t) for f, t in ladder if t * 8 <= mean_ns), ladder[-1])
        reps = max(1, round(mean_ns / t))

        def work() -> object:
            r = None
            for _ in range(reps):
                r = fn()
            return r

        return work

    return make
