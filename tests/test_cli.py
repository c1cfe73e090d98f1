"""The ``airan`` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airan.cli import main


def _strip_timing(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("wall_time_s")
    doc["arbiter"] = {"decisions": doc["arbiter"]["decisions"]}
    return doc


def test_simulate_writes_the_report_and_same_seed_same_run(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert main(["simulate", "--slots", "3000", "--seed", "7", "--json", str(a)]) == 0
    assert main(["simulate", "--slots", "3000", "--seed", "7", "--json", str(b)]) == 0
    assert main(["simulate", "--slots", "3000", "--seed", "8", "--json", str(c)]) == 0
    ra, rb, rc = (json.loads(p.read_text()) for p in (a, b, c))
    assert _strip_timing(ra) == _strip_timing(rb)
    assert _strip_timing(ra) != _strip_timing(rc)
    assert ra["backend"] == "sim" and ra["slots"] == 3000 and ra["seed"] == 7
    assert ra["ran"]["tasks"] == 6000 and ra["ran"]["misses"] == 0
    assert ra["workload"]["synthetic"] is True


def test_simulate_policy_and_load_flags(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["simulate", "--slots", "2000", "--policy", "exclusive", "--radio-load", "0.3"]
    assert main([*argv, "--burst-load", "0.5", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["policy"]["name"] == "exclusive"
    assert doc["ai"]["slices"] == 0
    assert 0.25 < doc["ran"]["busy_ratio"] < 0.35


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "--bogus"], "unrecognized arguments: --bogus"),
        (["simulate", "--slots", "0"], "--slots must be >= 1"),
        (["simulate", "--slots", "ten"], "--slots must be a int"),
        (["simulate", "--policy", "greedy"], "--policy: invalid choice: 'greedy'"),
        (["simulate", "--guard-us", "-3"], "policy.guard_us"),
        (["simulate", "--ai-share-cap", "2"], "policy.ai_share_cap"),
        (["simulate", "--radio-load", "1.5"], "workload.radio_load"),
        (["simulate", "--radio-load", "0.95", "--burst-load", "0.9"], "burst_load"),
        (["demo", "--seconds", "-1"], "--seconds"),
        (["simulate", "--slots", "10", "--json", "/"], "--json: / is a directory"),
        (["demo", "--json", "/no/such/folder/r.json"], "--json: the folder /no/such/folder"),
        (["simulate", "--ai-share-cap", "0.001"], "share_window_us"),
        (["demo", "--backend", "tpu"], "--backend: invalid choice"),
    ],
)
def test_bad_cli_input_is_a_clear_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_demo_runs_on_the_cpu_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airan",
            "demo",
            "--seconds",
            "1",
            "--backend",
            "numpy",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "radio workload: DU" in proc.stdout  # the DU is the default workload
    doc = json.loads(out.read_text())
    assert doc["backend"] == "numpy"
    assert doc["ran"]["tasks"] > 0
    assert doc["ai"]["slices"] > 0 and doc["ai"]["tokens"] > 0
    assert doc["workload"]["workload"] == "du" and doc["workload"]["synthetic"] is False
    assert doc["workload"]["ran"]["numerology"] == 0  # the CPU's default cell
    assert doc["workload"]["l1_crc_total"] > 0  # the real L1 decoded uplink slots
    fapi = doc["workload"]["fapi"]["l1-cell0"]  # the MAC ran in its own process
    assert fapi["received"]["UL_TTI.request"] > 0 and fapi["received"]["DL_TTI.request"] > 0
    assert fapi["sent"]["CRC.indication"] > 0


def test_demo_runs_the_synthetic_workload_on_request(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "airan", "demo", "--seconds", "1", "--backend", "numpy",
         "--workload", "synthetic", "--ai", "synthetic", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout
    assert json.loads(out.read_text())["workload"]["synthetic"] is True


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--bandwidth-mhz", "7"], "ran.bandwidth_mhz"),
        (["--layers", "4", "--antennas", "2"], "ran"),
        (["--numerology", "5"], "ran.numerology"),
        (["--workload", "synthetic", "--ues", "4"], "--ues"),
    ],
)
def test_demo_refuses_a_bad_cell_before_starting(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--seconds", "1", "--backend", "numpy", *argv]) == 2
    err = capsys.readouterr().err
    assert field in err, err
