"""The fuzz target of the C deadline queue (native/fuzz_edfq.c), built and run through
``make -C native fuzz`` / ``fuzz-replay`` with a short budget.

Without clang the target is linked with native/fuzz_driver.c (gcc, ASan, UBSan,
coverage hooks); with clang it is libFuzzer. Three checks:

* the committed corpus (native/corpus/) replays with no report (the regressions);
* a fuzzing run of ``AIRAN_FUZZ_SECONDS`` (default 5) ends with no crash, no
  sanitizer report and no hang;
* the harness has teeth: built against mutants of edfq.c with a planted bug (LIFO
  ties, an unsaturated sum, a memmove one entry too long, the FULL/DUPLICATE_ID
  precedence swapped), the fuzzer, started from an empty corpus, finds each one and
  saves an input that reproduces it, and that input passes against the real queue.

``make -C native fuzz FUZZ_SECONDS=60`` is the documented long run (docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
CC = os.environ.get("CC", "cc")
SECONDS = int(os.environ.get("AIRAN_FUZZ_SECONDS", "5"))
ENV = {
    **os.environ,
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:abort_on_error=1",
}


def _toolchain_problem() -> str | None:
    """Why the fuzz target cannot be built here (``None``: it can)."""
    if shutil.which("make") is None:
        return "no `make` on PATH"
    if shutil.which(CC) is None:
        return f"no C compiler ({CC!r}) on PATH"
    probe = subprocess.run(
        [CC, "-x", "c", "-fsanitize=address,undefined", "-o", os.devnull, "-"],
        input=b"int main(void){return 0;}",
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"{CC} cannot link with -fsanitize=address,undefined"
    return None


_PROBLEM = _toolchain_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=f"fuzz target: {_PROBLEM}")


def make(
    target: str, build: Path, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(NATIVE), target, f"BUILD={build}", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout_s,
        check=False,
    )


def build_target(build: Path, *args: str) -> Path:
    """Build the fuzz target into ``build`` (``make fuzz-build``); its path."""
    r = make("fuzz-build", build, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file(), r.stdout
    return path


def test_the_corpus_replays_without_a_report(tmp_path: Path) -> None:
    corpus = sorted(p for p in (NATIVE / "corpus").iterdir() if p.is_file())
    assert len(corpus) >= 5
    r = make("fuzz-replay", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"replayed {len(corpus)} input(s), no crash" in r.stdout or "Executed" in r.stderr


def test_a_short_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    r = make("fuzz", tmp_path, f"FUZZ_SECONDS={SECONDS}", timeout_s=SECONDS + 300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out
    m = re.search(r"done: (\d+) runs in ([\d.]+) s .* corpus (\d+) inputs, (\d+) edges", out)
    if m is None:  # libFuzzer's own summary
        assert re.search(r"Done (\d+) runs in (\d+) second", out), out
        return
    runs, elapsed, corpus, edges = int(m[1]), float(m[2]), int(m[3]), int(m[4])
    assert elapsed >= SECONDS * 0.9
    assert runs > 100 * SECONDS  # thousands per second on any machine
    assert corpus >= 5 and edges > 100  # coverage feedback works: the seeds and more


MUTANTS = {
    # equal deadlines leave in LIFO order instead of FIFO
    "lifo_ties": (
        "if (q->e[mid].deadline_ns > deadline_ns)",
        "if (q->e[mid].deadline_ns >= deadline_ns)",
    ),
    # the demand sum is not saturated: signed overflow (UBSan)
    "unsaturated_sum": (
        "demand = sat_add(demand, x->cost_ns);",
        "demand = demand + x->cost_ns;",
    ),
    # remove() moves one entry too many: a read past the array (ASan)
    "memmove_too_long": (
        "((size_t)q->len - i - 1) * sizeof(edfq_entry_t));",
        "((size_t)q->len - i) * sizeof(edfq_entry_t));",
    ),
    # FULL reported before DUPLICATE_ID (edfq.h documents the opposite order)
    "full_before_duplicate": (
        "    if (find_id(q, id) >= 0)\n        return EDFQ_DUPLICATE_ID;\n"
        "    if (q->len >= q->cap)\n        return EDFQ_FULL;\n",
        "    if (q->len >= q->cap)\n        return EDFQ_FULL;\n"
        "    if (find_id(q, id) >= 0)\n        return EDFQ_DUPLICATE_ID;\n",
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_fuzzer_finds_a_planted_bug(tmp_path: Path, mutant: str) -> None:
    old, new = MUTANTS[mutant]
    source = (NATIVE / "edfq.c").read_text()
    assert source.count(old) == 1, f"the mutation point of {mutant} is gone from edfq.c"
    (tmp_path / "edfq.c").write_text(source.replace(old, new))
    build = tmp_path / "build"
    fuzz_bin = build_target(build, f"EDFQ_SRC={tmp_path / 'edfq.c'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(
        [str(fuzz_bin), str(empty), "-max_total_time=60", "-seed=7", f"-artifact_prefix={build}/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert r.returncode != 0, f"{mutant} survived 60 s of fuzzing:\n{r.stdout}{r.stderr}"
    crashes = list(build.glob("crash-*"))
    assert len(crashes) == 1, r.stderr
    # replays run in tmp_path: a crashing replay saves its input in the working directory
    again = subprocess.run(
        [str(fuzz_bin), str(crashes[0])],
        capture_output=True,
        env=ENV,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert again.returncode != 0  # the saved input reproduces the report
    good = build_target(tmp_path / "good")
    ok = subprocess.run(
        [str(good), str(crashes[0])],
        capture_output=True,
        env=ENV,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr  # ... and passes against the real queue
