"""One-off conversion of the 5G NR LDPC base graphs into ``airan/ran/phy/data/ldpc_bg.npz``.

Source: the base-graph tables that Sionna ships (``sionna/phy/fec/ldpc/codes/5G_bg1.csv``
and ``5G_bg2.csv``), which transcribe TS 38.212 Table 5.3.2-2 (BG1) and Table 5.3.2-3
(BG2): one line per non-zero entry (row i, column j, V_ij for iLS = 0..7). Obtain them
with ``pip download sionna --no-deps`` and unzip the wheel, then run::

    python scripts/make_ldpc_tables.py path/to/codes/5G_bg1.csv path/to/codes/5G_bg2.csv

The output holds, per base graph, ``bgN_row`` and ``bgN_col`` (int16, one per non-zero
entry, row-major order) and ``bgN_shift`` (int16, entries x 8 iLS sets).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "airan" / "ran" / "phy" / "data" / "ldpc_bg.npz"


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, shifts) of one Sionna base-graph CSV (two header lines, ';' separated)."""
    rows: list[int] = []
    cols: list[int] = []
    shifts: list[list[int]] = []
    row = -1
    for line in path.read_text().splitlines()[2:]:
        cells = line.split(";")
        if not line.strip():
            continue
        if cells[0].strip():
            row = int(cells[0])
        rows.append(row)
        cols.append(int(cells[1]))
        shifts.append([int(v) for v in cells[2:10]])
    return (
        np.asarray(rows, dtype=np.int16),
        np.asarray(cols, dtype=np.int16),
        np.asarray(shifts, dtype=np.int16),
    )


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: make_ldpc_tables.py 5G_bg1.csv 5G_bg2.csv")
    arrays: dict[str, np.ndarray] = {}
    for name, path in zip(("bg1", "bg2"), argv, strict=True):
        r, c, s = read_table(Path(path))
        order = np.lexsort((c, r))
        arrays[f"{name}_row"] = r[order]
        arrays[f"{name}_col"] = c[order]
        arrays[f"{name}_shift"] = s[order]
        print(f"{name}: {len(r)} entries, {int(r.max()) + 1} rows, {int(c.max()) + 1} columns")
    np.savez_compressed(OUT, **arrays)  # type: ignore[arg-type]  # stub: allow_pickle
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
