"""The benchmark figure: policies side by side, from run reports and recorded timelines.

Needs matplotlib (the ``plot`` extra: ``pip install -e ".[plot]"``); everything else in
airan works without it. :func:`require_matplotlib` says so before a run starts.

The figure (:func:`bench_figure`) has three parts:

1. per policy, the radio's deadline-met ratio and AI's harvest ratio (the share of the
   radio's idle time AI used), with the miss counts written on the bars;
2. per policy, the radio latency CDF (release to completion, log scale, the tail
   magnified), from the reports' ``ran.latency_cdf_us``;
3. per policy, a timeline of the same stretch of device time: radio slices, AI slices
   per tenant, slot boundaries, the deadlines of the radio tasks in view and the misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airan.core.errors import FieldError
from airan.core.report import LATENCY_CDF_P, RunReport
from airan.telemetry.trace import Recorder


def require_matplotlib(flag: str = "--plot") -> None:
    """Raise :class:`FieldError` on ``flag`` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FieldError(
            flag, 'needs matplotlib: install the plot extra, pip install -e ".[plot]"'
        ) from None


@dataclass(slots=True)
class Timeline:
    """A stretch of one run's device time, in µs from the stretch's start."""

    policy: str
    t0_us: float = 0.0
    length_us: float = 0.0
    slot_us: float = 0.0
    first_slot_us: float = 0.0  # where a slot starts, relative to the stretch
    radio: list[tuple[float, float, str]] = field(default_factory=list)  # start, dur, op
    ai: list[tuple[float, float, str]] = field(default_factory=list)  # start, dur, tenant
    deadlines: list[float] = field(default_factory=list)
    misses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "t0_us": self.t0_us,
            "length_us": self.length_us,
            "slot_us": self.slot_us,
            "first_slot_us": self.first_slot_us,
            "radio": self.radio,
            "ai": self.ai,
            "deadlines": self.deadlines,
            "misses": self.misses,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        return cls(
            policy=d["policy"],
            t0_us=d["t0_us"],
            length_us=d["length_us"],
            slot_us=d["slot_us"],
            first_slot_us=d["first_slot_us"],
            radio=[(float(a), float(b), str(c)) for a, b, c in d["radio"]],
            ai=[(float(a), float(b), str(c)) for a, b, c in d["ai"]],
            deadlines=list(d["deadlines"]),
            misses=list(d["misses"]),
        )


def timeline(rec: Recorder, start_us: float, length_us: float) -> Timeline:
    """The slices, deadlines and misses of ``rec`` between ``start_us`` and
    ``start_us + length_us`` after the run's start (slices cut at the edges)."""
    t0 = rec.t0_ns + int(start_us * 1000)
    t1 = t0 + int(length_us * 1000)
    out = Timeline(policy=rec.policy, t0_us=start_us, length_us=length_us)
    if rec.slot_ns:
        out.slot_us = rec.slot_ns / 1000.0
        first = rec.first_slot_ns if rec.first_slot_ns is not None else rec.t0_ns
        out.first_slot_us = ((first - t0) % rec.slot_ns) / 1000.0
    deadlines: set[int] = set()
    for s in rec.slices():
        if s.end_ns <= t0 or s.start_ns >= t1:
            continue
        a, b = max(s.start_ns, t0), min(s.end_ns, t1)
        item = ((a - t0) / 1000.0, (b - a) / 1000.0)
        if s.stream == "radio":
            out.radio.append((*item, f"{s.tenant}.{s.op}"))
            if t0 <= s.deadline_ns <= t1:
                deadlines.add(s.deadline_ns)
        else:
            out.ai.append((*item, s.tenant))
    out.deadlines = sorted((d - t0) / 1000.0 for d in deadlines)
    out.misses = [(m.t_ns - t0) / 1000.0 for m in rec.misses() if t0 <= m.t_ns <= t1]
    return out


def miss_window(recorders: Sequence[Recorder], slots: int = 8) -> float:
    """Where to look (µs from the start): a stretch of ``slots`` slots around the first
    miss of any run in the middle half of the runs (where the policies differ), else
    the middle of the runs."""
    rec = recorders[0]
    slot_us = (rec.slot_ns or 1_000_000) / 1000.0
    spans = [(r.t0_ns, max((s.end_ns for s in r.slices()), default=r.t0_ns)) for r in recorders]
    length = min(b - a for a, b in spans) / 1000.0
    lo, hi = length * 0.25, length * 0.75
    firsts = []
    for r in recorders:
        for m in r.misses():
            t = (m.t_ns - r.t0_ns) / 1000.0
            if lo <= t <= hi:
                firsts.append(t)
                break
    centre = min(firsts) if firsts else length / 2
    return max(0.0, centre - slots * slot_us / 2)


_RADIO_COLOR = "#1f77b4"
_AI_COLORS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_POLICY_COLORS = {"exclusive": "#7f7f7f", "fifo": "#d62728", "tdm": "#9467bd", "airan": "#2ca02c"}


def bench_figure(
    reports: Sequence[RunReport],
    timelines: Sequence[Timeline],
    path: Path | str,
    title: str = "",
) -> None:
    """Write the benchmark figure (PNG) for ``reports`` (one per policy)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = [r.policy["name"] for r in reports]
    n_tl = len(timelines)
    fig = plt.figure(figsize=(14, 5.0 + 1.3 * max(n_tl, 1)), dpi=110)
    grid = fig.add_gridspec(2, 2, height_ratios=[4.0, 1.3 * max(n_tl, 1)], hspace=0.35)

    # 1. deadline-met and harvest ratios
    ax = fig.add_subplot(grid[0, 0])
    x = range(len(reports))
    w = 0.38
    met = [r.ran.deadline_met_ratio for r in reports]
    harvest = [r.ai.harvest_ratio for r in reports]
    left = [i - w / 2 for i in x]
    right = [i + w / 2 for i in x]
    b1 = ax.bar(left, met, w, label="radio deadline-met ratio", color=_RADIO_COLOR)
    ax.bar(right, harvest, w, label="AI harvest ratio (of radio idle time)", color=_AI_COLORS[0])
    for bar, r in zip(b1, reports, strict=True):
        ax.annotate(
            f"{r.ran.misses} miss" + ("" if r.ran.misses == 1 else "es"),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="#d62728" if r.ran.misses else "black",
        )
    ax.set_xticks(list(x), names)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("ratio")
    ax.set_title("Radio deadlines met and AI harvest, per policy")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)

    # 2. latency CDF
    ax = fig.add_subplot(grid[0, 1])
    for r, name in zip(reports, names, strict=True):
        cdf = r.ran.latency_cdf_us
        if not cdf:
            continue
        ax.plot(
            [max(v, 1.0) for v in cdf],
            LATENCY_CDF_P[: len(cdf)],
            label=name,
            color=_POLICY_COLORS.get(name),
            drawstyle="steps-post",
        )
    ax.set_xscale("log")
    ax.set_xlabel("radio latency, release to completion (µs, log scale)")
    ax.set_ylabel("fraction of radio tasks")
    ax.set_ylim(0, 1.01)
    ax.set_title("Radio latency CDF")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")

    # 3. timelines
    if timelines:
        ax = fig.add_subplot(grid[1, :])
        tenants: list[str] = []
        for tl in timelines:
            for _, _, t in tl.ai:
                if t not in tenants:
                    tenants.append(t)
        length = max(tl.length_us for tl in timelines) / 1000.0
        for row, tl in enumerate(reversed(timelines)):
            y = row * 1.0
            ax.broken_barh(
                [(s / 1000.0, d / 1000.0) for s, d, _ in tl.radio],
                (y + 0.5, 0.35),
                facecolors=_RADIO_COLOR,
                edgecolor="white",
                linewidth=0.3,
            )
            for ti, tenant in enumerate(tenants):
                ax.broken_barh(
                    [(s / 1000.0, d / 1000.0) for s, d, t in tl.ai if t == tenant],
                    (y + 0.1, 0.35),
                    facecolors=_AI_COLORS[ti % len(_AI_COLORS)],
                    edgecolor="white",
                    linewidth=0.3,
                )
            if tl.slot_us:
                edge = tl.first_slot_us
                while edge <= tl.length_us:
                    ax.vlines(edge / 1000.0, y + 0.02, y + 0.98, colors="#555555", lw=0.6, ls=":")
                    edge += tl.slot_us
            ax.plot(
                [d / 1000.0 for d in tl.deadlines],
                [y + 0.93] * len(tl.deadlines),
                "v",
                color="black",
                ms=4,
            )
            ax.plot(
                [m / 1000.0 for m in tl.misses],
                [y + 0.68] * len(tl.misses),
                "x",
                color="#d62728",
                ms=9,
                mew=2,
            )
        ax.set_yticks([i + 0.5 for i in range(n_tl)], [tl.policy for tl in reversed(timelines)])
        ax.set_xlim(0, length)
        ax.set_ylim(0, n_tl)
        t0 = timelines[0].t0_us / 1000.0
        ax.set_xlabel(f"device time (ms from {t0:.1f} ms into each run)")
        ax.set_title("The same stretch of device time under each policy")
        handles = [
            Patch(color=_RADIO_COLOR, label="radio slice"),
            *[
                Patch(color=_AI_COLORS[i % len(_AI_COLORS)], label=f"AI slice ({t})")
                for i, t in enumerate(tenants)
            ],
            Line2D([], [], color="#555555", ls=":", label="slot boundary"),
            Line2D([], [], marker="v", color="black", ls="", label="radio deadline"),
            Line2D([], [], marker="x", color="#d62728", ls="", mew=2, label="deadline miss"),
        ]
        ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=6, fontsize=8
        )
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
