"""Slice-level PRB quotas: the RRM policy ratios of 3GPP TS 28.541 §4.3.36.

One :class:`SliceQuota` per network slice (S-NSSAI, TS 23.003 §28.4.2) gives the
share of a cell's PRBs that the slice is guaranteed and allowed, as percentages:

* ``dedicated_ratio``: PRBs reserved for the slice; no other slice may use them, even
  when the slice leaves them idle;
* ``min_ratio``: PRBs the slice is guaranteed when it has data (prioritised), which
  other slices may use when it has none;
* ``max_ratio``: the most PRBs the slice may get.

with ``dedicated_ratio <= min_ratio <= max_ratio`` and, over all slices, the sums of
dedicated and of minimum ratios at most 100. This is what the O-RAN E2SM-RC control
style 2, action 6 ("slice-level PRB quota", O-RAN.WG3.E2SM-RC §7.6.3) sets, and what
the MAC applies when it allocates PRBs each slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from airan.core.errors import FieldError
from airan.core.policy import CheckedModel


class Snssai(CheckedModel):
    """A network slice: slice/service type (0-255) and optional 24-bit differentiator."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "snssai"

    sst: int = Field(ge=0, le=255, description="Slice/Service Type (TS 23.501 §5.15.2.2).")
    sd: int | None = Field(None, ge=0, le=0xFFFFFE, description="Slice Differentiator.")

    def __str__(self) -> str:
        return f"{self.sst}" if self.sd is None else f"{self.sst}-{self.sd:06x}"


class SliceQuota(CheckedModel):
    """The PRB quota of one slice (TS 28.541 §4.3.36 RRMPolicyRatio), in percent."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "slice_quota"

    snssai: Snssai
    min_ratio: int = Field(0, ge=0, le=100, description="Min PRB policy ratio, %.")
    max_ratio: int = Field(100, ge=0, le=100, description="Max PRB policy ratio, %.")
    dedicated_ratio: int = Field(0, ge=0, le=100, description="Dedicated PRB policy ratio, %.")

    @model_validator(mode="after")
    def _ordered(self) -> SliceQuota:
        if self.min_ratio > self.max_ratio:
            raise ValueError(
                f"min_ratio ({self.min_ratio}) must be <= max_ratio ({self.max_ratio})"
            )
        if self.dedicated_ratio > self.min_ratio:
            raise ValueError(
                f"dedicated_ratio ({self.dedicated_ratio}) must be <= min_ratio ({self.min_ratio})"
            )
        return self


def check_quotas(
    quotas: Iterable[SliceQuota], field: str = "slice_quotas"
) -> tuple[SliceQuota, ...]:
    """Validate a whole set of slice quotas; raise :class:`FieldError` naming ``field``.

    Each S-NSSAI appears once, and the dedicated and minimum ratios each sum to at most
    100 % of the cell (TS 28.541 §4.3.36).
    """
    qs = tuple(quotas)
    seen: set[tuple[int, int | None]] = set()
    for i, q in enumerate(qs):
        key = (q.snssai.sst, q.snssai.sd)
        if key in seen:
            raise FieldError(f"{field}[{i}].snssai", f"slice {q.snssai} appears twice")
        seen.add(key)
    for attr in ("dedicated_ratio", "min_ratio"):
        total = sum(getattr(q, attr) for q in qs)
        if total > 100:
            raise FieldError(field, f"the {attr}s sum to {total} %, more than 100 %")
    return qs
