"""Traces (Chrome / Perfetto JSON) and the benchmark figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.slices import AiJob
from airan.runner import simulate
from airan.sched.arbiter import Arbiter
from airan.sched.executors import SimExecutor
from airan.synthetic import SyntheticConfig, SyntheticWorkload
from airan.telemetry.trace import Recorder, load_trace, tracks, write_trace


def _run(policy: str, slots: int = 400, max_events: int = 1_000_000) -> tuple[Arbiter, Recorder]:
    wl = SyntheticWorkload(SyntheticConfig(radio_load=0.7, burst_load=0.95), seed=3)
    arb = Arbiter(SimExecutor(wl.profile(), seed=3), Policy(name=policy))  # type: ignore[arg-type]
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="llm"))
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="vision"))
    rec = Recorder(max_events, slot_ns=wl.slot_ns, label=policy)
    arb.recorder = rec
    arb.run(wl.radio_tasks(0, slots), slots * wl.slot_ns)
    return arb, rec


def test_the_trace_holds_every_slice_decision_and_miss(tmp_path: Path) -> None:
    arb, rec = _run("fifo")
    assert arb.misses > 0  # fifo misses on this load: the trace must show each one
    path = tmp_path / "t.json"
    n = write_trace(path, [rec], {"command": "test"})
    doc = json.loads(path.read_text())
    assert doc["otherData"]["command"] == "test"
    events = load_trace(path)
    assert len(events) == n
    names = tracks(events)
    # (fifo serves the first job with work: one tenant's track)
    assert {"slots", "radio", "arbiter decisions", "AI: llm"} <= set(names.values())
    radio = [e for e in events if e["ph"] == "X" and e["cat"] == "radio"]
    ai = [e for e in events if e["ph"] == "X" and e["cat"] == "ai"]
    misses = [e for e in events if e["ph"] == "i" and e["cat"] == "miss"]
    slices_run = sum(len(t) for t in [radio])  # every radio slice completed is in the trace
    assert slices_run == sum(1 for s in rec.slices() if s.stream == "radio")
    assert len(ai) == arb.ai_slices
    assert len(misses) == arb.misses
    # a miss's "late" is the completion past the deadline, and positive
    assert all(m["args"]["late_us"] > 0 for m in misses)
    # complete events: non-negative durations, on the track of their tenant
    tid = {v: k for k, v in names.items()}
    assert all(e["dur"] >= 0 for e in radio + ai)
    assert {(e["pid"], e["tid"]) for e in ai} == {tid["AI: llm"]}
    # fifo queues slices: each issue is a decision event
    decisions = [e for e in events if e.get("cat") == "decision"]
    assert len(decisions) == len(radio) + len(ai)
    # slot boundaries every slot across the recorded stretch
    slots = [e for e in events if e.get("cat") == "slot"]
    assert len(slots) >= 400


def test_airan_trace_shows_no_miss_and_admissions_within_slack() -> None:
    arb, rec = _run("airan")
    assert arb.misses == 0 and not rec.misses()
    events = list(rec.trace_events())
    # weighted fair between the two tenants: each has its track and its slices
    names = tracks(events)
    for tenant in ("AI: llm", "AI: vision"):
        tid = next(k for k, v in names.items() if v == tenant)
        assert sum(1 for e in events if e["ph"] == "X" and (e["pid"], e["tid"]) == tid) > 50
    admits = [e for e in events if e.get("cat") == "decision" and e["name"].startswith("AI")]
    assert admits
    for e in admits:  # every AI admission fitted the announced radio work's slack
        slack = e["args"]["radio_slack_us"]
        assert slack is None or e["args"]["budget_us"] <= slack


def test_the_ring_is_bounded_and_says_what_it_dropped(tmp_path: Path) -> None:
    _, rec = _run("airan", slots=600, max_events=1_000)
    assert len(rec._ring) == 1_000
    assert rec.dropped_events == rec.recorded - 1_000 > 0
    write_trace(tmp_path / "t.json", [rec])
    other = json.loads((tmp_path / "t.json").read_text())["otherData"]
    assert other["runs"][0]["dropped_events"] == rec.dropped_events


def test_policy_changes_are_marked() -> None:
    wl = SyntheticWorkload(None, seed=1)
    arb = Arbiter(SimExecutor(wl.profile(), seed=1), Policy())
    rec = Recorder(10_000, slot_ns=wl.slot_ns)
    arb.recorder = rec
    tasks = wl.radio_tasks(0, 50)

    def source():  # type: ignore[no-untyped-def]
        for i, t in enumerate(tasks):
            if i == 20:
                arb.request_policy(Policy(max_ai_slice_us=150.0))
                arb.request_policy(Policy(name="fifo"))  # refused while running
            yield t

    arb.run(source(), 50 * wl.slot_ns)
    marks = [e for e in rec.trace_events() if e.get("cat") == "control"]
    assert [m["name"] for m in marks] == ["policy applied", "policy refused"]
    assert marks[0]["args"]["max_ai_slice_us"] == 150.0
    assert marks[1]["args"]["field"] == "policy.name"


def test_recorder_and_writer_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="max_events"):
        Recorder(10)
    with pytest.raises(FieldError, match="slot_ns"):
        Recorder(slot_ns=0)
    with pytest.raises(FieldError, match="recorders"):
        write_trace(tmp_path / "x.json", [])
    (tmp_path / "bad.json").write_text('{"nope": 1}')
    with pytest.raises(FieldError, match="traceEvents"):
        load_trace(tmp_path / "bad.json")


def test_simulate_records_into_a_recorder() -> None:
    rec = Recorder(100_000)
    rep = simulate(200, Policy(), 1, None, recorder=rec)
    assert rec.slot_ns == 500_000 and rec.policy == "airan"
    assert sum(1 for s in rec.slices() if s.stream == "ai") == rep.ai.slices
    assert len(rep.ran.latency_cdf_us) == 103
    cdf = rep.ran.latency_cdf_us
    assert cdf == sorted(cdf) and cdf[-1] == pytest.approx(rep.ran.latency_us.max, rel=1e-3)


def test_bench_figure_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from airan.telemetry.plots import bench_figure, miss_window, timeline

    runs = [_run(p) for p in ("exclusive", "fifo", "airan")]
    recs = [r for _, r in runs]
    start = miss_window(recs, 6)
    tls = [timeline(r, start, 6 * 500.0) for r in recs]
    fifo = tls[1]
    assert fifo.misses and fifo.radio and fifo.ai  # the window shows fifo's misses
    assert all(s >= 0 and s + d <= 3000.0 + 1e-6 for s, d, _ in fifo.radio + fifo.ai)
    reports = [a.report(seed=3, slots=400) for a, _ in runs]
    out = tmp_path / "bench.png"
    bench_figure(reports, tls, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000
