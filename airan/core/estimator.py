"""Online high-quantile prediction of slice durations, per (op, shape).

Admission must use a high quantile of a slice's duration, not its mean: execution
times on a shared device vary and are heavy-tailed. For each slice key the estimator
keeps a histogram of observed durations in logarithmic buckets (2 % wide), so an
observation costs O(1) and the quantile is read off the histogram. The prediction is
the upper edge of the bucket holding the ``quantile`` (p99.9 by default), times
``1 + margin``. Until ``min_samples`` durations have been seen for a key, the slice's
declared bound (:attr:`Slice.bound_ns`) is used instead.

A kind whose prediction exceeds the largest AI slice is refused and so gets no new
samples; after ``relearn_after`` refusals in a row it is due for a probe
(:meth:`refused`), and a probe that fits makes the arbiter :meth:`forget` it.

Old behaviour is forgotten gradually: every ``half_life`` observations of a key, its
(fractional) counts are halved, so the estimate follows a device whose speed drifts
(clock throttling, a neighbour's load) while the sparse tail buckets that hold the
p99.9 keep their weight relative to the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from airan.core.errors import FieldError
from airan.core.slices import Slice, SliceKey

_RATIO = 1.02
_LOG_RATIO = math.log(_RATIO)
_INV_LOG_RATIO = 1.0 / _LOG_RATIO
_NBUCKETS = 1400  # 1.02**1400 ns ~ 1e12 ns: covers durations up to ~17 minutes


def _upper_edge(bucket: int) -> int:
    return math.ceil(_RATIO**bucket)


class _KeyStats:
    __slots__ = (
        "count",
        "counts",
        "hi",
        "lo",
        "max1",
        "max2",
        "next_halving",
        "prediction",
        "refusals",
        "since_refresh",
        "total",
    )

    def __init__(self, bound_ns: int, half_life: int) -> None:
        self.counts = [0.0] * _NBUCKETS
        self.next_halving = half_life
        self.count = 0.0  # weighted count (halved with the buckets)
        self.total = 0  # every observation ever
        self.lo = _NBUCKETS
        self.hi = -1
        self.prediction = bound_ns
        self.since_refresh = 0
        self.refusals = 0  # refused in a row since the last observation
        self.max1 = 0  # the two largest durations seen while warming up
        self.max2 = 0


@dataclass(frozen=True, slots=True)
class KeySummary:
    """What the estimator knows about one slice key."""

    key: SliceKey
    samples: int
    prediction_ns: int
    warmed_up: bool


class Estimator:
    """Per (op, shape) online high-quantile predictor of slice durations."""

    def __init__(
        self,
        quantile: float = 0.999,
        margin: float = 0.05,
        min_samples: int = 1000,
        half_life: int = 20_000,
        refresh_every: int = 32,
        relearn_after: int = 2_000,
    ) -> None:
        if not 0.5 <= quantile < 1.0:
            raise FieldError("Estimator.quantile", f"must be in [0.5, 1), got {quantile!r}")
        if not 0.0 <= margin <= 10.0:
            raise FieldError("Estimator.margin", f"must be in [0, 10], got {margin!r}")
        if min_samples < 1:
            raise FieldError("Estimator.min_samples", f"must be >= 1, got {min_samples!r}")
        if half_life < 2 * min_samples:
            raise FieldError(
                "Estimator.half_life",
                f"must be >= 2 x min_samples ({2 * min_samples}), got {half_life!r}",
            )
        if refresh_every < 1:
            raise FieldError("Estimator.refresh_every", f"must be >= 1, got {refresh_every!r}")
        if relearn_after < 1:
            raise FieldError("Estimator.relearn_after", f"must be >= 1, got {relearn_after!r}")
        self.relearn_after = relearn_after
        self.quantile = quantile
        self.margin = margin
        self.min_samples = min_samples
        self.half_life = half_life
        self.refresh_every = refresh_every
        self._stats: dict[SliceKey, _KeyStats] = {}

    def predict(self, s: Slice) -> int:
        """Predicted high-quantile duration of ``s`` in ns (its bound until warmed up)."""
        st = self._stats.get(s.key)
        return s.bound_ns if st is None else st.prediction

    def observe(self, s: Slice, duration_ns: int) -> None:
        """Record that ``s`` ran for ``duration_ns``."""
        if isinstance(duration_ns, bool) or not isinstance(duration_ns, int):
            raise FieldError("duration_ns", f"must be an integer, got {duration_ns!r}")
        if duration_ns < 0:
            raise FieldError("duration_ns", f"must be >= 0, got {duration_ns}")
        self.record(s, duration_ns)

    def record(self, s: Slice, duration_ns: int) -> None:
        """:meth:`observe` without argument checks, for executors' own (trusted) timings."""
        st = self._stats.get(s.key)
        if st is None:
            st = self._stats[s.key] = _KeyStats(s.bound_ns, self.half_life)
        st.refusals = 0
        if duration_ns > 1:
            b = int(math.log(duration_ns) * _INV_LOG_RATIO) + 1
            if b >= _NBUCKETS:
                b = _NBUCKETS - 1
        else:
            b = 0
        st.counts[b] += 1
        st.count += 1
        st.total += 1
        if b < st.lo:
            st.lo = b
        if b > st.hi:
            st.hi = b
        if st.total >= st.next_halving:
            st.next_halving += self.half_life
            st.counts = [c * 0.5 for c in st.counts]
            st.count *= 0.5
        if st.total >= self.min_samples:
            st.since_refresh += 1
            if st.since_refresh >= self.refresh_every or st.total == self.min_samples:
                st.since_refresh = 0
                st.prediction = self._quantile_edge(st)
        else:
            # Warming up: the declared bound, but never below the second-largest duration
            # seen (one outlier, such as a cold first call, is forgiven).
            if duration_ns > st.max1:
                st.max1, duration_ns = duration_ns, st.max1
            if duration_ns > st.max2:
                st.max2 = duration_ns
                seen = math.ceil(duration_ns * (1.0 + self.margin))
                if seen > st.prediction:
                    st.prediction = seen

    def refused(self, s: Slice) -> bool:
        """The arbiter refused ``s`` (predicted over the largest slice). Returns ``True``
        once the kind has been refused ``relearn_after`` times in a row: it is due for a
        probe. A refused kind gets no new samples, so without probes one slow spell would
        bar it for good; the arbiter runs a probe only where it cannot delay radio work."""
        st = self._stats.get(s.key)
        if st is None:
            return False
        st.refusals += 1
        return st.refusals >= self.relearn_after

    def forget(self, s: Slice) -> None:
        """Drop what was learned of ``s``'s kind: it is learned again from its declared
        bound (after a probe showed that the kind fits again)."""
        self._stats.pop(s.key, None)

    def _quantile_edge(self, st: _KeyStats) -> int:
        # Walk down from the top bucket until more than (1 - q) of the mass is above.
        tail = (1.0 - self.quantile) * st.count
        above = 0.0
        counts = st.counts
        b = st.hi
        while b > st.lo:
            above += counts[b]
            if above > tail:
                break
            b -= 1
        return math.ceil(_upper_edge(b) * (1.0 + self.margin))

    def summary(self) -> list[KeySummary]:
        """One line per key seen, for reports and debugging."""
        return [
            KeySummary(k, st.total, st.prediction, st.total >= self.min_samples)
            for k, st in sorted(self._stats.items(), key=lambda kv: repr(kv[0]))
        ]
