"""Every example runs, at a small size, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    """Run ``examples/name`` as a user would; its output, after checking it succeeded."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["share_a_device.py", "--sim", "--seconds", "2"],
        ["share_a_device.py", "--seconds", "0.3"],
        ["share_a_device.py", "--sim", "--seconds", "1", "--policy", "fifo"],
        ["bring_your_own_model.py", "--sim", "--seconds", "1"],
        ["bring_your_own_model.py", "--seconds", "0.3"],
    ],
)
def test_example_runs(argv: list[str]) -> None:
    out = run_example(argv[0], *argv[1:])
    assert "radio tasks" in out and "tokens" in out


def test_example_sim_shares_the_device_without_misses() -> None:
    out = run_example("share_a_device.py", "--sim", "--seconds", "5")
    assert ", 0 missed" in out
    tokens = int(out.split(" tokens")[0].rsplit(" ", 1)[-1])
    assert tokens > 0


def test_bring_your_own_model_shares_follow_the_tenant_weights() -> None:
    out = run_example("bring_your_own_model.py", "--sim", "--seconds", "2")
    assert ", 0 missed" in out
    ms = {
        line.split(":")[0].strip(): float(line.split(", ")[1].split(" ms")[0])
        for line in out.splitlines()
        if line.startswith("  team-")
    }
    assert ms["team-a"] / ms["team-b"] == pytest.approx(2.0, rel=0.05)


def test_trace_and_plot_example_writes_a_trace_and_shows_fifo_missing(tmp_path: Path) -> None:
    out = run_example("trace_and_plot.py", "--slots", "300", "--out", str(tmp_path))
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("fifo", "airan"))}
    assert "misses 0," in lines["airan"] and "misses 0," not in lines["fifo"]
    assert (tmp_path / "trace.json").stat().st_size > 10_000


def test_capacity_plan_example_checks_its_answer_against_the_bounds() -> None:
    out = run_example("capacity_plan.py", "--slots", "1000", "--max-cells", "3")
    assert "fit: " in out and "holds" in out


def test_fault_injection_example_raises_each_alarm_and_blames_every_miss() -> None:
    out = run_example("fault_injection.py", "--seconds", "2.5")
    assert "alarms raised: aiFault" in out
    for alarm in ("radioFault", "aiFault", "executorFault", "l2Silence"):
        assert f"O1 alarm {alarm}" in out
    assert "unexplained: 0" in out
    assert "detected: {'radio_overrun': 1, 'ai_hang': 1, 'executor_error': 1}" in out


def test_every_example_is_run_by_a_test() -> None:
    """Every file in examples/ is run by some test of this suite (item: docs and
    examples are part of the feature)."""
    tests = Path(__file__).resolve().parent
    text = "\n".join(p.read_text() for p in tests.glob("test_*.py"))
    missing = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.name}"' not in text]
    assert not missing, f"examples without a test: {missing}"
