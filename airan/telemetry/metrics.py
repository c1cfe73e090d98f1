"""Prometheus metrics of a live node: a collector that reads the node's cumulative
counters when Prometheus scrapes, and the HTTP server that answers the scrape.

Nothing is counted twice and nothing runs in the radio loop: the arbiter, the MAC and
the AI engines keep the counters they always keep (:meth:`Arbiter.counters`,
:meth:`DuWorkload.counters`, the jobs' and tenants' tallies), and
:class:`NodeCollector` turns them into metric families at scrape time, in the
Prometheus text exposition format (or OpenMetrics when the scraper asks for it), with
the naming conventions of https://prometheus.io/docs/practices/naming/: an ``airan_``
prefix, base units (``_seconds``, ``_bits``), ``_total`` on counters, ``_ratio`` on
ratios.

:data:`SERIES` lists every family the collector exports, with its type, unit, labels
and when it is present; ``docs/serve.md`` documents the same list, and the tests check
that the live endpoint, the documentation and the Grafana dashboard
(``docs/grafana/airan-node.json``) agree with it.

The radio slack histogram comes from the arbiter's slack buckets (10 µs wide, a miss
counted at 0): bucket ``le`` counts the radio tasks that finished with a slack below
``le`` seconds. Only the buckets are exported: the arbiter keeps buckets, not the sum of
slacks, and ``prometheus_client`` writes ``_count`` only with a ``_sum``; use
``histogram_quantile`` on the buckets, and the ``+Inf`` bucket as the count.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from airan.core.errors import FieldError
from airan.sched.arbiter import SLACK_BUCKET_NS, SLACK_BUCKETS

if TYPE_CHECKING:
    from airan.node import Node
    from airan.ric.e2 import E2Agent
    from airan.ric.o1 import O1Service

__all__ = [
    "SERIES",
    "SLACK_BOUNDS_S",
    "MetricsServer",
    "NodeCollector",
    "Series",
    "node_registry",
    "series_names",
]

SeriesType = Literal["counter", "gauge", "histogram", "info"]


@dataclass(frozen=True, slots=True)
class Series:
    """One exported metric family: ``name`` as queried (counters end in ``_total``;
    a histogram's samples are ``name_bucket`` and ``name_count``; an info family's one
    sample is ``name`` with value 1), its type, unit, labels, meaning, and when it is
    present (empty: always). The slack histogram exports its buckets only (no ``_sum``,
    hence no ``_count``: the ``+Inf`` bucket is the count)."""

    name: str
    type: SeriesType
    unit: str
    labels: tuple[str, ...]
    help: str
    when: str = ""

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names this family exposes."""
        if self.type == "histogram":
            return (f"{self.name}_bucket",)
        return (self.name,)


_E2 = "when E2 is served"
_O1 = "when O1 is served"
_LLM = "for transformer tenants"

#: every family the collector exports (the documented contract of the endpoint)
SERIES: tuple[Series, ...] = (
    # -- the node ---------------------------------------------------------------------
    Series("airan_node_info", "info", "", ("node_id", "backend", "device", "version"),
           "The node: its id, backend, device and airan version (value 1)."),
    Series("airan_node_running", "gauge", "", (),
           "1 while the node's arbiter loop runs, 0 once it stopped or died."),
    Series("airan_node_faults", "gauge", "", (),
           "Faults recorded by the node (executor errors, failed AI jobs; last 256)."),
    Series("airan_node_run_seconds_total", "counter", "seconds", (),
           "Time the arbiter loop has run (the denominator of every ratio)."),
    # -- radio ------------------------------------------------------------------------
    Series("airan_radio_tasks_total", "counter", "", (),
           "Radio tasks ended (completed or dropped as late)."),
    Series("airan_radio_deadline_misses_total", "counter", "", (),
           "Radio tasks that ended after their deadline, dropped ones included."),
    Series("airan_radio_dropped_total", "counter", "", (),
           "Radio tasks dropped because their deadline passed before their next slice."),
    Series("airan_radio_slack_seconds", "histogram", "seconds", ("le",),
           "Slack of ended radio tasks (deadline minus completion; a miss counts as 0), "
           "10 µs resolution. Buckets only (no _sum or _count): use histogram_quantile, "
           "and the +Inf bucket as the count."),
    Series("airan_radio_busy_seconds_total", "counter", "seconds", (),
           "Device time used by radio slices."),
    # -- AI ---------------------------------------------------------------------------
    Series("airan_ai_busy_seconds_total", "counter", "seconds", (),
           "Device time used by AI slices."),
    Series("airan_ai_slices_total", "counter", "", (), "AI slices run."),
    Series("airan_ai_tokens_total", "counter", "", (), "Tokens the AI tenants produced."),
    Series("airan_ai_overruns_total", "counter", "", (),
           "AI slices that ran longer than their admitted budget (prediction plus guard)."),
    Series("airan_ai_refused_oversize_total", "counter", "", (),
           "Decisions at which an AI slice was refused: predicted over max_ai_slice_us."),
    Series("airan_ai_probes_total", "counter", "", (),
           "Refused slice kinds re-measured where no radio work could be delayed."),
    Series("airan_ai_failed_jobs", "gauge", "", (),
           "AI jobs that failed (isolated from the radio and the other jobs)."),
    # -- per tenant -------------------------------------------------------------------
    Series("airan_tenant_busy_seconds_total", "counter", "seconds", ("tenant",),
           "Device time used by the tenant's AI slices."),
    Series("airan_tenant_tokens_total", "counter", "", ("tenant",),
           "Tokens the tenant produced."),
    Series("airan_tenant_slices_total", "counter", "", ("tenant",), "AI slices of the tenant."),
    Series("airan_tenant_throttled_total", "counter", "", ("tenant",),
           "Decisions at which the tenant's quota held it back."),
    Series("airan_tenant_weight", "gauge", "", ("tenant",),
           "The tenant's weight in the weighted fair sharing of AI time."),
    Series("airan_tenant_quota_ratio", "gauge", "", ("tenant",),
           "The tenant's quota as a share of device time (quota_us_per_s / 1e6); 0: none."),
    Series("airan_tenant_paused", "gauge", "", ("tenant",), "1 if the tenant is paused."),
    Series("airan_tenant_requests_total", "counter", "", ("tenant",),
           "Inference requests the tenant completed.", _LLM),
    Series("airan_tenant_requests_active", "gauge", "", ("tenant",),
           "Requests in the tenant's running batch.", _LLM),
    Series("airan_tenant_requests_waiting", "gauge", "", ("tenant",),
           "Requests queued for a place in the batch.", _LLM),
    # -- policy knobs -----------------------------------------------------------------
    Series("airan_policy_info", "info", "", ("name",),
           "The sharing strategy in effect (value 1)."),
    Series("airan_policy_guard_seconds", "gauge", "seconds", (),
           "Margin added to every predicted AI slice (guard_us)."),
    Series("airan_policy_max_ai_slice_seconds", "gauge", "seconds", (),
           "Largest AI slice the arbiter issues (max_ai_slice_us)."),
    Series("airan_policy_ai_share_cap_ratio", "gauge", "", (),
           "Largest share of device time AI may use (ai_share_cap)."),
    Series("airan_policy_share_window_seconds", "gauge", "seconds", (),
           "Burst allowance of the AI share cap (share_window_us)."),
    Series("airan_policy_lookahead_seconds", "gauge", "seconds", (),
           "Horizon of announced radio work an AI slice must leave intact (lookahead_us)."),
    Series("airan_policy_tdm_period_seconds", "gauge", "seconds", (),
           "TDM frame length (tdm_period_us)."),
    Series("airan_policy_tdm_radio_share_ratio", "gauge", "", (),
           "Share of each TDM frame reserved for the radio (tdm_radio_share)."),
    Series("airan_policy_fifo_depth", "gauge", "", (),
           "AI slices the fifo baseline keeps queued (fifo_depth)."),
    # -- the DU: L2 (MAC) and L1 ------------------------------------------------------
    Series("airan_l2_last_message_age_seconds", "gauge", "seconds", (),
           "Time since the L2's last slot request (the MAC's last scheduling decision).",
           "once the MAC has scheduled a slot"),
    Series("airan_mac_slots_total", "counter", "", ("cell",), "Slots the cell's MAC scheduled."),
    Series("airan_mac_delivered_bits_total", "counter", "bits", ("cell", "direction"),
           "Payload acknowledged by HARQ (direction dl or ul)."),
    Series("airan_mac_prb_used_total", "counter", "", ("cell", "direction"),
           "PRB-slots allocated (new transmissions and retransmissions)."),
    Series("airan_mac_prb_available_total", "counter", "", ("cell", "direction"),
           "PRB-slots of the carrier (the denominator of PRB utilisation)."),
    Series("airan_mac_transport_blocks_total", "counter", "", ("cell", "direction", "kind"),
           "Transport blocks sent (kind new or retx)."),
    Series("airan_mac_harq_nacks_total", "counter", "", ("cell", "direction"),
           "HARQ negative acknowledgements."),
    Series("airan_mac_harq_drops_total", "counter", "", ("cell", "direction"),
           "Transport blocks abandoned after their last transmission."),
    Series("airan_l1_crc_ok_total", "counter", "", (),
           "Uplink transport blocks the L1 decoded with a good CRC."),
    Series("airan_l1_crc_checked_total", "counter", "", (),
           "Uplink transport blocks the L1 decoded (CRC checked)."),
    Series("airan_fapi_messages_total", "counter", "", ("endpoint", "counter"),
           "The FAPI L1 endpoints' counters (messages by type, late, rejected, lost).",
           "with a FAPI DU (MACs in their own processes)"),
    # -- E2 and O1 --------------------------------------------------------------------
    Series("airan_e2_subscriptions", "gauge", "", (), "Active E2 subscriptions.", _E2),
    Series("airan_e2_subscription_overflows_total", "counter", "", (),
           "E2 subscriptions ended because the subscriber fell behind.", _E2),
    Series("airan_o1_active_alarms", "gauge", "", (), "Active O1 alarms.", _O1),
    Series("airan_o1_alarm_active", "gauge", "", ("condition", "severity"),
           "1 for each active O1 alarm (absent when none is active).", _O1),
    Series("airan_o1_event_subscribers", "gauge", "", (), "O1 event stream subscribers.", _O1),
    Series("airan_o1_events_published_total", "counter", "", (),
           "VES events the O1 service published.", _O1),
    Series("airan_o1_config_revision", "gauge", "", (),
           "Revision of the node's configuration as O1 persists it.", _O1),
    # -- the process ------------------------------------------------------------------
    Series("airan_process_threads", "gauge", "", (),
           "OS threads of the node's process (for soak runs: should stay flat)."),
)  # fmt: skip

#: the ``le`` bounds (seconds) of the exported slack histogram; each is a boundary of
#: the arbiter's 10 µs buckets
SLACK_BOUNDS_S: tuple[float, ...] = (
    10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 750e-6,
    1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3,
)  # fmt: skip


def _cuts(bounds: tuple[float, ...]) -> tuple[int, ...]:
    """The arbiter's bucket ``i`` counts slacks in ``[i, i+1) x 10 µs``: bound ``b``
    closes the buckets below index ``b / 10 µs``. Each bound must be a bucket boundary
    inside the arbiter's range (the last bucket holds every larger slack)."""
    out = []
    for b in bounds:
        ns = round(b * 1e9)
        cut, rest = divmod(ns, SLACK_BUCKET_NS)
        if rest or not 0 < cut < SLACK_BUCKETS:
            raise ValueError(f"slack bound {b} s is not a boundary of the arbiter's buckets")
        out.append(cut)
    return tuple(out)


_SLACK_CUTS = _cuts(SLACK_BOUNDS_S)


def series_names() -> set[str]:
    """Every sample name the collector may export."""
    return {name for s in SERIES for name in s.samples}


def _slack_buckets(hist: tuple[int, ...]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of the slack histogram from the arbiter's
    buckets."""
    out: list[tuple[str, float]] = []
    cum = 0
    prev = 0
    for bound, cut in zip(SLACK_BOUNDS_S, _SLACK_CUTS, strict=True):
        cum += sum(hist[prev:cut])
        prev = cut
        out.append((repr(bound), float(cum)))
    cum += sum(hist[prev:])
    out.append(("+Inf", float(cum)))
    return out


def _os_threads() -> int:
    """OS threads of this process (``/proc/self/task``), or Python's count elsewhere."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class NodeCollector(Collector):
    """Reads ``node`` (and its E2 agent and O1 service, when served) at each scrape.

    ``info``: extra labels of ``airan_node_info`` values (``backend``, ``device``,
    ``version``). Safe to scrape from any thread while the node runs: it only reads
    the counters the node publishes for other threads."""

    def __init__(
        self,
        node: Node,
        *,
        e2: E2Agent | None = None,
        o1: O1Service | None = None,
        info: dict[str, str] | None = None,
    ) -> None:
        self.node = node
        self.e2 = e2
        self.o1 = o1
        self._info = dict(info or {})
        self._by_name = {s.name: s for s in SERIES}

    def describe(self) -> Iterable[Metric]:
        """The families (without samples), for the registry's duplicate check."""
        return [self._family(s.name) for s in SERIES]

    def _family(self, name: str, labels: tuple[str, ...] | None = None) -> Any:
        s = self._by_name[name]
        names = [x for x in (s.labels if labels is None else labels) if x != "le"]
        if s.type == "counter":
            return CounterMetricFamily(s.name, s.help, labels=names)
        if s.type == "gauge":
            return GaugeMetricFamily(s.name, s.help, labels=names)
        if s.type == "histogram":
            return HistogramMetricFamily(s.name, s.help, labels=names)
        return InfoMetricFamily(s.name.removesuffix("_info"), s.help, labels=names)

    def _one(self, name: str, value: float) -> Metric:
        fam = self._family(name)
        fam.add_metric([], value)
        return fam  # type: ignore[no-any-return]

    def collect(self) -> Iterator[Metric]:
        node = self.node
        arb = node.arbiter
        c = arb.counters()
        one = self._one
        # the node
        fam = self._family("airan_node_info")
        fam.add_metric(
            [],
            {
                "node_id": node.node_id,
                "backend": self._info.get("backend", arb.executor.backend),
                "device": self._info.get("device", arb.executor.device),
                "version": self._info.get("version", ""),
            },
        )
        yield fam
        health = node.health()
        yield one("airan_node_running", 1.0 if health.running else 0.0)
        yield one("airan_node_faults", float(len(health.faults)))
        yield one("airan_node_run_seconds_total", c.elapsed_ns / 1e9)
        # radio
        yield one("airan_radio_tasks_total", float(c.tasks))
        yield one("airan_radio_deadline_misses_total", float(c.misses))
        yield one("airan_radio_dropped_total", float(arb.dropped))
        hist = self._family("airan_radio_slack_seconds")
        hist.add_metric([], _slack_buckets(c.slack_hist), None)
        yield hist
        yield one("airan_radio_busy_seconds_total", c.radio_busy_ns / 1e9)
        # AI
        yield one("airan_ai_busy_seconds_total", c.ai_busy_ns / 1e9)
        yield one("airan_ai_slices_total", float(c.ai_slices))
        yield one("airan_ai_tokens_total", float(c.ai_tokens))
        yield one("airan_ai_overruns_total", float(arb.overruns))
        yield one("airan_ai_refused_oversize_total", float(arb.refused_oversize))
        yield one("airan_ai_probes_total", float(arb.probes))
        jobs = list(arb.jobs)
        yield one("airan_ai_failed_jobs", float(sum(1 for j in jobs if j.error is not None)))
        yield from self._tenants(jobs)
        yield from self._policy()
        yield from self._du()
        if self.e2 is not None:
            yield one("airan_e2_subscriptions", float(self.e2.active))
            yield one("airan_e2_subscription_overflows_total", float(self.e2.overflows))
        if self.o1 is not None:
            yield from self._o1(self.o1)
        yield one("airan_process_threads", float(_os_threads()))

    def _tenants(self, jobs: list[Any]) -> Iterator[Metric]:
        arb = self.node.arbiter
        states = dict(arb.tenants)  # one C-level copy: the loop may add tenants meanwhile
        busy: dict[str, int] = dict.fromkeys(states, 0)
        tokens: dict[str, int] = dict.fromkeys(states, 0)
        slices: dict[str, int] = dict.fromkeys(states, 0)
        for job in jobs:
            busy[job.tenant] = busy.get(job.tenant, 0) + job.busy_ns
            tokens[job.tenant] = tokens.get(job.tenant, 0) + job.tokens
            slices[job.tenant] = slices.get(job.tenant, 0) + job.slices_done
        families: dict[str, Any] = {
            n: self._family(n)
            for n in (
                "airan_tenant_busy_seconds_total",
                "airan_tenant_tokens_total",
                "airan_tenant_slices_total",
                "airan_tenant_throttled_total",
                "airan_tenant_weight",
                "airan_tenant_quota_ratio",
                "airan_tenant_paused",
            )
        }
        for name in sorted(busy):
            ts = states.get(name)
            families["airan_tenant_busy_seconds_total"].add_metric([name], busy[name] / 1e9)
            families["airan_tenant_tokens_total"].add_metric([name], float(tokens[name]))
            families["airan_tenant_slices_total"].add_metric([name], float(slices[name]))
            if ts is not None:
                families["airan_tenant_throttled_total"].add_metric([name], float(ts.throttled))
                families["airan_tenant_weight"].add_metric([name], float(ts.weight))
                families["airan_tenant_quota_ratio"].add_metric([name], float(ts.rate))
                families["airan_tenant_paused"].add_metric([name], 1.0 if ts.paused else 0.0)
        yield from families.values()
        engines = dict(self.node.engines)
        if engines:
            done = self._family("airan_tenant_requests_total")
            active = self._family("airan_tenant_requests_active")
            waiting = self._family("airan_tenant_requests_waiting")
            for name, engine in sorted(engines.items()):
                done.add_metric([name], float(engine.completed_total))
                active.add_metric([name], float(len(engine.active)))
                waiting.add_metric([name], float(len(engine.waiting)))
            yield from (done, active, waiting)

    def _policy(self) -> Iterator[Metric]:
        p = self.node.arbiter.policy  # the policy in effect (immutable)
        fam = self._family("airan_policy_info")
        fam.add_metric([], {"name": p.name})
        yield fam
        one = self._one
        yield one("airan_policy_guard_seconds", p.guard_us / 1e6)
        yield one("airan_policy_max_ai_slice_seconds", p.max_ai_slice_us / 1e6)
        yield one("airan_policy_ai_share_cap_ratio", p.ai_share_cap)
        yield one("airan_policy_share_window_seconds", p.share_window_us / 1e6)
        yield one("airan_policy_lookahead_seconds", p.lookahead_us / 1e6)
        yield one("airan_policy_tdm_period_seconds", p.tdm_period_us / 1e6)
        yield one("airan_policy_tdm_radio_share_ratio", p.tdm_radio_share)
        yield one("airan_policy_fifo_depth", float(p.fifo_depth))

    def _du(self) -> Iterator[Metric]:
        du = self.node.du
        last = du.last_l2_message_ns()
        if last is not None:
            age = max(0, time.perf_counter_ns() - last) / 1e9
            yield self._one("airan_l2_last_message_age_seconds", age)
        counters = du.counters()
        names = (
            "airan_mac_slots_total",
            "airan_mac_delivered_bits_total",
            "airan_mac_prb_used_total",
            "airan_mac_prb_available_total",
            "airan_mac_transport_blocks_total",
            "airan_mac_harq_nacks_total",
            "airan_mac_harq_drops_total",
        )
        fams: dict[str, Any] = {n: self._family(n) for n in names}
        for cell, mac in enumerate(counters.macs):
            cl = str(cell)
            fams["airan_mac_slots_total"].add_metric([cl], float(mac.slots))
            for d in ("dl", "ul"):
                dc = mac.direction(d)
                fams["airan_mac_delivered_bits_total"].add_metric(
                    [cl, d], float(dc.delivered_bits.sum())
                )
                fams["airan_mac_prb_used_total"].add_metric([cl, d], float(dc.prb_used.sum()))
                fams["airan_mac_prb_available_total"].add_metric([cl, d], float(dc.prb_avail))
                tbs = fams["airan_mac_transport_blocks_total"]
                tbs.add_metric([cl, d, "new"], float(dc.tb_new.sum()))
                tbs.add_metric([cl, d, "retx"], float(dc.tb_retx.sum()))
                fams["airan_mac_harq_nacks_total"].add_metric([cl, d], float(dc.nacks.sum()))
                fams["airan_mac_harq_drops_total"].add_metric([cl, d], float(dc.drops.sum()))
        yield from fams.values()
        yield self._one("airan_l1_crc_ok_total", float(counters.l1_crc_ok))
        yield self._one("airan_l1_crc_checked_total", float(counters.l1_crc_total))
        fapi = _fapi_counters(counters.fapi)
        if fapi:
            fam = self._family("airan_fapi_messages_total")
            for (endpoint, key), value in sorted(fapi.items()):
                fam.add_metric([endpoint, key], value)
            yield fam

    def _o1(self, o1: O1Service) -> Iterator[Metric]:
        alarms = o1.active_alarms()
        yield self._one("airan_o1_active_alarms", float(len(alarms)))
        if alarms:
            fam = self._family("airan_o1_alarm_active")
            for ev in alarms:
                f = ev.fault_fields
                fam.add_metric([f.alarm_condition, f.event_severity], 1.0)
            yield fam
        yield self._one("airan_o1_event_subscribers", float(o1.subscribers))
        yield self._one("airan_o1_events_published_total", float(o1.events_published))
        yield self._one("airan_o1_config_revision", float(o1.revision))


def _fapi_counters(fapi: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """``(endpoint, counter) -> value`` of a DU's FAPI counters: per L1 endpoint (a
    mapping of counters each) or flat (endpoint ``du``); ``{}`` for the in-process DU."""
    out: dict[tuple[str, str], float] = {}
    for endpoint, values in fapi.items():
        if isinstance(values, Mapping):
            for key, v in values.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[(str(endpoint), str(key))] = float(v)
        elif isinstance(values, int | float) and not isinstance(values, bool):
            out[("du", str(endpoint))] = float(values)
    return out


def node_registry(
    node: Node,
    *,
    e2: E2Agent | None = None,
    o1: O1Service | None = None,
    info: dict[str, str] | None = None,
    process: bool = True,
) -> CollectorRegistry:
    """A registry with the node's collector and (``process``) the process, GC and
    platform collectors of ``prometheus_client`` (``process_resident_memory_bytes``,
    ``process_open_fds``, ``python_gc_*``, ...)."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node, e2=e2, o1=o1, info=info))
    if process:
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


# ----------------------------------------------------------------------------- the server


class _Handler(WSGIRequestHandler):
    timeout = 10.0  # a client that sends nothing does not hold a thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _family_of(address: str, port: int) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FieldError("address", f"cannot resolve {address!r}: {exc.strerror}") from None
    return infos[0][0]


class MetricsServer:
    """An HTTP server for Prometheus on ``address:port`` (``0``: a free port):

    * ``/metrics``: the registry, in the text format (or OpenMetrics on request);
    * ``/healthz``: ``200 ok`` while ``healthy()`` is true, else ``503`` (for container
      health checks and orchestrator probes);
    * anything else: ``404``.

    Each request runs in a daemon thread of its own; :meth:`stop` returns within about
    ``poll_s``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str = "127.0.0.1",
        port: int = 0,
        *,
        healthy: Callable[[], bool] = lambda: True,
        poll_s: float = 0.05,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise FieldError("port", f"must be an integer in [0, 65535], got {port!r}")
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                ok = healthy()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable",
                    [("Content-Type", "text/plain; charset=utf-8")],
                )
                return [b"ok\n" if ok else b"not running\n"]
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: try /metrics or /healthz\n"]

        class Server(_Server):
            address_family = _family_of(address, port)

        try:
            self._httpd = make_server(address, port, app, Server, _Handler)
        except OSError as exc:
            raise FieldError("port", f"cannot listen on {address}:{port}: {exc.strerror}") from None
        self.address = address
        self.port: int = self._httpd.server_port
        self._poll_s = poll_s
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": poll_s},
            name="airan-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The metrics URL (``http://host:port/metrics``)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5.0)
        self._httpd.server_close()
