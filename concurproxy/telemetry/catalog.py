"""Every proxy metric, declared once: name, type, labels, help, buckets.

This table is the single source of truth: :class:`~concurproxy.telemetry.metrics.ProxyMetrics`
builds its collectors from it, ``docs/observability.md`` is generated from it
(``python -m concurproxy.telemetry.docgen``) and the dashboard tests check that
every panel queries a name declared here (or a ``vllm:`` engine metric).

Conventions: ``concurproxy_`` prefix, base units in the name (``_seconds``,
``_tokens``, ``_ratio``), counters end in ``_total``. Labels are bounded: no
agent, task or request ids ever become label values.

``prime`` lists values of enumerable labels for which :meth:`ProxyMetrics.prime`
creates zero-valued series up front, so a dashboard shows 0 rather than "No data"
before the first event (Prometheus' "avoid missing metrics" advice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# 1 ms .. 10 min: proxy overhead at the bottom, long agent steps / deep queues at the top.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None
    prime: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def series_names(self) -> tuple[str, ...]:
        """Names that appear in the exposition (histograms add _bucket/_sum/_count)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _c(name: str, labels: tuple[str, ...], help: str, **prime: tuple[str, ...]) -> MetricSpec:
    return MetricSpec(name, "counter", labels, help, prime=prime)


def _g(name: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, "gauge", labels, help)


def _h(name: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, "histogram", labels, help, buckets=LATENCY_BUCKETS)


R, RR, RS, TR = ("replica",), ("replica", "role"), ("replica", "stage"), ("tenant", "role")

SPECS: tuple[MetricSpec, ...] = (
    # --- request path -------------------------------------------------------------------------
    _c("concurproxy_requests_total", ("route", "tenant", "role", "status"),
       "Requests (agent steps) answered, by route, tenant, role and HTTP status."),
    _g("concurproxy_requests_in_flight", ("route",), "Requests currently being handled."),
    _h("concurproxy_step_duration_seconds", RR,
       "Whole step through the proxy: arrival to last byte sent (includes queue wait)."),
    _h("concurproxy_time_to_first_token_seconds", RR, "Arrival to first response byte sent to the client."),
    _h("concurproxy_upstream_duration_seconds", RR, "Upstream call: request sent to last byte received."),
    _h("concurproxy_queue_wait_seconds", RR, "Time a step waited for admission (0 when admitted at once)."),
    _c("concurproxy_tokens_total", ("tenant", "role", "direction"),
       "Tokens served: direction=input (prompt) or output (completion), from reported usage.",
       direction=("input", "output")),
    # --- admission ------------------------------------------------------------------------------
    _c("concurproxy_admission_decisions_total", ("replica", "decision", "reason"),
       "Admission events (admitted / queued / rejected / timeout / cancelled / paused ...) with reason.",
       decision=("admitted",), reason=("in-window",)),
    _g("concurproxy_admission_window", R, "Active-agent window W of the replica (AIMD limit)."),
    _g("concurproxy_admission_active_agents", R, "Agents holding a slot in the replica's window."),
    _g("concurproxy_admission_queued_agents", R, "Agents paused between steps, waiting for admission."),
    _c("concurproxy_admission_window_changes_total", ("replica", "direction", "reason"),
       "Window changes with the controller's reason; direction=down are thrash back-offs.",
       direction=("down",), reason=("thrash-preemption",)),
    _c("concurproxy_admission_idle_waiting_seconds_total", ("replica", "cause"),
       "Seconds with no step running on the replica while steps waited for admission (work conservation), by "
       "the cause charged when the idle period began: prefix (keeping a returning agent's cached prefix), "
       "return (slots held by agents within their return bound), engine (the engine queues steps), signal "
       "(stale or missing pressure data), limit (W or the footprint budget). Read at scrape time."),
    _g("concurproxy_admission_limit_multiplier", R,
       "The goodput probe's multiplier of the window and the KV footprint budget: 1 = as modelled, above 1 = "
       "admitting more paid off in delivered goodput, +Inf = limits lifted."),
    _c("concurproxy_tickets_ended_total", ("outcome",),
       "Admission tickets ended, by outcome (success / error / cancelled / timeout).",
       outcome=("success", "error", "cancelled", "timeout")),
    _c("concurproxy_ticket_errors_total", ("kind",),
       "Ticket accounting bugs caught at run time: leaked (never released) or double_release.",
       kind=("leaked", "double_release")),
    # --- pressure (as read by the poller) -------------------------------------------------------
    _g("concurproxy_pressure_kv_usage_ratio", R, "KV-cache usage of the replica, 0..1, as last read."),
    _g("concurproxy_pressure_running_requests", R, "Requests running in the engine, as last read."),
    _g("concurproxy_pressure_waiting_requests", R, "Requests waiting in the engine, as last read."),
    _g("concurproxy_pressure_preemptions_per_second", R,
       "Engine preemption rate over the last poll interval."),
    _g("concurproxy_pressure_prefix_hit_ratio", R,
       "Engine prefix-cache hit rate over the last poll interval, 0..1."),
    _g("concurproxy_pressure_prefill_iterations", R,
       "A prefill's cost in decode iterations: mean prefill time over mean inter-token latency (decaying "
       "30 s window of the engine's histograms; moves with the policy, not a rule by itself: docs/vllm.md)."),
    _g("concurproxy_pressure_snapshot_age_seconds", R,
       "Age of the newest good pressure snapshot, computed at scrape time (stale data throttles)."),
    _g("concurproxy_pressure_source", ("replica", "source"),
       "1 for the signal that decides the replica's window now, 0 for the others: kv (engine metrics / node "
       "agent), stale (signal lost: saturated for stale_grace_s), latency (no usable KV signal: step latency), "
       "static (a controller that reads none)."),
    _c("concurproxy_pressure_poll_errors_total", ("replica", "kind"),
       "Failed pressure reads (connect, timeout, status, parse ...).", kind=("connect",)),
    # --- budgets and fairness -------------------------------------------------------------------
    _c("concurproxy_budget_consumed_tokens_total", TR,
       "Tokens charged to role budgets (settled from usage)."),
    _c("concurproxy_budget_rejections_total", ("tenant", "role", "reason"),
       "Steps refused or clamped by a budget.", reason=("role_tokens_per_min",)),
    _g("concurproxy_fairness_virtual_tokens", ("tenant",),
       "Fairness virtual counter per tenant (VTC: weighted tokens served / tenant weight)."),
    # --- dispatch (fairness.protect_priority / long_prefill_tokens / kv_reserve) -----------------
    _c("concurproxy_dispatch_held_total", RS,
       "Admitted steps held before the upstream call: stage=prefill_gate (a long prefill waited for a control "
       "step or a prefill slot), kv_reserve (a step waited for the KV headroom kept for control steps)."),
    _c("concurproxy_dispatch_forced_total", RS,
       "Held steps sent because they reached the hold bound (max_prefill_hold_s, kv_reserve_max_hold_s), "
       "not released: a high share means the bound, not the rule, decides."),
    _h("concurproxy_dispatch_wait_seconds", RS,
       "Time a held step waited at the stage, observed when it is sent (steps sent at once are not observed: "
       "compare the count with concurproxy_requests_total)."),
    _g("concurproxy_dispatch_waiting_steps", RS, "Steps waiting at the dispatch stage now."),
    _g("concurproxy_dispatch_reserve_in_flight_tokens", R,
       "KV footprint (prompt + max_tokens) of the replica's steps in flight that the KV reserve limits; 0 while "
       "the reserve is off (fairness.kv_reserve: 0, the default)."),
    _g("concurproxy_dispatch_reserve_limit_tokens", R,
       "What those steps may hold while control steps are about: KV capacity x (1 - kv_reserve); NaN until the "
       "engine's capacity is read, and while the reserve is off (no limit)."),
    # --- routing --------------------------------------------------------------------------------
    _c("concurproxy_routing_decisions_total", ("replica", "reason"),
       "Replica choices, by the scorer that decided (pin / prefix / least_loaded ...).", reason=("pin",)),
    _c("concurproxy_routing_pin_hits_total", R, "Steps routed to the replica their agent was pinned to."),
    _c("concurproxy_routing_prefix_match_tokens_total", R,
       "Prompt tokens expected to hit the prefix cache of the chosen replica."),
    _c("concurproxy_routing_repins_total", ("reason",),
       "Agents moved to another replica (unhealthy, overloaded, expired ...).", reason=("unhealthy",)),
    # --- upstream ---------------------------------------------------------------------------------
    _c("concurproxy_upstream_errors_total", ("replica", "kind"),
       "Steps that ended in an upstream failure: error / timeout (answered 5xx after retries), "
       "mid_stream (the stream had begun: it ended with an error event).", kind=("error",)),
    _c("concurproxy_upstream_retries_total", ("replica", "kind"),
       "Attempts that failed on the replica before the first byte reached the client and were retried "
       "elsewhere (kind: connect / timeout / status).", kind=("connect",)),
    _c("concurproxy_propagation_dropped_total", ("header",),
       "Client trace-context headers not sent upstream because they break their W3C grammar "
       "(header: traceparent / tracestate).", header=("traceparent", "tracestate")),
    _g("concurproxy_replica_healthy", R, "1 when the replica is in rotation, 0 when taken out."),
    _g("concurproxy_upstream_panic", (),
       "1 while steps go to every non-draining replica, health ignored: fewer than health.panic_threshold "
       "of them are healthy (Envoy's panic routing; for one replica: it is out of rotation)."),
    _c("concurproxy_upstream_panic_steps_total", (),
       "Attempts routed in panic (health ignored): a step, and each retry."),
    _g("concurproxy_build_info", ("version",), "Always 1; the proxy version as a label."),
)  # fmt: skip

BY_NAME: Mapping[str, MetricSpec] = {s.name: s for s in SPECS}


def exposed_names() -> frozenset[str]:
    """Every series name the proxy can expose (for dashboard/alert checks)."""
    return frozenset(n for s in SPECS for n in s.series_names)
