"""``airan bench`` and ``--trace`` end to end: real runs on this CPU, small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airan.cli import main
from airan.core.report import RunReport
from airan.telemetry.trace import load_trace, tracks


def test_bench_runs_the_four_policies_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out, png, trace = tmp_path / "bench.json", tmp_path / "bench.png", tmp_path / "t.json"
    rc = main(
        ["bench", "--seconds", "0.6", "--backend", "numpy", "--ai", "synthetic", "--seed", "4",
         "--json", str(out), "--plot", str(png), "--trace", str(trace)]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("exclusive", "fifo", "tdm", "airan"):
        assert name in text
    doc = json.loads(out.read_text())
    runs = [RunReport.model_validate(r) for r in doc["runs"]]
    assert [r.policy["name"] for r in runs] == ["exclusive", "fifo", "tdm", "airan"]
    assert {r.seed for r in runs} == {4}
    assert len({json.dumps(r.workload["kind"]) for r in runs}) == 1  # the same workload
    assert all(r.ran.tasks > 0 and r.ran.latency_cdf_us for r in runs)
    assert runs[0].ai.slices == 0 and runs[3].ai.slices > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    events = load_trace(trace)
    procs = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert len(procs) == 4 and any("airan" in p for p in procs)
    assert "radio" in tracks(events).values()


def test_bench_refuses_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "--policies", "airan,nope"])
    assert e.value.code == 2
    assert "--policies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--policies", "airan,airan"])
    assert main(["bench", "--plot", str(tmp_path)]) == 2
    assert "--plot" in capsys.readouterr().err
    assert main(["bench", "--workload", "synthetic", "--antennas", "2"]) == 2
    assert "--antennas" in capsys.readouterr().err
    assert main(["bench", "--seconds", "0"]) == 2
    assert main(["bench", "--trace", str(tmp_path / "no" / "t.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_writes_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "demo.json"
    rc = main(
        ["demo", "--seconds", "0.5", "--backend", "numpy", "--workload", "synthetic", "--ai",
         "synthetic", "--trace", str(trace)]
    )  # fmt: skip
    assert rc == 0
    events = load_trace(trace)
    assert any(e.get("cat") == "radio" for e in events)
    assert any(e.get("cat") == "ai" for e in events)
