"""The AI grid: many AI-RAN sites as one inference platform (``docs/grid.md``).

* :mod:`airan.grid.score` — the per-tenant policy, the sites' facts, the hard filters and
  the documented score (pure logic, no I/O);
* :mod:`airan.grid.site` — one site: a simulated node serving inference and E2 on a port
  (``python -m airan.grid.site``);
* :mod:`airan.grid.registry` — the sites the router knows, with live facts from their KPM
  subscriptions;
* :mod:`airan.grid.metering` — tokens and device time per tenant per site; the audit log;
* :mod:`airan.grid.router` — the router: the same inference API in front of many nodes,
  placement, spill-over and failover;
* :mod:`airan.grid.loadgen` — a seeded open-loop load (the example and the benchmark).
"""
