"""LDPC decoder timings (TS 38.212 §5.3.2): per iteration and per transport block.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ldpc.py [--repeats 15]
    git show <rev>:airan/ran/phy/ldpc.py > /tmp/ldpc_old.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ldpc.py --baseline /tmp/ldpc_old.py

Per-iteration cases decode noise (no early stop) for a fixed number of iterations; the
rate-matched ones send only the first E = K / R bits of the punctured output (RV 0, no
filler), so the decoder runs the rows that E reaches. Transport blocks go through
``encode_tb`` -> BPSK over AWGN (Es/N0 per coded bit) -> ``decode_tb`` at an SNR near
the waterfall, at a high SNR (early termination) and on noise (no early stop).

Times are medians over ``--repeats`` of the CPU time of this thread (``time.thread_time``,
steadier than wall time on a shared machine; with one BLAS thread the two agree on an
idle one). With ``--baseline`` another ``ldpc.py`` (for example the previous revision)
runs the same inputs, interleaved with this one, and the table gains its times and the
speed-up; both must give the same iterations.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import numpy.typing as npt

from airan.ran.phy import coding, ldpc


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ldpc_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ldpc_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _medians_ms(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median CPU milliseconds of each of ``fns``, run interleaved."""
    for fn in fns:
        fn()  # warm the caches
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.thread_time()
            fn()
            ts.append(time.thread_time() - t0)
    return [1e3 * float(np.median(ts)) for ts in times]


def _awgn_llr(
    bits: npt.NDArray[np.uint8], es_n0_db: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    sigma2 = 1.0 / (2.0 * 10.0 ** (es_n0_db / 10.0))
    y = 1.0 - 2.0 * bits + np.sqrt(sigma2) * rng.standard_normal(bits.shape)
    out: npt.NDArray[np.float32] = (2.0 * y / sigma2).astype(np.float32)
    return out


def _decode_tb(module: ModuleType, llr: npt.NDArray[np.float32], plan: coding.TbPlan) -> int:
    """``decode_tb`` with ``module`` as its LDPC decoder; returns the iterations."""
    namespace = vars(coding)
    saved = namespace["ldpc"]
    namespace["ldpc"] = module
    try:
        return coding.decode_tb(llr, plan).iterations
    finally:
        namespace["ldpc"] = saved


def per_iteration(modules: list[ModuleType], repeats: int, iterations: int = 8) -> list[str]:
    rng = np.random.default_rng(0)
    lines = []
    cases = [  # name, bg, zc, code blocks, code rate (None: every bit sent)
        ("BG1 Zc=384, 1 CB, all rows", 1, 384, 1, None),
        ("BG1 Zc=384, 1 CB, R=0.5", 1, 384, 1, 0.5),
        ("BG1 Zc=384, 1 CB, R=0.75", 1, 384, 1, 0.75),
        ("BG1 Zc=384, 5 CB, all rows", 1, 384, 5, None),
        ("BG2 Zc=384, 1 CB, all rows", 2, 384, 1, None),
        ("BG2 Zc=104, 1 CB, all rows", 2, 104, 1, None),
        ("BG2 Zc=16, 150 CB, all rows", 2, 16, 150, None),
    ]
    for name, bg, zc, batch, rate in cases:
        k, n = ldpc.code_dims(bg, zc)
        llr = rng.standard_normal((batch, n)).astype(np.float32)
        layers = ldpc.BG_DIMS[bg][0]
        if rate is not None:
            llr[:, round(k / rate) :] = 0.0
            last = (round(k / rate) - 1) // zc + 2  # block of the last bit sent, of 68/52
            layers = max(4, last - ldpc.BG_DIMS[bg][2] + 1)

        def run(
            module: ModuleType, llr: npt.NDArray[np.float32] = llr, bg: int = bg, zc: int = zc
        ) -> None:
            res = module.decode(llr, bg, zc, max_iterations=iterations)
            assert res.iterations == iterations

        ms = _medians_ms([functools.partial(run, m) for m in modules], repeats)
        lines.append(_row([name, str(layers)], [t / iterations for t in ms], 3))
    return lines


def transport_blocks(modules: list[ModuleType], repeats: int) -> list[str]:
    rng = np.random.default_rng(1)
    lines = []
    cases = [  # tbs, rate, qm, g_bits, near-threshold Es/N0, high Es/N0
        (1000, 0.5, 2, 2400, -2.0, 3.0),
        (8456, 0.75, 4, 12000, 1.5, 5.0),
        (42016, 0.75, 6, 57600, 1.5, 5.0),
    ]
    for tbs, rate, qm, g_bits, low, high in cases:
        plan = coding.plan_tb(tbs, rate, qm, 1, g_bits)
        bits = rng.integers(0, 2, tbs, dtype=np.uint8)
        g = coding.encode_tb(bits, plan)
        name = f"{tbs}, G {g_bits}: BG{plan.base_graph}, C={plan.c}, Zc={plan.zc}"
        inputs = [(f"{low:+.1f} dB", _awgn_llr(g, low, rng))]
        inputs.append((f"{high:+.1f} dB", _awgn_llr(g, high, rng)))
        inputs.append(("noise", rng.standard_normal(g_bits).astype(np.float32)))
        for label, llr in inputs:
            its = {_decode_tb(m, llr, plan) for m in modules}
            assert len(its) == 1, f"the decoders disagree on the iterations: {its}"
            ok = coding.decode_tb(llr, plan).tb_crc_ok
            runs = [functools.partial(_decode_tb, m, llr, plan) for m in modules]
            ms = _medians_ms(runs, repeats)
            cells = [name, label, str(its.pop()), "ok" if ok else "fail"]
            lines.append(_row(cells, ms, 2))
    return lines


def _row(cells: list[str], ms: list[float], digits: int) -> str:
    times = [f"{t:.{digits}f}" for t in ms[::-1]]  # baseline first, then this tree
    if len(ms) == 2:
        times.append(f"{ms[1] / ms[0]:.1f}x")
    return "| " + " | ".join(cells + times) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline", help="another ldpc.py to time against this one")
    args = parser.parse_args()
    modules: list[ModuleType] = [ldpc]
    head = "ms"
    if args.baseline:
        modules.append(_load(args.baseline))
        head = "baseline ms | ms | speed-up"
    sep = " --- |" * (head.count("|") + 1)
    print(f"| code | layers | {head} / iteration |\n| --- | --- |{sep}")
    print("\n".join(per_iteration(modules, args.repeats)))
    print(f"\n| TBS | Es/N0 | iterations | TB CRC | {head} / decode_tb |")
    print(f"| --- | --- | --- | --- |{sep}")
    print("\n".join(transport_blocks(modules, args.repeats)))


if __name__ == "__main__":
    main()
