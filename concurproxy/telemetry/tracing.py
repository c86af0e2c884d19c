"""OpenTelemetry spans per agent step, W3C trace context in and out, off by default.

Shape of one step's trace::

    step  (SERVER; identity attributes, http.route, status)
    ├── admission_wait   (time queued for a slot; decision + reason)
    ├── routing          (chosen replica + reason)
    ├── upstream         (CLIENT; request sent → response headers; its context goes upstream)
    └── streaming        (first byte → last byte relayed)

The parent of ``step`` is the client's ``traceparent`` when it sent one. Child
spans get their parent explicitly (never through the ambient OTel context), so
nothing leaks between concurrent asyncio tasks and no global TracerProvider is
touched: each :class:`Tracing` owns its provider.

When tracing is off, :class:`NoopTracing` hands out shared do-nothing objects: a
step costs a few attribute look-ups and calls (measured in the tests and in
``docs/observability.md``), no allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from concurproxy.config.models import TelemetryConfig
from concurproxy.control.types import StepInfo

PHASES = ("admission_wait", "routing", "upstream", "streaming")
OTLP_MISSING = (
    "telemetry.otlp_endpoint is set but the OTLP exporter is not installed: "
    "pip install 'opentelemetry-exporter-otlp-proto-http' (or concurproxy[otlp]), "
    "or unset telemetry.otlp_endpoint / CONCURPROXY_OTLP_ENDPOINT to run without tracing."
)


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but cannot run (exporter package missing)."""


def identity_attributes(step: StepInfo) -> dict[str, Any]:
    return {
        "concurproxy.tenant": step.tenant,
        "concurproxy.role": step.role,
        "concurproxy.agent_id": step.agent_id,
        "concurproxy.task_id": step.task_id,
        "concurproxy.priority": step.priority.name,
    }


class Phase:
    """One child span of a step; a context manager that ends the span and records errors."""

    __slots__ = ("_prop", "span")

    def __init__(self, span: Span, prop: TraceContextTextMapPropagator) -> None:
        self.span, self._prop = span, prop

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write ``traceparent`` (and ``tracestate``) naming this span into upstream headers."""
        self._prop.inject(headers, context=set_span_in_context(self.span))

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.span.end()


class StepTrace:
    """The ``step`` span; open phases with :meth:`phase`, close with :meth:`end` (or ``with``)."""

    __slots__ = ("_ctx", "_prop", "_tracer", "span")

    def __init__(self, tracer: Any, span: Span, prop: TraceContextTextMapPropagator) -> None:
        self._tracer, self.span, self._prop = tracer, span, prop
        self._ctx: Context = set_span_in_context(span)

    def identify(self, step: StepInfo) -> None:
        self.span.set_attributes(identity_attributes(step))

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def phase(self, name: str, **attributes: Any) -> Phase:
        kind = SpanKind.CLIENT if name == "upstream" else SpanKind.INTERNAL
        return Phase(self._tracer.start_span(name, context=self._ctx, kind=kind, attributes=attributes), self._prop)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        self._prop.inject(headers, context=self._ctx)

    def end(self, status: int | None = None, error: BaseException | None = None) -> None:
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR))
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self.span.end()

    def __enter__(self) -> StepTrace:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.end(error=exc)


class Tracing:
    """Enabled tracing with its own TracerProvider (never the global one)."""

    enabled = True

    def __init__(self, exporter: SpanExporter, *, service_name: str = "concurproxy", batch: bool = True) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("concurproxy")
        self._prop = TraceContextTextMapPropagator()

    def start_step(self, headers: Mapping[str, str], route: str, step: StepInfo | None = None) -> StepTrace:
        """Start a step span whose parent is the client's ``traceparent`` (if any)."""
        parent = self._prop.extract(headers)
        attrs: dict[str, Any] = {"http.route": route}
        if step is not None:
            attrs.update(identity_attributes(step))
        span = self._tracer.start_span("step", context=parent, kind=SpanKind.SERVER, attributes=attrs)
        return StepTrace(self._tracer, span, self._prop)

    def shutdown(self) -> None:
        """Flush pending spans and stop the exporter (call on proxy shutdown)."""
        self.provider.shutdown()


class NoopPhase:
    """Stands in for :class:`Phase` when tracing is off."""

    __slots__ = ()

    def set(self, key: str, value: Any) -> None:
        pass

    def inject(self, headers: MutableMapping[str, str]) -> None:
        pass

    def __enter__(self) -> NoopPhase:
        return self

    def __exit__(self, et: object, exc: object, tb: object) -> None:
        pass


class NoopStep(NoopPhase):
    """Stands in for :class:`StepTrace` when tracing is off; ``phase()`` returns one shared NoopPhase."""

    __slots__ = ("_phase",)

    def __init__(self) -> None:
        self._phase = NoopPhase()

    def identify(self, step: StepInfo) -> None:
        pass

    def phase(self, name: str, **attributes: Any) -> NoopPhase:
        return self._phase

    def end(self, status: int | None = None, error: BaseException | None = None) -> None:
        pass


class NoopTracing:
    """Tracing switched off: every call returns a shared object whose methods do nothing."""

    enabled = False

    def __init__(self) -> None:
        self._step = NoopStep()

    def start_step(self, headers: Mapping[str, str], route: str, step: StepInfo | None = None) -> NoopStep:
        return self._step

    def shutdown(self) -> None:
        pass


def build_tracing(cfg: TelemetryConfig, exporter: SpanExporter | None = None) -> Tracing | NoopTracing:
    """Tracing from the policy: OTLP/HTTP to ``cfg.otlp_endpoint``; off (no-op) when unset.

    ``exporter`` overrides the OTLP exporter (tests pass an ``InMemorySpanExporter``;
    spans are then exported synchronously). Raises :class:`TracingUnavailable` when an
    endpoint is configured but the exporter package is missing, so a misconfigured
    deployment fails at start-up instead of silently losing traces.
    """
    if exporter is not None:
        return Tracing(exporter, service_name=cfg.service_name, batch=False)
    if not cfg.otlp_endpoint:
        return NoopTracing()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise TracingUnavailable(OTLP_MISSING) from exc
    return Tracing(OTLPSpanExporter(endpoint=cfg.otlp_endpoint), service_name=cfg.service_name)
