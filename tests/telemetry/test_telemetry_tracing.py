"""Tracing: span tree per step, W3C trace context in/out, no-op when off, OTLP config."""

from __future__ import annotations

import sys
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from concurproxy.config.models import TelemetryConfig
from concurproxy.control.types import PriorityClass, StepInfo
from concurproxy.telemetry.tracing import (
    PHASES,
    NoopTracing,
    Tracing,
    TracingUnavailable,
    build_tracing,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
STEP = StepInfo(tenant="research", role="planner", agent_id="a-1", task_id="t-9", priority=PriorityClass.high)


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(TelemetryConfig(), exporter=exporter)
    assert isinstance(tracing, Tracing)
    return tracing, exporter


def run_step(tracing: Tracing | NoopTracing, headers: dict[str, str]) -> dict[str, str]:
    upstream_headers: dict[str, str] = {}
    with tracing.start_step(headers, "/v1/chat/completions") as step:
        step.identify(STEP)
        with step.phase("admission_wait") as p:
            p.set("concurproxy.admission.decision", "admit")
        with step.phase("routing") as p:
            p.set("concurproxy.replica", "r0")
        with step.phase("upstream") as p:
            p.inject(upstream_headers)
        with step.phase("streaming"):
            pass
        step.set("http.response.status_code", 200)
    return upstream_headers


def test_span_tree_with_client_parent_and_identity() -> None:
    tracing, exporter = traced()
    sent = run_step(tracing, {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"step", *PHASES}
    step = spans["step"]
    assert format(step.context.trace_id, "032x") == CLIENT_TRACE
    assert step.parent is not None and format(step.parent.span_id, "016x") == CLIENT_PARENT
    assert step.kind == SpanKind.SERVER
    assert step.attributes is not None
    assert step.attributes["concurproxy.tenant"] == "research"
    assert step.attributes["concurproxy.agent_id"] == "a-1"
    assert step.attributes["concurproxy.priority"] == "high"
    for name in PHASES:
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == step.context.span_id
        assert child.context.trace_id == step.context.trace_id
    assert spans["upstream"].kind == SpanKind.CLIENT
    # the upstream sees the same trace, with the upstream span as its parent
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert parent_id == format(spans["upstream"].context.span_id, "016x")
    tracing.shutdown()


def test_new_trace_when_client_sends_none_or_garbage() -> None:
    tracing, exporter = traced()
    run_step(tracing, {})
    run_step(tracing, {"traceparent": "not-a-traceparent"})
    roots = [s for s in exporter.get_finished_spans() if s.name == "step"]
    assert len(roots) == 2 and all(s.parent is None for s in roots)
    assert roots[0].context.trace_id != roots[1].context.trace_id


def test_errors_mark_spans() -> None:
    tracing, exporter = traced()
    with (
        pytest.raises(TimeoutError),
        tracing.start_step({}, "/v1/completions") as step,
        step.phase("upstream"),
    ):
        raise TimeoutError("first byte")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["upstream"].status.status_code == StatusCode.ERROR
    assert spans["step"].status.status_code == StatusCode.ERROR
    step2 = tracing.start_step({}, "/v1/completions")
    step2.end(status=503)
    last = exporter.get_finished_spans()[-1]
    assert last.attributes is not None and last.attributes["http.response.status_code"] == 503
    assert last.status.status_code == StatusCode.ERROR


def test_providers_are_per_instance_and_global_untouched() -> None:
    before = trace.get_tracer_provider()
    (t1, e1), (_t2, e2) = traced(), traced()
    run_step(t1, {})
    assert len(e1.get_finished_spans()) == 5 and len(e2.get_finished_spans()) == 0
    assert trace.get_tracer_provider() is before


def test_off_by_default_and_noop_does_nothing() -> None:
    tracing = build_tracing(TelemetryConfig())
    assert isinstance(tracing, NoopTracing) and not tracing.enabled
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
    assert run_step(tracing, headers) == {}
    assert tracing.start_step({}, "/x") is tracing.start_step({}, "/y")  # shared, nothing allocated
    tracing.shutdown()


def test_otlp_endpoint_without_exporter_package_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(TracingUnavailable, match="opentelemetry-exporter-otlp-proto-http"):
        build_tracing(TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318/v1/traces"))


def per_step_ns(tracing: Tracing | NoopTracing, n: int) -> float:
    headers: dict[str, str] = {}
    t0 = time.perf_counter_ns()
    for _ in range(n):
        run_step(tracing, headers)
    return (time.perf_counter_ns() - t0) / n


def test_noop_cost_is_tiny_next_to_enabled() -> None:
    tracing, _ = traced()
    enabled = per_step_ns(tracing, 200)
    noop = per_step_ns(NoopTracing(), 2000)
    print(f"tracing per step: off {noop:.0f} ns, on (in-memory exporter) {enabled:.0f} ns")
    assert noop * 10 < enabled
    assert noop < 20_000  # generous for a shared CI core; typically ~1-2 µs for the 4 phases
