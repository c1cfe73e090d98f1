"""The sites the grid's router knows: static facts, and live facts from each site's KPM.

For every site the registry keeps an E2 KPM subscription (E2SM-KPM REPORT style 1,
O-RAN.WG3.E2SM-KPM §7.4.1, through :class:`airan.ric.xapp.AsyncE2Client`) to the
co-scheduling and inference measurements it routes by, and an inference client. All of
it runs on the router's asyncio loop; nothing here blocks.

Health. A site is healthy when its last KPM report is fresher than the policy's
``stale_after_s``, says the node's loop runs (``airan.Infer.Healthy``), its model is the
grid's (the digest of its ``GetStatus`` equals the first site's), and no call to it
failed within ``error_holdoff_s``. A subscription that ends or fails marks the site down
at once and is retried every ``retry_s``; a site that stops reporting is marked down by
the staleness check. Either way ``on_down(site, reason)`` is called, so that the router
moves the requests running there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from airan.core.errors import FieldError
from airan.grid.score import LiveFacts, SiteFacts, SiteView
from airan.ric.inference import AsyncInferenceClient, InferenceError
from airan.ric.xapp import AsyncE2Client, AsyncKpmSubscription, E2Error, KpmReport

__all__ = ["KPM_MEASUREMENTS", "Registry", "SiteState"]

log = logging.getLogger(__name__)

#: what the router subscribes to on every site
KPM_MEASUREMENTS: tuple[str, ...] = (
    "airan.RadioBusy",
    "airan.AiBusy",
    "airan.DeadlineMetRatio",
    "airan.RadioMisses",
    "airan.AiTokensPerS",
    "airan.Infer.QueueDepth",
    "airan.Infer.AiCapacity",
    "airan.Infer.AiSlackMsPerS",
    "airan.Infer.DeviceUsPerToken",
    "airan.Infer.Healthy",
    "airan.Infer.PacingLagMs",
)


@dataclass(eq=False)
class SiteState:
    """One site: facts, live facts, connection state."""

    facts: SiteFacts
    live: LiveFacts = field(default_factory=LiveFacts)
    last_report: float = -math.inf  # time.monotonic() of the last KPM report
    up_since: float = -math.inf  # ... when the current subscription was admitted
    last_miss: float = -math.inf  # ... of the last report with a radio miss
    error: str = ""
    error_at: float = -math.inf
    down: str = "no KPM report yet"  # why the subscription is not up ("" when up)
    digest: str = ""
    vocab_size: int = 0
    max_context: int = 0
    reports: int = 0
    max_lag_ms: float = 0.0  # the largest pacing lag its simulated device reported
    dev_us_sum: float = 0.0  # decayed sums behind live.device_us_per_token
    tokens_sum: float = 0.0
    placed: int = 0  # requests placed here (first attempts and failovers)
    client: AsyncInferenceClient | None = None
    e2: AsyncE2Client | None = None
    sub: AsyncKpmSubscription | None = None
    task: asyncio.Task[None] | None = None

    @property
    def site_id(self) -> str:
        return self.facts.site_id


class Registry:
    """The router's sites (see the module docstring). Use on one asyncio loop:
    ``await start()``, ``views()``, ``mark_error()``, ``await stop()``."""

    def __init__(
        self,
        sites: Sequence[SiteFacts],
        *,
        kpm_period_ms: int = 100,
        stale_after_s: float = 1.0,
        error_holdoff_s: float = 2.0,
        retry_s: float = 0.5,
        on_down: Callable[[str, str], None] | None = None,
    ) -> None:
        if not sites:
            raise FieldError("sites", "name at least one site")
        ids = [s.site_id for s in sites]
        if len(set(ids)) != len(ids):
            raise FieldError("sites", f"site ids must be distinct, got {ids}")
        if not 1 <= kpm_period_ms <= 60_000:
            raise FieldError("kpm_period_ms", f"must be in [1, 60000], got {kpm_period_ms}")
        self.sites: dict[str, SiteState] = {s.site_id: SiteState(s) for s in sites}
        self.kpm_period_ms = kpm_period_ms
        self.stale_after_s = stale_after_s
        self.error_holdoff_s = error_holdoff_s
        self.retry_s = retry_s
        self.on_down = on_down
        self.digest = ""
        self._checker: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifetime ----------------------------------------------------------------------
    async def start(self) -> None:
        for st in self.sites.values():
            st.client = AsyncInferenceClient(st.facts.target)
            st.e2 = AsyncE2Client(st.facts.target, timeout_s=2.0)
            st.task = asyncio.get_running_loop().create_task(self._watch(st))
        self._checker = asyncio.get_running_loop().create_task(self._check_stale())

    async def stop(self) -> None:
        self._closed = True
        tasks = [t for t in [self._checker, *(s.task for s in self.sites.values())] if t]
        for st in self.sites.values():
            if st.sub is not None:
                st.sub.cancel()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for st in self.sites.values():
            if st.client is not None:
                await st.client.close()
            if st.e2 is not None:
                await st.e2.close()

    async def wait_ready(self, timeout_s: float = 30.0, sites: int | None = None) -> None:
        """Until ``sites`` (default: all) are healthy; :class:`TimeoutError` otherwise."""
        want = len(self.sites) if sites is None else sites
        end = time.monotonic() + timeout_s
        while sum(1 for v in self.views() if v.live.healthy) < want:
            if time.monotonic() > end:
                bad = {v.site_id: v.live.reason for v in self.views() if not v.live.healthy}
                raise TimeoutError(f"sites not ready after {timeout_s} s: {bad}")
            await asyncio.sleep(0.02)

    # -- watching ----------------------------------------------------------------------
    async def _watch(self, st: SiteState) -> None:
        assert st.client is not None and st.e2 is not None
        while not self._closed:
            try:
                status = await st.client.status(timeout_s=2.0)
                if not self.digest:
                    self.digest = status.model_digest
                st.digest = status.model_digest
                st.vocab_size, st.max_context = status.vocab_size, status.max_context
                st.live.max_batch = status.max_batch
                st.live.step_ms = status.device_us_per_token * status.max_batch / 1000.0
                if st.digest != self.digest:
                    self._set_down(st, f"its model ({st.digest[:12]}) is not the grid's")
                    await asyncio.sleep(self.retry_s * 10)
                    continue
                st.sub = await st.e2.kpm.subscribe(KPM_MEASUREMENTS, period_ms=self.kpm_period_ms)
                st.up_since = time.monotonic()
                st.last_report = -math.inf
                st.down = ""
                async for report in st.sub:
                    self._update(st, report)
                ended = st.sub.ended
                reason = f"KPM subscription ended ({ended.reason})" if ended else "KPM stream ended"
                self._set_down(st, reason)
            except asyncio.CancelledError:
                raise
            except (E2Error, InferenceError) as exc:
                self._set_down(st, f"unreachable ({exc.code.name})")
            except Exception as exc:  # a watcher never dies: it reports and retries
                self._set_down(st, f"{type(exc).__name__}: {exc}")
            finally:
                st.sub = None
            await asyncio.sleep(self.retry_s)

    def _update(self, st: SiteState, r: KpmReport) -> None:
        v = r.values
        live = st.live
        now = time.monotonic()
        st.last_report = now
        st.reports += 1
        live.lag_ms = v.get("airan.Infer.PacingLagMs", 0.0)
        st.max_lag_ms = max(st.max_lag_ms, live.lag_ms)
        live.radio_busy = v.get("airan.RadioBusy", 0.0)
        live.ai_busy = v.get("airan.AiBusy", 0.0)
        live.deadline_met_ratio = v.get("airan.DeadlineMetRatio", 1.0)
        live.tokens_per_s = v.get("airan.AiTokensPerS", 0.0)
        live.queue_depth = int(v.get("airan.Infer.QueueDepth", 0.0))
        live.ai_capacity = v.get("airan.Infer.AiCapacity", 1.0)
        live.ai_slack_ms_per_s = v.get("airan.Infer.AiSlackMsPerS", 0.0)
        per_token = v.get("airan.Infer.DeviceUsPerToken", -1.0)
        tokens = live.tokens_per_s * r.granularity_ms / 1000.0
        if per_token > 0 and tokens > 0:
            # device time over tokens, both decayed by 0.9 per report: periods count by
            # their tokens, so a period of prefill with one token cannot swing it
            st.dev_us_sum = 0.9 * st.dev_us_sum + per_token * tokens
            st.tokens_sum = 0.9 * st.tokens_sum + tokens
            live.device_us_per_token = st.dev_us_sum / st.tokens_sum
        if v.get("airan.RadioMisses", 0.0) > 0 or live.deadline_met_ratio < 1.0:
            st.last_miss = now
        st.down = "" if v.get("airan.Infer.Healthy", 1.0) >= 1.0 else "its node reports unhealthy"

    def _set_down(self, st: SiteState, reason: str) -> None:
        was_up = not st.down
        st.down = reason
        if was_up and self.on_down is not None:
            self.on_down(st.site_id, reason)

    async def _check_stale(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(0.05, self.stale_after_s / 4))
            now = time.monotonic()
            for st in self.sites.values():
                last = max(st.last_report, st.up_since)
                if not st.down and now - last > self.stale_after_s:
                    self._set_down(st, f"no KPM report for {now - last:.2f} s")
                    if st.sub is not None:  # resubscribe: the watcher loop goes on
                        st.sub.cancel()

    # -- what the router uses --------------------------------------------------------
    def mark_error(self, site: str, reason: str) -> None:
        """A call to ``site`` failed: unhealthy for ``error_holdoff_s`` at least."""
        st = self.sites[site]
        st.error = reason
        st.error_at = time.monotonic()

    def health(self, st: SiteState, now: float) -> str:
        """Why the site is unhealthy now ("" when healthy)."""
        if st.down:
            return st.down
        if st.last_report < st.up_since:
            return "no KPM report yet"
        if now - st.last_report > self.stale_after_s:
            return f"no KPM report for {now - st.last_report:.2f} s"
        if now - st.error_at < self.error_holdoff_s:
            return f"a call failed {now - st.error_at:.2f} s ago ({st.error})"
        return ""

    def views(self) -> list[SiteView]:
        """Every site's facts now, in site-id order (live facts are the same objects the
        registry updates: read them at once)."""
        now = time.monotonic()
        out = []
        for k in sorted(self.sites):
            st = self.sites[k]
            why = self.health(st, now)
            st.live.healthy = not why
            st.live.reason = why
            st.live.since_miss_s = now - st.last_miss
            out.append(SiteView(st.facts, st.live))
        return out

    def model_limits(self) -> tuple[int, int]:
        """(vocab size, context) the sites agree on so far (0, 0 before any status)."""
        known = [s for s in self.sites.values() if s.vocab_size and s.digest == self.digest]
        if not known:
            return 0, 0
        return min(s.vocab_size for s in known), min(s.max_context for s in known)
