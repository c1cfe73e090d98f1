"""MCS and CQI tables, transport block size, and the SNR → CQI mapping (TS 38.214).

* MCS index tables for PDSCH/PUSCH: TS 38.214 Table 5.1.3.1-1 (up to 64QAM, "table 1")
  and Table 5.1.3.1-2 (up to 256QAM, "table 2"); the last rows are reserved, used for
  retransmissions (they carry Q_m only, TS 38.214 §5.1.3.1).
* 4-bit CQI tables: TS 38.214 Table 5.2.2.1-2 ("table 1") and Table 5.2.2.1-3
  ("table 2"); CQI 0 means out of range.
* Transport block size: TS 38.214 §5.1.3.2 (PDSCH) and §6.1.4.2 (PUSCH, same steps), with
  the small-TBS Table 5.1.3.2-1 and the TB scaling factors of Table 5.1.3.2-2.
* SNR → CQI: a stated link model, not from the specification (TS 38.214 §5.2.2.1 leaves
  it to the UE: the highest CQI whose transport block would be received with a block
  error probability of at most 0.1). Here the SNR needed for 10 % BLER at spectral
  efficiency ``SE`` (bit/s/Hz per layer) is the Shannon bound with a 3 dB gap:
  ``snr_10(SE) = 10·log10(Γ·(2^SE - 1))``, ``Γ = 10^(0.3)``. That puts CQI 1 at -6.5 dB and
  CQI 15 of table 1 at 19.6 dB, within about 1 dB of published AWGN link-level curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from airan.core.errors import FieldError

McsTableId = Literal[1, 2]

# -- MCS index tables ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class McsEntry:
    """One row of an MCS index table: modulation order Q_m, target code rate Rx1024 and
    spectral efficiency (bit/s/Hz per layer); ``rate_x1024`` and ``efficiency`` are
    ``None`` on the reserved rows."""

    index: int
    qm: int
    rate_x1024: float | None
    efficiency: float | None

    @property
    def reserved(self) -> bool:
        return self.rate_x1024 is None


def _rows(rows: list[tuple[int, float | None, float | None]]) -> tuple[McsEntry, ...]:
    return tuple(McsEntry(i, qm, r, se) for i, (qm, r, se) in enumerate(rows))


# TS 38.214 Table 5.1.3.1-1: MCS index table 1 for PDSCH (Q_m, Rx1024, spectral efficiency).
MCS_TABLE_1: tuple[McsEntry, ...] = _rows([
    (2, 120, 0.2344), (2, 157, 0.3066), (2, 193, 0.3770), (2, 251, 0.4902),
    (2, 308, 0.6016), (2, 379, 0.7402), (2, 449, 0.8770), (2, 526, 1.0273),
    (2, 602, 1.1758), (2, 679, 1.3262), (4, 340, 1.3281), (4, 378, 1.4766),
    (4, 434, 1.6953), (4, 490, 1.9141), (4, 553, 2.1602), (4, 616, 2.4063),
    (4, 658, 2.5703), (6, 438, 2.5664), (6, 466, 2.7305), (6, 517, 3.0293),
    (6, 567, 3.3223), (6, 616, 3.6094), (6, 666, 3.9023), (6, 719, 4.2129),
    (6, 772, 4.5234), (6, 822, 4.8164), (6, 873, 5.1152), (6, 910, 5.3320),
    (6, 948, 5.5547),
    (2, None, None), (4, None, None), (6, None, None),  # 29-31 reserved
])  # fmt: skip

# TS 38.214 Table 5.1.3.1-2: MCS index table 2 for PDSCH (256QAM).
MCS_TABLE_2: tuple[McsEntry, ...] = _rows([
    (2, 120, 0.2344), (2, 193, 0.3770), (2, 308, 0.6016), (2, 449, 0.8770),
    (2, 602, 1.1758), (4, 378, 1.4766), (4, 434, 1.6953), (4, 490, 1.9141),
    (4, 553, 2.1602), (4, 616, 2.4063), (4, 658, 2.5703), (6, 466, 2.7305),
    (6, 517, 3.0293), (6, 567, 3.3223), (6, 616, 3.6094), (6, 666, 3.9023),
    (6, 719, 4.2129), (6, 772, 4.5234), (6, 822, 4.8164), (6, 873, 5.1152),
    (8, 682.5, 5.3320), (8, 711, 5.5547), (8, 754, 5.8906), (8, 797, 6.2266),
    (8, 841, 6.5703), (8, 885, 6.9141), (8, 916.5, 7.1602), (8, 948, 7.4063),
    (2, None, None), (4, None, None), (6, None, None), (8, None, None),  # 28-31 reserved
])  # fmt: skip

MCS_TABLES: dict[int, tuple[McsEntry, ...]] = {1: MCS_TABLE_1, 2: MCS_TABLE_2}


def mcs_table(table: int) -> tuple[McsEntry, ...]:
    """MCS index table 1 (64QAM) or 2 (256QAM) of TS 38.214 §5.1.3.1."""
    if table not in MCS_TABLES:
        raise FieldError("mcs_table", f"must be 1 (64QAM) or 2 (256QAM) (got {table!r})")
    return MCS_TABLES[table]


def mcs_entry(table: int, index: int) -> McsEntry:
    """Row ``index`` (0..31) of MCS table ``table``."""
    rows = mcs_table(table)
    if not 0 <= index < len(rows):
        raise FieldError("mcs", f"MCS index must be in 0..{len(rows) - 1} (got {index})")
    return rows[index]


def max_mcs(table: int) -> int:
    """Highest non-reserved MCS index of the table (28 for table 1, 27 for table 2)."""
    return max(e.index for e in mcs_table(table) if not e.reserved)


# -- CQI tables ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CqiEntry:
    """One row of a 4-bit CQI table; CQI 0 ("out of range") has ``qm = 0``."""

    index: int
    qm: int
    rate_x1024: float
    efficiency: float


def _cqi(rows: list[tuple[int, float, float]]) -> tuple[CqiEntry, ...]:
    rest = (CqiEntry(i + 1, qm, r, se) for i, (qm, r, se) in enumerate(rows))
    return (CqiEntry(0, 0, 0.0, 0.0), *rest)


# TS 38.214 Table 5.2.2.1-2: 4-bit CQI table 1 (QPSK..64QAM).
CQI_TABLE_1: tuple[CqiEntry, ...] = _cqi([
    (2, 78, 0.1523), (2, 120, 0.2344), (2, 193, 0.3770), (2, 308, 0.6016),
    (2, 449, 0.8770), (2, 602, 1.1758), (4, 378, 1.4766), (4, 490, 1.9141),
    (4, 616, 2.4063), (6, 466, 2.7305), (6, 567, 3.3223), (6, 666, 3.9023),
    (6, 772, 4.5234), (6, 873, 5.1152), (6, 948, 5.5547),
])  # fmt: skip

# TS 38.214 Table 5.2.2.1-3: 4-bit CQI table 2 (QPSK..256QAM).
CQI_TABLE_2: tuple[CqiEntry, ...] = _cqi([
    (2, 78, 0.1523), (2, 193, 0.3770), (2, 449, 0.8770), (4, 378, 1.4766),
    (4, 490, 1.9141), (4, 616, 2.4063), (6, 466, 2.7305), (6, 567, 3.3223),
    (6, 666, 3.9023), (6, 772, 4.5234), (6, 873, 5.1152), (8, 711, 5.5547),
    (8, 797, 6.2266), (8, 885, 6.9141), (8, 948, 7.4063),
])  # fmt: skip

CQI_TABLES: dict[int, tuple[CqiEntry, ...]] = {1: CQI_TABLE_1, 2: CQI_TABLE_2}


def cqi_table(table: int) -> tuple[CqiEntry, ...]:
    """CQI table 1 (Table 5.2.2.1-2) or 2 (Table 5.2.2.1-3) of TS 38.214."""
    if table not in CQI_TABLES:
        raise FieldError("cqi_table", f"must be 1 or 2 (got {table!r})")
    return CQI_TABLES[table]


# -- SNR -> CQI -> MCS (the stated link model) -----------------------------------------------

SHANNON_GAP_DB = 3.0
"""Gap to the Shannon bound of the 10 % BLER operating points (see the module docstring)."""


def snr_for_bler10_db(efficiency: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """SNR (dB) at which spectral efficiency ``efficiency`` meets 10 % BLER in this model."""
    se = np.asarray(efficiency, dtype=np.float64)
    return np.asarray(
        SHANNON_GAP_DB + 10.0 * np.log10(np.maximum(np.exp2(se) - 1.0, 1e-12)), dtype=np.float64
    )


def cqi_thresholds_db(table: int = 1) -> npt.NDArray[np.float64]:
    """SNR thresholds (dB) of CQI 1..15 of ``table`` (index 0 holds -inf for CQI 0)."""
    se = np.array([e.efficiency for e in cqi_table(table)[1:]])
    return np.concatenate(([-np.inf], snr_for_bler10_db(se)))


def cqi_from_snr(snr_db: npt.ArrayLike, table: int = 1) -> npt.NDArray[np.int64]:
    """CQI report for each SNR (dB): the highest CQI whose 10 %-BLER SNR is ≤ the SNR,
    0 (out of range) below CQI 1 (TS 38.214 §5.2.2.1, with the model of this module)."""
    thr = cqi_thresholds_db(table)
    return np.asarray(
        np.searchsorted(thr, np.asarray(snr_db, dtype=np.float64), side="right") - 1,
        dtype=np.int64,
    )


def _mcs_efficiency(table: int) -> npt.NDArray[np.float64]:
    """Spectral efficiency of each non-reserved MCS of ``table``, in index order."""
    return np.array([e.efficiency for e in mcs_table(table) if e.efficiency is not None])


def mcs_from_cqi(cqi: npt.ArrayLike, table: int = 1) -> npt.NDArray[np.int64]:
    """MCS for each CQI: the highest MCS of MCS table ``table`` whose spectral efficiency
    does not exceed that of the CQI in the matching CQI table (1 ↔ 1, 2 ↔ 2); MCS 0 for CQI 1
    (below every MCS); -1 for CQI 0 (out of range: nothing is sent)."""
    c = np.asarray(cqi, dtype=np.int64)
    if np.any((c < 0) | (c > 15)):
        raise FieldError("cqi", "must be in 0..15")
    cse = np.array([e.efficiency for e in cqi_table(table)])
    mse = _mcs_efficiency(table)
    m = np.searchsorted(mse, cse[c] + 1e-9, side="right") - 1
    return np.asarray(np.where(c == 0, -1, np.maximum(m, 0)), dtype=np.int64)


def mcs_from_snr(snr_db: npt.ArrayLike, table: int = 1) -> npt.NDArray[np.int64]:
    """The highest MCS of ``table`` whose 10 %-BLER SNR is ≤ ``snr_db`` (-1 below MCS 0)."""
    thr = snr_for_bler10_db(_mcs_efficiency(table))
    return np.asarray(
        np.searchsorted(thr, np.asarray(snr_db, dtype=np.float64), side="right") - 1,
        dtype=np.int64,
    )


# -- transport block size ------------------------------------------------------------------

# TS 38.214 Table 5.1.3.2-1: TBS for N_info <= 3824.
TBS_TABLE: tuple[int, ...] = (
    24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152, 160, 168,
    176, 184, 192, 208, 224, 240, 256, 272, 288, 304, 320, 336, 352, 368, 384, 408, 432,
    456, 480, 504, 528, 552, 576, 608, 640, 672, 704, 736, 768, 808, 848, 888, 928, 984,
    1032, 1064, 1128, 1160, 1192, 1224, 1256, 1288, 1320, 1352, 1416, 1480, 1544, 1608,
    1672, 1736, 1800, 1864, 1928, 2024, 2088, 2152, 2216, 2280, 2408, 2472, 2536, 2600,
    2664, 2728, 2792, 2856, 2976, 3104, 3240, 3368, 3496, 3624, 3752, 3824,
)  # fmt: skip
_TBS_ARRAY = np.array(TBS_TABLE, dtype=np.int64)

# TS 38.214 Table 5.1.3.2-2: TB scaling field -> scaling factor S.
TB_SCALING: dict[int, float] = {0: 1.0, 1: 0.5, 2: 0.25}
MAX_RE_PER_PRB = 156  # TS 38.214 §5.1.3.2 step 1


def _check_tbs_args(
    qm: int, rate_x1024: float, n_prb: int, n_symbols: int, n_dmrs_prb: int, n_oh_prb: int,
    layers: int, scaling: float,
) -> int:  # fmt: skip
    if qm not in (1, 2, 4, 6, 8, 10):
        raise FieldError("qm", f"modulation order must be 1, 2, 4, 6, 8 or 10 (got {qm})")
    if not 0.0 < rate_x1024 < 1024.0:
        raise FieldError("code_rate", f"Rx1024 must be in (0, 1024) (got {rate_x1024})")
    if not 1 <= n_prb <= 275:
        raise FieldError("n_prb", f"must be in 1..275 (got {n_prb})")
    if not 1 <= n_symbols <= 14:
        raise FieldError("n_symbols", f"must be in 1..14 (got {n_symbols})")
    if not 1 <= layers <= 8:
        raise FieldError("layers", f"must be in 1..8 (got {layers})")
    if scaling not in TB_SCALING.values():
        raise FieldError("scaling", f"TB scaling factor must be 1, 0.5 or 0.25 (got {scaling})")
    if n_dmrs_prb < 0 or n_oh_prb < 0:
        raise FieldError("n_dmrs_prb", "DM-RS and overhead RE counts must be >= 0")
    n_re_prime = 12 * n_symbols - n_dmrs_prb - n_oh_prb
    if n_re_prime <= 0:
        raise FieldError("n_dmrs_prb", f"no RE left for data (N'_RE = {n_re_prime})")
    return n_re_prime


def transport_block_size(
    qm: int,
    rate_x1024: float,
    n_prb: int,
    n_symbols: int,
    n_dmrs_prb: int,
    n_oh_prb: int = 0,
    layers: int = 1,
    scaling: float = 1.0,
) -> int:
    """Transport block size in bits, TS 38.214 §5.1.3.2 (PDSCH) / §6.1.4.2 (PUSCH).

    1. ``N'_RE = 12·N_symb - N_DMRS - N_oh``; ``N_RE = min(156, N'_RE)·n_PRB``.
    2. ``N_info = S·N_RE·R·Q_m·v``.
    3. ``N_info ≤ 3824``: ``n = max(3, ⌊log2 N_info⌋ - 6)``,
       ``N'_info = max(24, 2^n·⌊N_info/2^n⌋)``; the smallest TBS of Table 5.1.3.2-1 ≥ N'_info.
    4. otherwise ``n = ⌊log2(N_info - 24)⌋ - 5``,
       ``N'_info = max(3840, 2^n·round((N_info - 24)/2^n))`` (ties rounded up), and with C
       code blocks ``TBS = 8·C·⌈(N'_info + 24)/(8·C)⌉ - 24`` where ``C = ⌈(N'_info + 24)/3816⌉``
       if ``R ≤ 1/4``, ``C = ⌈(N'_info + 24)/8424⌉`` if ``N'_info > 8424``, else ``C = 1``.

    ``rate_x1024`` is the target code rate Rx1024 of the MCS table (it may be fractional,
    e.g. 682.5); ``scaling`` the factor S of Table 5.1.3.2-2.
    """
    n_re_prime = _check_tbs_args(
        qm, rate_x1024, n_prb, n_symbols, n_dmrs_prb, n_oh_prb, layers, scaling
    )
    n_re = min(MAX_RE_PER_PRB, n_re_prime) * n_prb
    n_info = scaling * n_re * (rate_x1024 / 1024.0) * qm * layers
    if n_info <= 3824:
        n = max(3, math.floor(math.log2(n_info)) - 6)
        n_info_p = max(24, (1 << n) * math.floor(n_info / (1 << n)))
        return TBS_TABLE[int(np.searchsorted(_TBS_ARRAY, n_info_p, side="left"))]
    n = math.floor(math.log2(n_info - 24)) - 5
    n_info_p = max(3840, (1 << n) * math.floor((n_info - 24) / (1 << n) + 0.5))
    if rate_x1024 <= 256:  # R <= 1/4
        c = -(-(n_info_p + 24) // 3816)
    elif n_info_p > 8424:
        c = -(-(n_info_p + 24) // 8424)
    else:
        c = 1
    return int(8 * c * -(-(n_info_p + 24) // (8 * c)) - 24)


def tbs_array(
    qm: npt.ArrayLike,
    rate_x1024: npt.ArrayLike,
    n_prb: npt.ArrayLike,
    n_symbols: int,
    n_dmrs_prb: int,
    n_oh_prb: int = 0,
    layers: int = 1,
    scaling: float = 1.0,
) -> npt.NDArray[np.int64]:
    """:func:`transport_block_size` vectorised over broadcastable ``qm``, ``rate_x1024`` and
    ``n_prb`` arrays (NumPy). Entries with ``n_prb == 0`` or ``rate_x1024 == 0`` give 0."""
    n_re_prime = _check_tbs_args(2, 120, 1, n_symbols, n_dmrs_prb, n_oh_prb, layers, scaling)
    q, r, p = np.broadcast_arrays(
        np.asarray(qm, dtype=np.float64),
        np.asarray(rate_x1024, dtype=np.float64),
        np.asarray(n_prb, dtype=np.int64),
    )
    n_info = scaling * (min(MAX_RE_PER_PRB, n_re_prime) * p) * (r / 1024.0) * q * layers
    valid = n_info > 0
    ni = np.where(valid, n_info, 1.0)
    # step 3
    n3 = np.maximum(3, np.floor(np.log2(ni)) - 6)
    p3 = np.maximum(24.0, np.exp2(n3) * np.floor(ni / np.exp2(n3)))
    small = _TBS_ARRAY[np.minimum(np.searchsorted(_TBS_ARRAY, p3, side="left"), len(TBS_TABLE) - 1)]
    # step 4
    big_ni = np.maximum(ni, 3825.0)
    n4 = np.floor(np.log2(big_ni - 24)) - 5
    p4 = np.maximum(3840.0, np.exp2(n4) * np.floor((big_ni - 24) / np.exp2(n4) + 0.5))
    c = np.where(
        r <= 256, np.ceil((p4 + 24) / 3816), np.where(p4 > 8424, np.ceil((p4 + 24) / 8424), 1.0)
    )
    big = 8 * c * np.ceil((p4 + 24) / (8 * c)) - 24
    out = np.where(ni <= 3824, small, big)
    return np.asarray(np.where(valid, out, 0), dtype=np.int64)


def tbs_for_mcs(
    table: int,
    mcs: int,
    n_prb: int,
    n_symbols: int,
    n_dmrs_prb: int,
    n_oh_prb: int = 0,
    layers: int = 1,
) -> int:
    """TBS of an initial transmission with MCS ``mcs`` of MCS table ``table``."""
    e = mcs_entry(table, mcs)
    if e.rate_x1024 is None:
        raise FieldError("mcs", f"MCS {mcs} of table {table} is reserved (retransmissions only)")
    return transport_block_size(e.qm, e.rate_x1024, n_prb, n_symbols, n_dmrs_prb, n_oh_prb, layers)
