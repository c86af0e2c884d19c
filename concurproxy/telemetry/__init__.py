"""Telemetry: Prometheus metrics, OpenTelemetry traces and structured logs for the proxy.

Nothing here has import-time side effects; every object takes its registry,
tracer provider or stream as an argument.
"""
