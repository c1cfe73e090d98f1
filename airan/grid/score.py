"""Placement for the AI grid: policies, site facts, hard filters and the score (no I/O).

Everything here is pure: the router (:mod:`airan.grid.router`) gathers the facts and
calls :func:`place`; the tests call it on constructed cases. The formula is written out
in ``docs/grid.md`` ("The score"); in short, for a request of tenant ``T`` asking for
``N`` new tokens after a ``P``-token prompt from user area ``a``, with total deadline
``D`` (ms) and cost reference ``C_ref`` (its cost cap, else the tenant's ``cost_ref``):

* predicted latency (ms): ``L_s = rtt_s(a) + lag_s + (N·τ_s / A_s) · ceil((k_s + 1) / b_s)``
  — the network round trip, the node's reported lag behind its own device model
  (``airan.Infer.PacingLagMs``: 0 on a real device; on a simulated one, how far its host
  falls behind), then ``N`` decode steps of ``τ_s`` device ms stretched by
  the share ``A_s`` of device time AI may use there (``airan.Infer.AiCapacity``: what
  the radio leaves, within the operator's AI share cap), in as many waves as the
  ``k_s`` requests already there (the router's own, or the node's reported queue depth
  if larger) fill batches of ``b_s`` before this one (continuous batching: a decode
  step costs about the same whatever the batch, until the batch is full);
* predicted cost: ``C_s = (P + N) · c_s · 1e-6 · W_s · price_s / 3.6e6`` — tokens times
  device seconds per token (``c_s`` µs: the node's measured ``airan.Infer.DeviceUsPerToken``,
  else ``τ_s·1000 / b_s``) times the device's power (W) times the energy price per kWh;
* power headroom: ``H_s = clip(1 - (W_idle,s + W_s·(RadioBusy_s + AiBusy_s)) / W_budget,s, 0, 1)``;
* score (lower is better):
  ``S_s = w_lat·L_s/D + w_cost·C_s/C_ref + w_pow·(1 - H_s) + μ·[L_s > D]``
  with the tenant's weights and the grid's miss penalty ``μ``; the least score wins,
  ties going to the lower ``L_s``, then to the lower site id.

Hard filters come first, in this order, and a filtered site gets the first reason that
applies: ``residency`` (its jurisdiction is not one the tenant allows), ``no-route`` (no
known latency from the user area), ``excluded`` (it already failed this request),
``unhealthy`` (no fresh KPM report, or reported unhealthy, or errored), ``radio`` (its
radio missed deadlines: deadline-met ratio below the grid's minimum in the last report,
or a miss within the hold-off), ``power`` (no power headroom), ``full`` (``k_s`` at its
``max_inflight``) and ``cost-cap`` (``C_s`` over the cap).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from airan.core.errors import FieldError
from airan.core.policy import TENANT_NAME, CheckedModel

__all__ = [
    "ANYWHERE",
    "Candidate",
    "Demand",
    "GridPolicy",
    "GridTenant",
    "LiveFacts",
    "Placement",
    "Refused",
    "ScoreWeights",
    "SiteFacts",
    "SiteView",
    "place",
    "precheck",
]

#: in a tenant's ``jurisdictions``: any jurisdiction (no residency rule)
ANYWHERE = "*"
_CODE = r"^[A-Za-z0-9._:-]{1,64}$"
J_PER_KWH = 3.6e6

#: filter reasons, in the order they are checked
FILTERS: tuple[str, ...] = (
    "residency",
    "no-route",
    "excluded",
    "unhealthy",
    "radio",
    "power",
    "full",
    "cost-cap",
)


class ScoreWeights(CheckedModel):
    """How a tenant trades latency, cost and power headroom (each ≥ 0, not all 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "weights"

    latency: float = Field(1.0, ge=0.0, le=1e6)
    cost: float = Field(0.0, ge=0.0, le=1e6)
    power: float = Field(0.0, ge=0.0, le=1e6)

    @model_validator(mode="after")
    def _not_all_zero(self) -> ScoreWeights:
        if self.latency + self.cost + self.power <= 0:
            raise ValueError("at least one weight must be > 0")
        return self


class GridTenant(CheckedModel):
    """One tenant of the grid: where its data may be processed, how its placements are
    scored, what a request may cost, its SLO defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "tenant"

    jurisdictions: tuple[str, ...] = Field(
        (ANYWHERE,),
        min_length=1,
        max_length=256,
        description='Residency rule: the jurisdictions its requests may be served in ("*": any).',
    )
    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    cost_cap: float | None = Field(
        None, ge=0.0, description="Most a request may cost (currency); None: no cap."
    )
    cost_ref: float = Field(
        1e-6, gt=0.0, description="Cost that scores 1 when a request has no cap (currency)."
    )
    ttft_ms: float = Field(1000.0, gt=0.0, le=3.6e6, description="Default time-to-first-token SLO.")
    total_ms: float = Field(5000.0, gt=0.0, le=3.6e6, description="Default total-latency SLO.")

    @model_validator(mode="after")
    def _check(self) -> GridTenant:
        for j in self.jurisdictions:
            if j != ANYWHERE and not re.match(_CODE, j):
                raise ValueError(f"jurisdiction {j!r} must be 1 to 64 of [A-Za-z0-9._:-] or '*'")
        if self.total_ms < self.ttft_ms:
            raise ValueError(f"total_ms ({self.total_ms}) must be >= ttft_ms ({self.ttft_ms})")
        return self

    def allows(self, jurisdiction: str) -> bool:
        """Whether the residency rule allows processing in ``jurisdiction``."""
        return ANYWHERE in self.jurisdictions or jurisdiction in self.jurisdictions


class GridPolicy(CheckedModel):
    """The router's policy: its tenants and the grid-wide knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "policy"

    tenants: dict[str, GridTenant] = Field(..., min_length=1)
    min_deadline_met_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="A site whose radio met fewer deadlines is skipped."
    )
    radio_holdoff_s: float = Field(
        2.0, ge=0.0, le=3600.0, description="...and stays skipped this long after a miss."
    )
    stale_after_s: float = Field(
        1.0, gt=0.0, le=3600.0, description="No KPM report this long: the site is unhealthy."
    )
    miss_penalty: float = Field(
        10.0, ge=0.0, le=1e6, description="Added to the score of a site predicted to miss D."
    )
    max_failovers: int = Field(3, ge=0, le=64, description="Moves of one request at most.")

    @model_validator(mode="after")
    def _names(self) -> GridPolicy:
        for name in self.tenants:
            if not re.fullmatch(TENANT_NAME, name):
                raise ValueError(f"tenant name {name!r} must be 1 to 64 of [A-Za-z0-9._:-]")
        return self


class SiteFacts(CheckedModel):
    """What the router knows of a site before it reports anything (static facts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "site"

    site_id: str = Field(..., pattern=_CODE)
    target: str = Field(..., min_length=3, max_length=256, description="host:port")
    jurisdiction: str = Field(..., pattern=_CODE)
    region: str = Field("", max_length=64)
    latency_ms: dict[str, float] = Field(
        default_factory=dict, description="Network round trip from each user area (ms)."
    )
    power_budget_w: float = Field(1000.0, gt=0.0, le=1e9)
    device_power_w: float = Field(300.0, ge=0.0, le=1e9, description="Device draw when busy.")
    idle_power_w: float = Field(100.0, ge=0.0, le=1e9, description="Site draw when idle.")
    energy_price_per_kwh: float = Field(0.2, ge=0.0, le=1e6)
    max_inflight: int = Field(32, ge=1, le=1_000_000)
    step_ms: float = Field(
        0.0, ge=0.0, le=1e6, description="Device ms per decode step (0: from the node)."
    )
    max_batch: int = Field(0, ge=0, le=65_536, description="0: from the node.")

    @model_validator(mode="after")
    def _latencies(self) -> SiteFacts:
        for area, ms in self.latency_ms.items():
            if not re.match(_CODE, area):
                raise ValueError(f"user area {area!r} must be 1 to 64 of [A-Za-z0-9._:-]")
            if not (math.isfinite(ms) and ms >= 0):
                raise ValueError(f"latency_ms[{area!r}] must be a finite number >= 0")
        return self


@dataclass(slots=True)
class LiveFacts:
    """What a site's KPM reports (and the router's own bookkeeping) say now."""

    healthy: bool = False
    reason: str = "no KPM report yet"
    radio_busy: float = 0.0
    ai_busy: float = 0.0
    ai_capacity: float = 1.0  # airan.Infer.AiCapacity
    ai_slack_ms_per_s: float = 0.0
    queue_depth: int = 0
    tokens_per_s: float = 0.0
    deadline_met_ratio: float = 1.0
    device_us_per_token: float = -1.0  # measured; -1: unknown
    since_miss_s: float = math.inf  # seconds since the last report with a radio miss
    lag_ms: float = 0.0  # airan.Infer.PacingLagMs
    inflight: int = 0  # requests the router has running there
    step_ms: float = 0.0  # from the node's status (cost model), if SiteFacts has none
    max_batch: int = 0


@dataclass(frozen=True, slots=True)
class SiteView:
    """A site as :func:`place` sees it: static and live facts together."""

    facts: SiteFacts
    live: LiveFacts

    @property
    def site_id(self) -> str:
        return self.facts.site_id

    @property
    def step_ms(self) -> float:
        return self.facts.step_ms or self.live.step_ms

    @property
    def batch(self) -> int:
        return max(1, self.facts.max_batch or self.live.max_batch or 1)

    @property
    def load(self) -> int:
        """``k_s``: requests already there (the router's, or the node's if more)."""
        return max(self.live.inflight, self.live.queue_depth)

    def device_us_per_token(self) -> float:
        """``c_s``: measured if known, else a full batch's step shared by its rows."""
        if self.live.device_us_per_token > 0:
            return self.live.device_us_per_token
        return self.step_ms * 1000.0 / self.batch

    def headroom(self) -> float:
        """``H_s``."""
        f = self.facts
        draw = f.idle_power_w + f.device_power_w * (self.live.radio_busy + self.live.ai_busy)
        return min(1.0, max(0.0, 1.0 - draw / f.power_budget_w))


@dataclass(frozen=True, slots=True)
class Demand:
    """A request as placement sees it (deadline and cap already defaulted)."""

    tenant: str
    prompt_tokens: int
    new_tokens: int  # still to generate (after a resume point)
    user_area: str
    deadline_ms: float  # D
    cost_cap: float | None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A site that passed the filters, with its predictions and score."""

    site: str
    latency_ms: float
    cost: float
    headroom: float
    score: float
    terms: tuple[float, float, float, float]  # latency, cost, power, miss penalty


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of :func:`place`: the chosen site (``None``: none left), every
    candidate by rank, and each filtered site with its reason."""

    chosen: str | None
    candidates: tuple[Candidate, ...]
    filtered: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def reasons(self) -> set[str]:
        """The filter codes that removed sites."""
        return {r.split(":", 1)[0] for r in self.filtered.values()}


class Refused(FieldError):
    """A request refused before any site is touched: ``status`` (a gRPC status name),
    ``refusal`` (``unknown-tenant``, ``residency``, ``cost-cap``, ``bad-request``)."""

    def __init__(self, status: str, refusal: str, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.status = status
        self.refusal = refusal


# ----------------------------------------------------------------------------- formulas


def predicted_latency_ms(s: SiteView, d: Demand) -> float:
    """``L_s`` (``inf`` when the site has no AI capacity or no step time yet)."""
    rtt = s.facts.latency_ms.get(d.user_area, math.inf)
    cap = s.live.ai_capacity
    step = s.step_ms
    if cap <= 0 or step <= 0:
        return math.inf
    waves = math.ceil((s.load + 1) / s.batch)
    return rtt + s.live.lag_ms + d.new_tokens * step / cap * waves


def predicted_cost(s: SiteView, d: Demand) -> float:
    """``C_s``: energy cost of the request's tokens at the site (currency)."""
    f = s.facts
    joules = (d.prompt_tokens + d.new_tokens) * s.device_us_per_token() * 1e-6 * f.device_power_w
    return joules * f.energy_price_per_kwh / J_PER_KWH


def score(s: SiteView, d: Demand, tenant: GridTenant, policy: GridPolicy) -> Candidate:
    """The site's :class:`Candidate` (see the module docstring for the formula)."""
    lat = predicted_latency_ms(s, d)
    cost = predicted_cost(s, d)
    head = s.headroom()
    w = tenant.weights
    cref = d.cost_cap if d.cost_cap else tenant.cost_ref
    t_lat = w.latency * lat / d.deadline_ms
    t_cost = w.cost * cost / cref
    t_pow = w.power * (1.0 - head)
    t_miss = policy.miss_penalty if lat > d.deadline_ms else 0.0
    total = t_lat + t_cost + t_pow + t_miss
    return Candidate(s.site_id, lat, cost, head, total, (t_lat, t_cost, t_pow, t_miss))


def filter_reason(s: SiteView, d: Demand, tenant: GridTenant, policy: GridPolicy) -> str | None:
    """The first hard filter the site fails, as ``"code: detail"``; ``None`` if none."""
    f, live = s.facts, s.live
    if not tenant.allows(f.jurisdiction):
        return (
            f"residency: jurisdiction {f.jurisdiction} is not one tenant {d.tenant} allows "
            f"({', '.join(tenant.jurisdictions)})"
        )
    if d.user_area not in f.latency_ms:
        return f"no-route: no latency known from user area {d.user_area!r}"
    if f.site_id in d.exclude:
        return "excluded: it failed this request already"
    if not live.healthy:
        return f"unhealthy: {live.reason}"
    if live.deadline_met_ratio < policy.min_deadline_met_ratio:
        return (
            f"radio: its radio met {live.deadline_met_ratio:.6f} of its deadlines "
            f"(< {policy.min_deadline_met_ratio})"
        )
    if live.since_miss_s < policy.radio_holdoff_s:
        return (
            f"radio: its radio missed a deadline {live.since_miss_s:.2f} s ago "
            f"(hold-off {policy.radio_holdoff_s} s)"
        )
    if s.headroom() <= 0.0:
        return "power: no power headroom under its budget"
    if s.load >= f.max_inflight:
        return f"full: {s.load} requests there (max_inflight {f.max_inflight})"
    cap = d.cost_cap
    if cap is not None:
        c = predicted_cost(s, d)
        if c > cap:
            return f"cost-cap: predicted cost {c:.6g} over the cap {cap:.6g}"
    return None


def demand(
    policy: GridPolicy,
    tenant: str,
    prompt_tokens: int,
    new_tokens: int,
    user_area: str,
    total_ms: float = 0.0,
    cost_cap: float | None = None,
    exclude: Iterable[str] = (),
) -> Demand:
    """A :class:`Demand` with the tenant's defaults: ``D`` = the request's total
    deadline or the tenant's; the cap = the tighter of the request's and the tenant's."""
    t = policy.tenants.get(tenant)
    if t is None:
        raise Refused(
            "INVALID_ARGUMENT",
            "unknown-tenant",
            "tenant",
            f"unknown tenant {tenant!r}; the grid serves {', '.join(sorted(policy.tenants))}",
        )
    caps = [c for c in (cost_cap, t.cost_cap) if c is not None]
    return Demand(
        tenant,
        prompt_tokens,
        new_tokens,
        user_area,
        total_ms if total_ms > 0 else t.total_ms,
        min(caps) if caps else None,
        frozenset(exclude),
    )


def precheck(d: Demand, policy: GridPolicy, sites: Sequence[SiteView]) -> None:
    """Refuse what no site could ever serve, before any is touched: no site in a
    jurisdiction the tenant allows (``FAILED_PRECONDITION``, ``residency``), none of
    those reachable from the user area (``FAILED_PRECONDITION``, ``residency``), or the
    request's predicted cost over its cap at every one of them (``PERMISSION_DENIED``,
    ``cost-cap``). The tenant is known (see :func:`demand`)."""
    tenant = policy.tenants[d.tenant]
    allowed = [s for s in sites if tenant.allows(s.facts.jurisdiction)]
    if not allowed:
        known = sorted({s.facts.jurisdiction for s in sites})
        raise Refused(
            "FAILED_PRECONDITION",
            "residency",
            "tenant",
            f"tenant {d.tenant} may only be served in {', '.join(tenant.jurisdictions)}, and the "
            f"grid has no site there (sites are in {', '.join(known) or 'no jurisdiction'})",
        )
    routed = [s for s in allowed if d.user_area in s.facts.latency_ms]
    if not routed:
        raise Refused(
            "FAILED_PRECONDITION",
            "residency",
            "user_area",
            f"no site where tenant {d.tenant} may be served is reachable from user area "
            f"{d.user_area!r}",
        )
    if d.cost_cap is not None:
        cheapest = min(predicted_cost(s, d) for s in routed)
        if cheapest > d.cost_cap:
            raise Refused(
                "PERMISSION_DENIED",
                "cost-cap",
                "cost_cap",
                f"the request would cost at least {cheapest:.6g} at any site it may use, over "
                f"its cap of {d.cost_cap:.6g}",
            )


def place(d: Demand, policy: GridPolicy, sites: Sequence[SiteView]) -> Placement:
    """Filter, score and rank the sites for ``d`` (see the module docstring)."""
    tenant = policy.tenants[d.tenant]
    filtered: dict[str, str] = {}
    cands: list[Candidate] = []
    for s in sites:
        why = filter_reason(s, d, tenant, policy)
        if why is not None:
            filtered[s.site_id] = why
        else:
            cands.append(score(s, d, tenant, policy))
    cands.sort(key=lambda c: (c.score, c.latency_ms, c.site))
    return Placement(cands[0].site if cands else None, tuple(cands), filtered)


def views(facts: Mapping[str, SiteFacts], live: Mapping[str, LiveFacts]) -> list[SiteView]:
    """Site views in site-id order (live facts default to "no report yet")."""
    return [SiteView(facts[k], live.get(k, LiveFacts())) for k in sorted(facts)]


# ----------------------------------------------------------------------------- baselines

#: the filters the baselines apply: what any router must (law, reachability, liveness)
BASELINE_FILTERS: tuple[str, ...] = ("residency", "no-route", "excluded", "unhealthy")


def _baseline_filtered(
    d: Demand, policy: GridPolicy, sites: Sequence[SiteView]
) -> tuple[list[SiteView], dict[str, str]]:
    tenant = policy.tenants[d.tenant]
    keep: list[SiteView] = []
    filtered: dict[str, str] = {}
    for s in sites:
        why = filter_reason(s, d, tenant, policy)
        if why is not None and why.split(":", 1)[0] in BASELINE_FILTERS:
            filtered[s.site_id] = why
        else:
            keep.append(s)
    return keep, filtered


def place_round_robin(
    d: Demand, policy: GridPolicy, sites: Sequence[SiteView], turn: int
) -> Placement:
    """Baseline: the ``turn``-th eligible site in rotation (only the
    :data:`BASELINE_FILTERS` apply; no load, radio, power or cost awareness)."""
    keep, filtered = _baseline_filtered(d, policy, sites)
    if not keep:
        return Placement(None, (), filtered)
    tenant = policy.tenants[d.tenant]
    ranked = keep[turn % len(keep) :] + keep[: turn % len(keep)]
    return Placement(
        ranked[0].site_id, tuple(score(s, d, tenant, policy) for s in ranked), filtered
    )


def place_nearest(d: Demand, policy: GridPolicy, sites: Sequence[SiteView]) -> Placement:
    """Baseline: the eligible site with the shortest network round trip from the user
    area (only the :data:`BASELINE_FILTERS` apply)."""
    keep, filtered = _baseline_filtered(d, policy, sites)
    tenant = policy.tenants[d.tenant]
    keep.sort(key=lambda s: (s.facts.latency_ms[d.user_area], s.site_id))
    return Placement(
        keep[0].site_id if keep else None,
        tuple(score(s, d, tenant, policy) for s in keep),
        filtered,
    )
