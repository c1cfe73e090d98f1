"""The run report: one JSON contract for the CLI, benchmarks, tests and dashboards.

See ``shared/ARCHITECTURE.md`` ("The run report"). ``ai.harvest_ratio`` is AI busy
time over the time the radio left idle (wall time minus radio busy time);
``ran.deadline_met_ratio`` counts every radio task released during the run.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Reservoir:
    """A bounded, uniform sample of a stream of integers (Vitter's algorithm R), with the
    exact count and maximum: a node that runs for months keeps ``capacity`` samples
    (8 bytes each), not one per radio task.

    Up to ``capacity`` values the sample is the whole stream, so short runs get exact
    percentiles; beyond it every value has the same chance ``capacity / count`` to be in
    the sample. ``seed`` makes the sample reproducible."""

    __slots__ = ("_rng", "capacity", "count", "max", "values")

    def __init__(self, capacity: int = 1 << 20, seed: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.values = array("q")
        self.count = 0
        self.max: int | None = None
        self._rng = random.Random(seed)

    def add(self, x: int) -> None:
        self.count += 1
        if self.max is None or x > self.max:
            self.max = x
        if len(self.values) < self.capacity:
            self.values.append(x)
            return
        j = self._rng.randrange(self.count)
        if j < self.capacity:
            self.values[j] = x

    def __len__(self) -> int:
        return len(self.values)

    def array(self) -> np.ndarray:
        """The sample as an int64 array (a view: copy it before changing it)."""
        return np.frombuffer(self.values, dtype=np.int64) if self.values else np.zeros(0, np.int64)


class LatencyStats(BaseModel):
    """Percentiles of a latency sample, in microseconds."""

    model_config = ConfigDict(extra="forbid")

    p50: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    max: float = 0.0

    @classmethod
    def from_ns(cls, values_ns: Sequence[int] | np.ndarray | Reservoir) -> LatencyStats:
        """From samples in ns; a :class:`Reservoir` gives its exact maximum."""
        top = values_ns.max if isinstance(values_ns, Reservoir) else None
        a = _samples(values_ns)
        if a.size == 0:
            return cls()
        p50, p99, p999 = np.percentile(a, [50.0, 99.0, 99.9]) / 1000.0
        mx = float(a.max()) if top is None else float(top)
        return cls(p50=float(p50), p99=float(p99), p999=float(p999), max=mx / 1000.0)


def _samples(values_ns: Sequence[int] | np.ndarray | Reservoir) -> np.ndarray:
    if isinstance(values_ns, Reservoir):
        return values_ns.array().astype(np.float64)
    return np.asarray(values_ns, dtype=np.float64)


#: the probabilities at which ``ran.latency_cdf_us`` gives the radio latency: every
#: percent, then the 99.9th and 99.99th percentiles and the maximum
LATENCY_CDF_P: tuple[float, ...] = (*(i / 100 for i in range(100)), 0.999, 0.9999, 1.0)


def latency_cdf_us(values_ns: Sequence[int] | np.ndarray | Reservoir) -> list[float]:
    """The latency (µs) at each probability of :data:`LATENCY_CDF_P`; empty if no sample.
    From a :class:`Reservoir`, the last point is the exact maximum."""
    a = _samples(values_ns)
    if a.size == 0:
        return []
    q = np.quantile(a, LATENCY_CDF_P) / 1000.0
    if isinstance(values_ns, Reservoir) and values_ns.max is not None:
        q[-1] = values_ns.max / 1000.0
    return [round(float(v), 3) for v in q]


class Percentiles(BaseModel):
    """The median and the 99th percentile of a sample."""

    model_config = ConfigDict(extra="forbid")

    p50: float = 0.0
    p99: float = 0.0


class RanSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = 0
    misses: int = 0
    dropped: int = Field(0, description="Tasks abandoned because their deadline had passed.")
    deadline_met_ratio: float = 1.0
    busy_ratio: float = 0.0
    latency_us: LatencyStats = Field(
        default_factory=LatencyStats,
        description="Release to completion of the tasks that completed (dropped ones are "
        "counted in misses and dropped, not here).",
    )
    latency_cdf_us: list[float] = Field(
        default_factory=list,
        description="The same latency at each probability of LATENCY_CDF_P (every percent, "
        "p99.9, p99.99, max), µs: the distribution to plot.",
    )


class TenantUsage(BaseModel):
    """Metering of one AI tenant over a run (what the grid bills from)."""

    model_config = ConfigDict(extra="forbid")

    weight: float = 1.0
    slices: int = 0
    busy_us: float = Field(0.0, description="Device time used, µs.")
    tokens: int = 0
    throttled: int = Field(0, description="Decisions at which its quota held it back.")


class AiSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slices: int = 0
    busy_ratio: float = 0.0
    harvest_ratio: float = 0.0
    tokens: int = 0
    tokens_per_s: float = 0.0
    refused_oversize: int = Field(
        0, description="Decisions at which the next AI slice was predicted over the largest slice."
    )
    overruns: int = Field(0, description="AI slices that ran longer than prediction plus guard.")
    probes: int = Field(
        0, description="Refused slice kinds re-measured where no radio work could be delayed."
    )
    requests: int = Field(0, description="Inference requests completed.")
    ttft_ms: Percentiles = Field(
        default_factory=Percentiles,
        description="Time to first token of the completed requests, ms (p50, p99).",
    )
    failed_jobs: list[str] = Field(
        default_factory=list, description="AI jobs that failed (isolated; the radio went on)."
    )
    tenants: dict[str, TenantUsage] = Field(default_factory=dict)


class ArbiterSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decisions: int = 0
    decision_us: Percentiles = Field(default_factory=Percentiles)


class FaultSection(BaseModel):
    """Faults the arbiter detected, the misses blamed on them, and what was injected."""

    model_config = ConfigDict(extra="forbid")

    detected: dict[str, int] = Field(
        default_factory=dict, description="Faults detected, by kind (docs/reliability.md)."
    )
    misses_blamed: int = Field(
        0, description="Radio misses inside a busy period in which a fault was detected."
    )
    misses_unexplained: int = Field(0, description="Radio misses with no fault to blame.")
    shed_us: float = Field(0.0, description="Time AI was shed after faults, µs.")
    records: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The last detected faults (id, kind, t_us from the run start, detail, "
        "misses blamed on it).",
    )
    injected: list[dict[str, Any]] = Field(
        default_factory=list, description="Planned faults that were injected, when and on what."
    )


class RunReport(BaseModel):
    """What one run of the arbiter did. ``workload`` describes what was run."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    device: str
    policy: dict[str, Any]
    seed: int | None
    duration_s: float
    slots: int
    workload: dict[str, Any] = Field(default_factory=dict)
    wall_time_s: float = 0.0
    ran: RanSection = Field(default_factory=RanSection)
    ai: AiSection = Field(default_factory=AiSection)
    arbiter: ArbiterSection = Field(default_factory=ArbiterSection)
    faults: FaultSection = Field(default_factory=FaultSection)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
