"""Listener, limits and upstream replica settings."""

from __future__ import annotations

from pydantic import Field, HttpUrl

from concurproxy.config.base import Model


class ListenConfig(Model):
    host: str = Field("127.0.0.1", description="Address the proxy listens on.")
    port: int = Field(9000, ge=0, le=65535, description="Port the proxy listens on (0 = any free port).")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger gets 413.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM: how long in-flight streams may finish before they are cut."
    )
    admin_port: int | None = Field(
        None, ge=0, le=65535, description="Serve /admin/* and /metrics on this port only (same host); None = main port."
    )
    admin_host: str | None = Field(None, description="Address of the admin listener (default: listen.host).")


class LimitsConfig(Model):
    """Front-door limits, applied before any policy stage."""

    max_messages: int = Field(4096, ge=1, description="Most chat messages in one request (400 beyond).")
    max_header_bytes: int = Field(16384, ge=1024, description="Longest request line / header field (431/400 beyond).")
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="A client must send its whole body within this (slow loris)."
    )
    requests_per_s: float | None = Field(
        None,
        gt=0,
        description="Per API key (or per client address when anonymous): steady request rate before admission.",
    )
    burst: int = Field(100, ge=1, description="Requests a key may send at once above requests_per_s.")
    max_sse_event_bytes: int = Field(
        8 * 1024 * 1024,
        ge=65536,
        description="Longest server-sent event accepted from an upstream (a Responses 'response.completed' "
        "repeats the whole output); an event still unended past it fails the step with a 502 / an error event.",
    )
    rate_limit_max_keys: int = Field(
        100_000,
        ge=1,
        description="Most keys the rate limit tracks (about 250 bytes each with its key); past it the least "
        "recently seen key is forgotten and comes back with a full bucket.",
    )


class TimeoutsConfig(Model):
    connect_s: float = Field(2.0, gt=0, description="TCP connect to a replica.")
    first_byte_s: float = Field(
        300.0,
        gt=0,
        description="From sending the request to the first response byte (includes queueing in the engine).",
    )
    idle_s: float = Field(60.0, gt=0, description="Longest silence between two chunks of a streamed answer.")


class HealthCheckConfig(Model):
    path: str = Field("/health", description="Path polled on each replica.")
    interval_s: float = Field(2.0, gt=0, description="Time between two checks of one replica.")
    timeout_s: float = Field(1.0, gt=0)
    unhealthy_after: int = Field(
        2, ge=1, description="Consecutive failures (checks or requests) that take a replica out."
    )
    healthy_after: int = Field(1, ge=1, description="Consecutive successful checks that put it back.")
    panic_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Envoy's healthy-panic threshold: when fewer than this share of the non-draining replicas "
        "serving a model are healthy, steps go to all of them, health ignored (one replica whose health check "
        "flaps under load: its steps go on instead of 503s). 0: never.",
    )


class KvEventsSource(Model):
    """Where a replica publishes its KV cache events (vLLM ``--kv-events-config``, ZMQ publisher)."""

    endpoint: str = Field(description="The publisher as the proxy reaches it, e.g. tcp://10.0.0.11:5557.")
    replay_endpoint: str | None = Field(
        None, description="The publisher's replay socket (e.g. tcp://10.0.0.11:5558): fills sequence gaps."
    )
    topic: str = Field("", description="Topic prefix to subscribe to (vLLM's kv-events topic).")


class UpstreamConfig(Model):
    url: HttpUrl = Field(description="Base URL of an OpenAI-compatible server (vLLM, SGLang, the bundled worker).")
    name: str | None = Field(None, description="Replica id used in metrics and headers; defaults to host:port.")
    api_key: str | None = Field(None, description="Bearer key sent upstream (the client's key is never forwarded).")
    metrics_path: str = Field("/metrics", description="Engine Prometheus endpoint, read by the pressure poller.")
    pressure_url: HttpUrl | None = Field(
        None, description="Node agent feed (GET /pressure JSON); when set it is used instead of metrics_path."
    )
    max_connections: int = Field(1024, ge=1, description="Keep-alive pool size to this replica.")
    kv_events: KvEventsSource | None = Field(
        None,
        description="Subscribe to this replica's KV cache events: prefix-affinity then knows exactly which "
        "prefixes it holds (only when the proxy tokenizes like the engine; see docs/routing.md).",
    )
    priority_scheduling: bool = Field(
        False,
        description="The engine runs vLLM's --scheduling-policy priority: the proxy sets each body's 'priority' "
        "from the step's priority class (critical 0, high 1, normal 2, low 3; a client's own value can only "
        "lower its step). Leave off for fcfs engines: they refuse a non-zero priority.",
    )


class RetryConfig(Model):
    attempts: int = Field(
        2,
        ge=1,
        le=5,
        description="Tries per step across replicas; a retry only happens before any byte reached the client.",
    )


class DnsDiscoveryConfig(Model):
    """Replicas behind a DNS name with one A record per replica (a Kubernetes headless Service)."""

    dns: str = Field(description="Name to resolve, e.g. vllm.inference.svc.cluster.local (IPv4 A records).")
    port: int = Field(8000, ge=1, le=65535, description="Port of every replica.")
    scheme: str = Field("http", pattern="^https?$")
    interval_s: float = Field(10.0, gt=0, description="Re-resolve this often; new addresses join at once.")
    remove_after: int = Field(
        2,
        ge=1,
        description="An address leaves after missing from this many answers in a row (a failed lookup counts none).",
    )
    timeout_s: float = Field(2.0, gt=0, description="Longest wait for one lookup.")
    api_key: str | None = Field(None, description="Bearer key sent to the discovered replicas.")
    metrics_path: str = Field("/metrics", description="Engine Prometheus endpoint of each replica.")
    kv_events_port: int | None = Field(
        None, ge=1, le=65535, description="Subscribe to each replica's KV events at tcp://ADDRESS:PORT (see upstreams)."
    )
    priority_scheduling: bool = Field(
        False, description="Every discovered replica runs --scheduling-policy priority (see upstreams)."
    )
