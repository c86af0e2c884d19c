"""ProxyMetrics.forget_replica: every series with the replica's label goes; late samples are not exported;
prime brings it back from zero; churn keeps nothing."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from concurproxy.control.types import PressureSnapshot
from concurproxy.telemetry.catalog import SPECS
from concurproxy.telemetry.metrics import ProxyMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def replica_series(reg: CollectorRegistry, replica: str) -> set[str]:
    return {s.name for fam in reg.collect() for s in fam.samples if s.labels.get("replica") == replica}


def record_everything(m: ProxyMetrics, replica: str) -> None:
    m.observe_step(route="/v1/chat/completions", tenant="t", role="r", status=200, duration_s=0.1,
                   replica=replica, ttft_s=0.05, upstream_s=0.08, prompt_tokens=10, completion_tokens=5)  # fmt: skip
    m.observe_queue_wait(replica, "r", 0.01)
    m.admission_decision(replica, "admitted", "new")
    m.set_admission_state(replica, window=4, active=1, queued=0)
    m.window_changed(replica, 4, 5, "increase")
    m.observe_pressure(replica, PressureSnapshot(ts=999.0, kv_usage=0.4, running=1, waiting=0))
    m.pressure_poll_error(replica, "timeout")
    m.dispatch_waited(replica, "prefill_gate", 0.2)
    m.set_dispatch_state(replica, "prefill_gate", waiting=1, held=2, forced=1)
    m.set_dispatch_reserve(replica, in_flight_tokens=100, limit_tokens=1000)
    m.routing_decision(replica, "prefix", pin_hit=True, prefix_match_tokens=16)
    m.upstream_error(replica, "error")
    m.upstream_retry(replica, "connect")
    m.set_replica_health(replica, False)
    m.set_pressure_source(replica, "latency")


def test_forget_removes_every_series_with_the_replica_label_and_late_samples_stay_out() -> None:
    reg, clock = CollectorRegistry(), Clock()
    m = ProxyMetrics(reg, clock=clock)
    m.prime(replicas=["r0", "r1"], roles=["r"], tenants=["t"])
    for r in ("r0", "r1"):
        record_everything(m, r)
    with_label = {n for s in SPECS if "replica" in s.labels for n in s.series_names}
    assert {n.removesuffix("_created") for n in replica_series(reg, "r1")} >= with_label  # every family covered
    kept = replica_series(reg, "r0")

    m.forget_replica("r1")
    assert replica_series(reg, "r1") == set() and replica_series(reg, "r0") == kept
    record_everything(m, "r1")  # a step that was running there ends; a read that was in flight lands
    assert replica_series(reg, "r1") == set()
    assert "r1" not in m._pressure_ts and all(k[0] != "r1" for k in m._dispatch_totals)

    m.prime(replicas=["r1"], roles=["r"])  # it joins again: its series are back, from zero
    assert reg.get_sample_value("concurproxy_replica_healthy", {"replica": "r1"}) == 1
    assert reg.get_sample_value("concurproxy_upstream_errors_total", {"replica": "r1", "kind": "error"}) == 0
    m.upstream_error("r1", "error")
    assert reg.get_sample_value("concurproxy_upstream_errors_total", {"replica": "r1", "kind": "error"}) == 1


def test_churn_keeps_a_bounded_trace() -> None:
    reg, clock = CollectorRegistry(), Clock()
    m = ProxyMetrics(reg, clock=clock, forget_linger_s=60.0)
    m.prime(replicas=["r0"], roles=["r"], tenants=["t"])
    for i in range(300):
        replica = f"10.0.{i // 256}.{i % 256}:8000" if i % 2 else "r1"  # new ids and one that comes and goes
        m.prime(replicas=[replica])
        record_everything(m, replica)
        clock.t += 1.0
        m.forget_replica(replica)
    assert len(m._gone) <= 61 and m.guards["replica"].values <= {"r0", "r1", "other", "unknown", *m._gone}
    assert set(m._pressure_ts) == {"r0"}
    assert all(len(f._cache) < 40 for f in m._f.values())
    assert {s.labels["replica"] for fam in reg.collect() for s in fam.samples if "replica" in s.labels} <= {
        "r0",
        "none",
    }


def test_the_admission_listener_forgets_a_window_that_is_gone() -> None:
    from concurproxy.control.admission.events import AdmissionEvent, EventKind
    from concurproxy.telemetry.admission import AdmissionMetricsListener

    reg = CollectorRegistry()
    listener = AdmissionMetricsListener(ProxyMetrics(reg, clock=Clock()))
    listener.on_admission_event(AdmissionEvent(EventKind.window, "r1", 0.0, "increase", value=5))
    listener.on_admission_event(AdmissionEvent(EventKind.window, "r1", 1.0, "replica-left"))
    assert listener._window == {}
    labels = {"replica": "r1", "direction": "up", "reason": "replica-left"}
    assert reg.get_sample_value("concurproxy_admission_window_changes_total", labels) is None  # not a change
