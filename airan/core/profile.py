"""Device profiles: measured slice durations, replayed in virtual time for capacity planning.

``airan profile`` measures, on a real device, the duration of every slice the DU's L1
runs (per operation and shape: the same keys the arbiter's estimator learns under)
and the AI tenant's throughput; it writes a :class:`DeviceProfile`. ``airan simulate
--profile`` replays those distributions in virtual time (:class:`EmpiricalDist`, drawn
by inverse-CDF sampling of the measured quantiles) to answer how many cells of a
configuration fit on that device with zero deadline misses, and what AI capacity is
left beside them (:mod:`airan.runner`, :func:`capacity_bounds` for the analytic check).

Pure logic: no I/O here (the CLI reads and writes the JSON).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from airan.core.errors import FieldError
from airan.core.policy import CheckedModel
from airan.core.slices import SliceKey

#: probabilities at which a profile stores a slice's measured duration: every 5 %,
#: then the tail (p99, p99.9) and the largest sample
PROFILE_P: tuple[float, ...] = (*(i / 20 for i in range(20)), 0.99, 0.999, 1.0)


class SliceProfile(CheckedModel):
    """The measured durations of one slice kind and shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "slice"

    op: str = Field(min_length=1, max_length=64)
    shape: dict[str, int] = Field(default_factory=dict)
    n: int = Field(ge=1, description="Samples measured.")
    quantiles_us: list[float] = Field(
        description="Duration at each probability of PROFILE_P, µs (non-decreasing)."
    )

    @model_validator(mode="after")
    def _check(self) -> SliceProfile:
        q = self.quantiles_us
        if len(q) != len(PROFILE_P):
            raise ValueError(f"quantiles_us must have {len(PROFILE_P)} values, got {len(q)}")
        if any(not math.isfinite(v) or v <= 0 for v in q):
            raise ValueError("quantiles_us must be finite and positive")
        if any(b < a for a, b in itertools.pairwise(q)):
            raise ValueError("quantiles_us must be non-decreasing")
        return self

    @property
    def key(self) -> SliceKey:
        return (self.op, tuple(sorted(self.shape.items())))

    @classmethod
    def measure(cls, op: str, shape: dict[str, int], durations_ns: Sequence[int]) -> SliceProfile:
        a = np.asarray(durations_ns, dtype=np.float64)
        if a.size == 0:
            raise FieldError("durations_ns", f"no samples for {op}")
        q = np.maximum(np.quantile(a, PROFILE_P) / 1000.0, 0.001)
        return cls(op=op, shape=dict(shape), n=int(a.size), quantiles_us=[float(v) for v in q])


class DeviceProfile(CheckedModel):
    """What ``airan profile`` measured on one device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "profile"

    device: str
    backend: str
    measured_at: str = Field(description="UTC time of the measurement, ISO 8601.")
    command: str = ""
    ran: dict[str, Any] = Field(description="The cell the slices were measured on (RanConfig).")
    slots: int = Field(ge=1, description="Slots of DU work measured.")
    slot_work_us: list[float] = Field(
        description="Per cell and slot, the radio work (sum of its slices) at each "
        "probability of PROFILE_P, µs (0 where a slot had no work)."
    )
    slices: list[SliceProfile] = Field(min_length=1)
    ai_tokens_per_device_s: float = Field(
        ge=0.0, description="AI tokens per second of device time, the AI tenant alone."
    )
    ai_tenant: str = ""

    def table(self) -> dict[SliceKey, SliceProfile]:
        return {s.key: s for s in self.slices}


class EmpiricalDist:
    """A duration distribution given by measured quantiles (:data:`PROFILE_P`), drawn
    by inverse-CDF sampling with linear interpolation between them; never above the
    largest sample. Has the interface of :class:`airan.sched.executors.DurationDist`."""

    __slots__ = ("_p", "_q", "max_ns", "mean_ns")

    def __init__(self, quantiles_us: Sequence[float], scale: float = 1.0) -> None:
        q = np.asarray(quantiles_us, dtype=np.float64) * 1000.0 * scale
        if q.shape != (len(PROFILE_P),) or not np.all(np.isfinite(q)) or np.any(q <= 0):
            raise FieldError("quantiles_us", f"need {len(PROFILE_P)} positive values")
        self._p = np.asarray(PROFILE_P)
        self._q = q
        self.max_ns = math.ceil(q[-1])
        # the mean of the piecewise-linear inverse CDF
        self.mean_ns = float(np.sum((q[1:] + q[:-1]) / 2.0 * np.diff(self._p)))

    def quantile_ns(self, p: float) -> float:
        return float(np.interp(p, self._p, self._q))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        return np.rint(np.interp(u, self._p, self._q)).astype(np.int64)


def _distance(a: SliceKey, b: SliceKey) -> float:
    fa, fb = dict(a[1]), dict(b[1])
    if set(fa) != set(fb):
        return math.inf
    return sum(abs(math.log1p(fa[k]) - math.log1p(fb[k])) for k in fa)


def profile_model(profile: DeviceProfile) -> Callable[[SliceKey], EmpiricalDist]:
    """Distributions by slice key for :class:`~airan.sched.executors.SimExecutor`: the
    measured one, or for a shape not measured, the measured shape of the same
    operation nearest in log-feature distance (a cell scheduling more bits than any
    measured slot takes the durations of the largest measured slot: an underestimate,
    so measure with the traffic you plan for)."""
    table = profile.table()
    by_op: dict[str, list[SliceKey]] = {}
    for k in table:
        by_op.setdefault(k[0], []).append(k)
    cache: dict[SliceKey, EmpiricalDist] = {}

    def model(key: SliceKey) -> EmpiricalDist:
        d = cache.get(key)
        if d is not None:
            return d
        sp = table.get(key)
        if sp is None:
            cands = by_op.get(key[0])
            if not cands:
                raise FieldError("profile", f"no measured slice of operation {key[0]!r}")
            sp = table[min(cands, key=lambda k: _distance(k, key))]
        d = cache[key] = EmpiricalDist(sp.quantiles_us)
        return d

    return model


def profile_bound(profile: DeviceProfile) -> Callable[[str, dict[str, int]], int]:
    """A slice's bound (the estimator's first prediction) from the profile: its
    largest measured duration, in ns."""
    model = profile_model(profile)
    return lambda op, shape: model((op, tuple(sorted(shape.items())))).max_ns


@dataclass(frozen=True, slots=True)
class CapacityBounds:
    """Cell counts from the profile alone, to check a simulated answer against.

    ``necessary``: the most cells whose mean radio demand fits the device (EDF's
    utilisation bound U <= 1; any more cells must miss in the long run).
    ``sufficient``: the most cells the density test with blocking admits with the
    measured worst case: ``n * C_max / T + B / D_min <= 1`` (non-preemptive EDF,
    George, Rivierre and Spuri, INRIA RR-2966, 1996: a busy period of deadline-``D``
    work can be blocked once by the largest slice ``B``); fewer cells never miss."""

    necessary: int
    sufficient: int
    utilisation_per_cell: float
    worst_density_per_cell: float
    blocking_us: float
    min_deadline_us: float


def capacity_bounds(
    profile: DeviceProfile,
    slot_us: float,
    min_deadline_us: float,
    max_ai_slice_us: float,
    max_cells: int,
) -> CapacityBounds:
    """The bounds of :class:`CapacityBounds` for cells like the profiled one (each cell
    a copy of the measured one, its work per slot drawn from ``slot_work_us``)."""
    work = EmpiricalDist([max(v, 1e-3) for v in profile.slot_work_us])
    u = work.mean_ns / 1000.0 / slot_us
    c_max = profile.slot_work_us[-1]
    b = max(max(s.quantiles_us[-1] for s in profile.slices), max_ai_slice_us)
    density = c_max / slot_us
    necessary = max_cells if u <= 0 else min(max_cells, int(1.0 / u + 1e-9))
    room = 1.0 - b / min_deadline_us
    sufficient = 0 if room <= 0 else min(max_cells, int(room / density + 1e-9))
    return CapacityBounds(
        necessary=necessary,
        sufficient=min(sufficient, necessary),
        utilisation_per_cell=u,
        worst_density_per_cell=density,
        blocking_us=b,
        min_deadline_us=min_deadline_us,
    )
