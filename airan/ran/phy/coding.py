"""Transport-block channel coding of PDSCH/PUSCH (TS 38.212 §7.2 / §6.2), NumPy or CuPy.

Transmit: TB CRC (§7.2.1: CRC24A, or CRC16 when A <= 3824) -> base-graph selection
(§7.2.2 / §6.2.2) -> code-block segmentation and CB CRC24B with filler bits (§5.2.2) ->
LDPC encoding (§5.3.2) -> rate matching (§5.4.2: circular buffer of N_cb bits, start k0
per redundancy version, bit selection skipping filler bits, E_r bits per code block,
bit interleaving §5.4.2.2) -> code-block concatenation (§5.5).

Receive: :func:`derate_match` undoes concatenation, interleaving and bit selection into
per-code-block soft circular buffers (LLRs summed where the selection wrapped around, 0
where nothing was sent, filler bits at a large positive LLR); buffers of transmissions
with different RVs add up (HARQ incremental redundancy). :func:`decode_tb` LDPC-decodes
the buffers, checks the CB CRCs and the TB CRC.

Conventions: bits are ``uint8`` 0/1 in transmission order (bit 0 first, the highest
power of D in the CRC polynomials); LLRs are ``log P(0)/P(1)`` (positive means 0).

>>> import numpy as np
>>> plan = plan_tb(tbs=1000, code_rate=0.5, qm=2, layers=1, g_bits=2400)
>>> plan.base_graph, plan.c, plan.zc, plan.e
(2, 1, 104, (2400,))
>>> bits = np.random.default_rng(0).integers(0, 2, 1000, dtype=np.uint8)
>>> g = encode_tb(bits, plan)
>>> res = decode_tb(8.0 * (1.0 - 2.0 * g.astype(np.float32)), plan)
>>> res.tb_crc_ok, bool((res.bits == bits).all())
(True, True)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from airan.backend import array_module
from airan.core.errors import FieldError
from airan.ran.phy import ldpc
from airan.ran.phy.crc import crc_attach, crc_check

#: Modulation orders Qm of TS 38.211 §5.1 (pi/2-BPSK, QPSK, 16/64/256QAM).
MODULATION_ORDERS = (1, 2, 4, 6, 8)
#: Maximum code-block sizes Kcb of §5.2.2.
KCB = {1: 8448, 2: 3840}
#: R_LBRM of §5.4.2.1 (limited-buffer rate matching).
R_LBRM = 2.0 / 3.0
#: k0 numerators of Table 5.4.2.1-2 for rv = 0..3 (denominator 66 for BG1, 50 for BG2).
K0_NUMERATORS = {1: (0, 17, 33, 56), 2: (0, 13, 25, 43)}


@dataclass(frozen=True)
class TbPlan:
    """Everything derived once per (tbs, code_rate, qm, layers, g_bits, rv), §5.2.2/§5.4.2.

    ``tbs`` = A; ``base_graph`` 1 or 2; ``zc`` the lifting size; ``n`` the LDPC output
    length N (66 Zc / 50 Zc); ``n_cb`` the circular buffer length; ``c`` the number of
    code blocks; ``k`` = K (22 Zc / 10 Zc) and ``k_prime`` = K' (bits per code block with
    its CRC, before filler); ``filler`` = F = K - K'; ``e`` the rate-matched length E_r of
    each code block; ``k0`` the circular-buffer start of ``rv``; ``tb_crc`` / ``cb_crc``
    the CRC lengths (16 or 24; 24 or 0).
    """

    tbs: int
    code_rate: float
    qm: int
    layers: int
    g_bits: int
    rv: int
    base_graph: int
    zc: int
    n_cb: int
    c: int
    k: int
    k_prime: int
    filler: int
    e: tuple[int, ...]
    n: int
    k0: int
    tb_crc: int
    cb_crc: int
    tbs_lbrm: int | None = None

    @property
    def b(self) -> int:
        """B = A + L, the TB with its CRC (§5.2.2)."""
        return self.tbs + self.tb_crc

    def with_rv(self, rv: int) -> TbPlan:
        """The same transport block planned for another redundancy version."""
        return plan_tb(
            self.tbs,
            self.code_rate,
            self.qm,
            self.layers,
            self.g_bits,
            rv,
            tbs_lbrm=self.tbs_lbrm,
        )


@dataclass(frozen=True)
class TbDecodeResult:
    """What :func:`decode_tb` found.

    ``bits``: uint8 (tbs,) decided TB bits; ``tb_crc_ok``: the TB CRC checks;
    ``cb_crc_ok``: bool (C,) per code block, the CB CRC24B when C > 1 (with C = 1 there
    is no CB CRC and the one entry is the TB CRC result); ``iterations``: LDPC iterations
    run (the code blocks of the TB are decoded as one batch).
    """

    bits: Any
    tb_crc_ok: bool
    cb_crc_ok: Any
    iterations: int


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FieldError(name, f"must be an int; got {value!r}")
    return int(value)


def select_base_graph(tbs: int, code_rate: float) -> int:
    """LDPC base graph of TS 38.212 §7.2.2 / §6.2.2.

    BG2 if A <= 292, or A <= 3824 and R <= 0.67, or R <= 0.25; else BG1.
    """
    if tbs <= 292 or (tbs <= 3824 and code_rate <= 0.67) or code_rate <= 0.25:
        return 2
    return 1


def plan_tb(
    tbs: int,
    code_rate: float,
    qm: int,
    layers: int,
    g_bits: int,
    rv: int = 0,
    *,
    tbs_lbrm: int | None = None,
) -> TbPlan:
    """Plan the coding of one transport block, TS 38.212 §7.2 / §6.2, §5.2.2, §5.4.2.

    ``code_rate`` is R (the MCS table's R x 1024, divided by 1024); ``g_bits`` = G, the
    coded bits available to the TB (a multiple of ``qm * layers``); ``tbs_lbrm`` turns on
    limited-buffer rate matching (I_LBRM = 1) with TBS_LBRM, else N_cb = N.
    Raises :class:`FieldError` naming the bad argument.
    """
    tbs = _int("tbs", tbs)
    qm = _int("qm", qm)
    layers = _int("layers", layers)
    g_bits = _int("g_bits", g_bits)
    rv = _int("rv", rv)
    if tbs < 1:
        raise FieldError("tbs", f"must be at least 1; got {tbs}")
    if isinstance(code_rate, bool) or not isinstance(code_rate, (int, float)):
        raise FieldError("code_rate", f"must be a number; got {code_rate!r}")
    code_rate = float(code_rate)
    if not 0.0 < code_rate < 1.0:
        raise FieldError("code_rate", f"must be in (0, 1); got {code_rate}")
    if qm not in MODULATION_ORDERS:
        raise FieldError("qm", f"must be one of {MODULATION_ORDERS}; got {qm}")
    if not 1 <= layers <= 4:
        raise FieldError("layers", f"a transport block maps to 1..4 layers; got {layers}")
    if rv not in (0, 1, 2, 3):
        raise FieldError("rv", f"must be 0, 1, 2 or 3; got {rv}")
    bg = select_base_graph(tbs, code_rate)
    tb_crc = 24 if tbs > 3824 else 16
    b = tbs + tb_crc
    if g_bits <= 0 or g_bits % (qm * layers):
        raise FieldError(
            "g_bits", f"must be a positive multiple of qm * layers = {qm * layers}; got {g_bits}"
        )
    if g_bits < b:
        raise FieldError(
            "g_bits",
            f"{g_bits} coded bits cannot carry {b} bits (TB + CRC): code rate above 1",
        )
    # Code-block segmentation, §5.2.2.
    kcb = KCB[bg]
    if b <= kcb:
        cb_crc, c = 0, 1
    else:
        cb_crc = 24
        c = -(-b // (kcb - cb_crc))
    b_prime = b + c * cb_crc
    if b_prime % c:
        raise FieldError(
            "tbs",
            f"{tbs} is not a TBS of TS 38.214 §5.1.3.2: B' = {b_prime} does not split "
            f"into {c} equal code blocks",
        )
    k_prime = b_prime // c
    if bg == 1:
        kb = 22
    elif b > 640:
        kb = 10
    elif b > 560:
        kb = 9
    elif b > 192:
        kb = 8
    else:
        kb = 6
    zc = min(z for z in ldpc.LIFTING_SIZES if kb * z >= k_prime)
    k, n = ldpc.code_dims(bg, zc)
    # Rate matching, §5.4.2.1.
    if tbs_lbrm is None:
        n_cb = n
    else:
        tbs_lbrm = _int("tbs_lbrm", tbs_lbrm)
        if tbs_lbrm < 1:
            raise FieldError("tbs_lbrm", f"must be at least 1; got {tbs_lbrm}")
        n_cb = min(n, math.floor(tbs_lbrm / (c * R_LBRM)))
    k0 = (K0_NUMERATORS[bg][rv] * n_cb // n) * zc  # floor(num * Ncb / (N/Zc * Zc)) * Zc
    unit = layers * qm
    symbols = g_bits // unit
    lo, hi = unit * (symbols // c), unit * -(-symbols // c)
    e = tuple(lo if j <= c - (symbols % c) - 1 else hi for j in range(c))
    if min(e) <= 0:
        raise FieldError("g_bits", f"{g_bits} bits leave a code block without any bit")
    return TbPlan(
        tbs=tbs,
        code_rate=code_rate,
        qm=qm,
        layers=layers,
        g_bits=g_bits,
        rv=rv,
        base_graph=bg,
        zc=zc,
        n_cb=n_cb,
        c=c,
        k=k,
        k_prime=k_prime,
        filler=k - k_prime,
        e=e,
        n=n,
        k0=k0,
        tb_crc=tb_crc,
        cb_crc=cb_crc,
        tbs_lbrm=tbs_lbrm,
    )


@functools.lru_cache(maxsize=512)
def _rm_index_np(plan: TbPlan) -> npt.NDArray[np.int64]:
    """(G,) index into the flat (C*N) LDPC outputs of each transmitted bit, in order.

    Bit selection (§5.4.2.1) walks the circular buffer from k0, skipping filler bits;
    bit interleaving (§5.4.2.2) writes row-wise into Qm rows, reads column-wise;
    concatenation (§5.5) puts code block r after r-1.
    """
    zc = plan.zc
    pos = np.arange(plan.n_cb)
    f_lo, f_hi = plan.k_prime - 2 * zc, plan.k - 2 * zc  # filler positions in d
    valid = pos[(pos < f_lo) | (pos >= f_hi)]
    start = int(np.searchsorted(valid, plan.k0))
    ring = np.concatenate([valid[start:], valid[:start]])
    parts: list[npt.NDArray[np.int64]] = []
    by_e: dict[int, npt.NDArray[np.int64]] = {}
    for r, e in enumerate(plan.e):  # at most two distinct E_r values
        if e not in by_e:
            sel = ring[np.arange(e) % ring.size]
            perm = np.arange(e).reshape(plan.qm, e // plan.qm).T.ravel()
            by_e[e] = sel[perm]
        parts.append(by_e[e] + r * plan.n)
    return np.concatenate(parts)


@functools.lru_cache(maxsize=512)
def _rm_index(plan: TbPlan, xp: ModuleType) -> Any:
    idx = _rm_index_np(plan)
    return idx if xp is np else xp.asarray(idx)


def _check_plan(plan: object) -> TbPlan:
    if not isinstance(plan, TbPlan):
        raise FieldError("plan", f"must be a TbPlan from plan_tb; got {type(plan).__name__}")
    return plan


def encode_tb(bits: Any, plan: TbPlan) -> Any:
    """Channel-code one transport block: uint8 (tbs,) -> uint8 (g_bits,), TS 38.212 §7.2.

    TB CRC, segmentation with CB CRC and filler (§5.2.2), LDPC (§5.3.2), rate matching
    and interleaving (§5.4.2), concatenation (§5.5).
    """
    plan = _check_plan(plan)
    xp = array_module(bits)
    if getattr(bits, "shape", None) != (plan.tbs,):
        raise FieldError(
            "bits", f"must have shape ({plan.tbs},); got {getattr(bits, 'shape', None)}"
        )
    a = bits.astype(xp.uint8) & 1
    b = crc_attach(a, "24A" if plan.tb_crc == 24 else "16")
    if plan.c == 1:
        cbs = b[None, :]
    else:
        cbs = crc_attach(b.reshape(plan.c, plan.k_prime - plan.cb_crc), "24B")
    c = xp.concatenate([cbs, xp.zeros((plan.c, plan.filler), dtype=xp.uint8)], axis=1)
    d = ldpc.encode(c, plan.base_graph, plan.zc)  # (C, N), filler bits coded as 0
    return d.reshape(-1)[_rm_index(plan, xp)]


def derate_match(llr: Any, plan: TbPlan) -> Any:
    """Soft circular buffers of one transmission: float32 (g_bits,) -> (C, N), §5.4.2.

    Inverse of concatenation, interleaving and bit selection: each LLR is added at its
    code-block position (repeated positions sum), untransmitted positions are 0 and filler
    bits are :data:`airan.ran.phy.ldpc.FILLER_LLR`. Sum the buffers of several
    transmissions (any RVs) and pass the sum to ``decode_tb(..., soft=True)``.
    """
    plan = _check_plan(plan)
    xp = array_module(llr)
    if getattr(llr, "shape", None) != (plan.g_bits,):
        raise FieldError(
            "llr", f"must have shape ({plan.g_bits},); got {getattr(llr, 'shape', None)}"
        )
    flat = xp.bincount(
        _rm_index(plan, xp), weights=llr.astype(xp.float32), minlength=plan.c * plan.n
    )
    soft = flat.astype(xp.float32).reshape(plan.c, plan.n)
    soft[:, plan.k_prime - 2 * plan.zc : plan.k - 2 * plan.zc] = ldpc.FILLER_LLR
    return soft


def decode_tb(
    llr_or_soft: Any,
    plan: TbPlan,
    *,
    max_iterations: int = 8,
    soft: bool = False,
    alpha: float = 0.75,
) -> TbDecodeResult:
    """Decode one transport block, TS 38.212 §7.2 in reverse.

    ``llr_or_soft``: float (g_bits,) LLRs of this transmission, or with ``soft=True`` the
    (C, N) soft buffers of :func:`derate_match` (possibly summed over transmissions).
    LDPC decoding is layered normalised min-sum (``alpha``, ``max_iterations``) over the C
    code blocks as one batch; then the CB CRC24B (C > 1) and the TB CRC are checked.
    """
    plan = _check_plan(plan)
    xp = array_module(llr_or_soft)
    if soft:
        if getattr(llr_or_soft, "shape", None) != (plan.c, plan.n):
            raise FieldError(
                "llr_or_soft",
                f"soft buffers must have shape ({plan.c}, {plan.n}); "
                f"got {getattr(llr_or_soft, 'shape', None)}",
            )
        buf = llr_or_soft
    else:
        buf = derate_match(llr_or_soft, plan)
    res = ldpc.decode(
        buf,
        plan.base_graph,
        plan.zc,
        max_iterations=max_iterations,
        alpha=alpha,
        filler=plan.filler,
    )
    cbs = res.bits[:, : plan.k_prime]
    if plan.c == 1:
        payload = cbs[0]
    else:
        cb_ok = crc_check(cbs, "24B")
        payload = cbs[:, : plan.k_prime - plan.cb_crc].reshape(-1)
    tb_ok = bool(crc_check(payload, "24A" if plan.tb_crc == 24 else "16"))
    if plan.c == 1:
        cb_ok = xp.asarray([tb_ok])
    return TbDecodeResult(
        bits=payload[: plan.tbs], tb_crc_ok=tb_ok, cb_crc_ok=cb_ok, iterations=res.iterations
    )
