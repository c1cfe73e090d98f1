"""Metering and audit for the AI grid.

:class:`Meter` counts, per tenant and site, the requests finished, the attempts started,
the tokens delivered to clients (each token once, credited to the site that produced
it) and the device time the sites reported (µs; a site that died mid-request reports
nothing for that attempt, which the ``unreported_attempts`` column says). It exports
JSON or CSV for billing (:meth:`Meter.to_json`, :meth:`Meter.to_csv`).

:class:`AuditLog` writes one JSON object per line (JSON Lines) for every placement
decision: the request, the candidates with their predicted latency, cost, headroom,
score and its terms, every filtered site with its reason, and the outcome; and for every
refusal and failover. Lines are written in order from any thread.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from airan.core.errors import FieldError

__all__ = ["METER_COLUMNS", "AuditLog", "Meter", "MeterRow"]

METER_COLUMNS: tuple[str, ...] = (
    "tenant",
    "site",
    "requests",
    "attempts",
    "unreported_attempts",
    "tokens",
    "device_us",
)


@dataclass(slots=True)
class MeterRow:
    """The counters of one (tenant, site)."""

    tenant: str
    site: str
    requests: int = 0
    attempts: int = 0
    unreported_attempts: int = 0
    tokens: int = 0
    device_us: float = 0.0


class Meter:
    """Tokens and device time per tenant per site (thread-safe)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], MeterRow] = {}
        self._lock = threading.Lock()

    def _row(self, tenant: str, site: str) -> MeterRow:
        r = self._rows.get((tenant, site))
        if r is None:
            r = self._rows[(tenant, site)] = MeterRow(tenant, site)
        return r

    def attempt(self, tenant: str, site: str) -> None:
        with self._lock:
            self._row(tenant, site).attempts += 1

    def tokens(self, tenant: str, site: str, n: int) -> None:
        with self._lock:
            self._row(tenant, site).tokens += n

    def ended(self, tenant: str, site: str, device_us: float | None, finished: bool = True) -> None:
        """An attempt ended: with the site's device time, or ``None`` if it reported none
        (it failed); ``finished``: the request ended there."""
        with self._lock:
            r = self._row(tenant, site)
            if device_us is None:
                r.unreported_attempts += 1
            else:
                r.device_us += device_us
            if finished:
                r.requests += 1

    def rows(self) -> list[MeterRow]:
        """A copy of every row, by tenant then site."""
        with self._lock:
            return [MeterRow(**asdict(r)) for _, r in sorted(self._rows.items())]

    def total(self, column: str) -> float:
        if column not in METER_COLUMNS[2:]:
            raise FieldError("column", f"must be one of {', '.join(METER_COLUMNS[2:])}")
        return float(sum(getattr(r, column) for r in self.rows()))

    def to_json(self) -> str:
        """``{"generated_at": <unix s>, "columns": [...], "rows": [{...}, ...]}``."""
        return json.dumps(
            {
                "generated_at": time.time(),
                "columns": list(METER_COLUMNS),
                "rows": [asdict(r) for r in self.rows()],
            },
            indent=1,
        )

    def to_csv(self) -> str:
        """A header line (:data:`METER_COLUMNS`), then one line per tenant and site."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(METER_COLUMNS)
        for r in self.rows():
            w.writerow([getattr(r, c) for c in METER_COLUMNS])
        return buf.getvalue()

    def export(self, path: str | Path) -> None:
        """Write :meth:`to_json` or :meth:`to_csv`, by the file's suffix."""
        p = Path(path)
        if p.suffix == ".json":
            p.write_text(self.to_json())
        elif p.suffix == ".csv":
            p.write_text(self.to_csv())
        else:
            raise FieldError("path", f"must end in .json or .csv, got {p.name!r}")


class AuditLog:
    """JSON Lines of placement decisions, refusals and failovers.

    ``sink``: a path (appended to), an open text file, or ``None`` to keep the records
    in memory only; ``keep``: how many records stay in memory (:meth:`records`)."""

    def __init__(self, sink: str | Path | IO[str] | None = None, keep: int = 10_000) -> None:
        if not 0 <= keep <= 10_000_000:
            raise FieldError("keep", f"must be in [0, 10000000], got {keep}")
        self._own = isinstance(sink, str | Path)
        self._file: IO[str] | None = (
            open(sink, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if isinstance(sink, str | Path)
            else sink
        )
        self._keep = keep
        self._mem: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq = 0

    def write(self, kind: str, record: Mapping[str, Any]) -> str:
        """Append a record of ``kind`` (``placement``, ``refusal``, ``failover``, ...);
        returns its id."""
        with self._lock:
            self._seq += 1
            rid = f"d{self._seq}"
            rec = {"id": rid, "ts": time.time(), "kind": kind, **record}
            if self._file is not None:
                self._file.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
                self._file.flush()
            if self._keep:
                self._mem.append(rec)
                if len(self._mem) > self._keep:
                    del self._mem[: len(self._mem) - self._keep]
        return rid

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._mem if kind is None or r["kind"] == kind]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def close(self) -> None:
        if self._own and self._file is not None:
            self._file.close()
        self._file = None
