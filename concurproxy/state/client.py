"""Redis connections from a URL, and the circuit breaker that keeps an outage off the hot path.

URLs: ``redis://`` and ``rediss://`` (TLS) as redis-py reads them;
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` asks
the Sentinels for the master of ``service``; ``redis+cluster://host:port``
(or ``rediss+cluster://``) connects to a Redis Cluster. Every key the proxy
uses carries one hash tag (``{cp}``) so scripts touch a single slot.

Commands use a short socket timeout and no retries: a dead Redis costs one
timeout, then the breaker answers "down" at once for ``retry_after_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

#: What a Redis call may raise when Redis is away; everything else is a bug and propagates.
#: ``RedisClusterException`` is not a ``RedisError``: the cluster client raises it (as
#: ``RedisClusterUnreachableError``) when no node answers, so without it a cluster outage
#: escaped the breaker.
FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: str  # "single" | "sentinel" | "cluster"
    url: str  # redis(s):// URL for single/cluster; the original for sentinel
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    password: str | None = None
    tls: bool = False


def parse_url(url: str) -> RedisTarget:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("single", url, tls=scheme == "rediss")
    if scheme in ("redis+cluster", "rediss+cluster"):
        base = "rediss" if scheme.startswith("rediss") else "redis"
        return RedisTarget("cluster", f"{base}://{url.split('://', 1)[1]}", tls=base == "rediss")
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        netloc = parts.netloc.rsplit("@", 1)
        password = unquote(netloc[0].split(":", 1)[-1]) if len(netloc) == 2 else None
        hosts = []
        for hp in netloc[-1].split(","):
            host, _, port = hp.rpartition(":") if ":" in hp else (hp, "", "26379")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError(f"{url!r}: a sentinel URL needs the service name: redis+sentinel://host:port/<service>")
        db = int(path[1]) if len(path) > 1 else 0
        return RedisTarget("sentinel", url, tuple(hosts), path[0], db, password, scheme.startswith("rediss"))
    raise ValueError(f"{url!r}: unsupported scheme {scheme!r} (redis, rediss, redis+sentinel, redis+cluster)")


def client_options(socket_timeout_s: float) -> dict[str, Any]:
    """What every kind of client is built with: one short timeout and no retry, so a dead Redis
    costs one timeout and the breaker opens (redis-py's defaults retry, and the cluster client's
    retry 3 times with backoff, each attempt re-discovering the topology)."""
    return {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }


def connect(url: str, socket_timeout_s: float) -> Any:
    """A redis.asyncio client for ``url`` (not yet connected: the first command connects)."""
    t = parse_url(url)
    opts = client_options(socket_timeout_s)
    if t.kind == "single":
        return Redis.from_url(t.url, **opts)
    if t.kind == "cluster":
        return RedisCluster.from_url(t.url, **opts)
    sentinel = Sentinel(list(t.hosts), sentinel_kwargs={"socket_timeout": socket_timeout_s}, ssl=t.tls, **opts)
    return sentinel.master_for(t.service or "mymaster", db=t.db, password=t.password)


def cancelling() -> bool:
    """True when the running task is being cancelled. redis-py may turn a cancellation that hits a
    command mid-read into a ``ConnectionError``; callers re-raise ``CancelledError`` instead of
    taking it for an outage."""
    import asyncio

    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Breaker:
    """Open for ``retry_after_s`` after a failure; closed again by the next success.

    ``allow(now)`` says whether to try Redis at all; pure, ``now`` injected.
    """

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.open_until: float | None = None
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self, now: float) -> bool:
        return self.open_until is None or now >= self.open_until

    def failed(self, now: float) -> bool:
        """Record a failure; True when this one opened the breaker (was closed)."""
        self.failures += 1
        opened = self.open_until is None
        self.open_until = now + self.retry_after_s
        return opened

    def succeeded(self) -> bool:
        """Record a success; True when this one closed an open breaker."""
        was_open = self.open_until is not None
        self.open_until = None
        return was_open
