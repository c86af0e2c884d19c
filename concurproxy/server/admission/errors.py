"""Typed refusals of the admission shell; they are ``ProxyError``s, so the HTTP front
answers them with the right status and a ``Retry-After`` header without extra mapping."""

from __future__ import annotations

from concurproxy.errors import ProxyError


class AdmissionTimeout(ProxyError):
    """The step waited ``max_queue_wait_s`` for its agent to be admitted: 503 + Retry-After."""

    def __init__(self, retry_after_s: float, *, replica: str = "", waited_s: float = 0.0) -> None:
        super().__init__(
            503,
            "admission_timeout",
            f"the agent was not admitted within {waited_s:.0f} s (replica {replica} is at capacity); retry later",
            retry_after_s=retry_after_s,
        )
        self.replica = replica
        self.waited_s = waited_s


class AdmissionRejected(ProxyError):
    """The admission queue is full: 429 + Retry-After, at once."""

    def __init__(self, retry_after_s: float, *, reason: str = "queue-full", replica: str = "") -> None:
        super().__init__(
            429,
            "admission_queue_full",
            f"too many agents are waiting for admission on replica {replica}; retry later",
            retry_after_s=retry_after_s,
        )
        self.reason = reason
        self.replica = replica


class ReplicaLeft(ProxyError):
    """The replica the step waited on left the pool (reload, DNS): 503 + Retry-After 1 s, at once."""

    def __init__(self, replica: str) -> None:
        super().__init__(
            503,
            "replica_left",
            f"replica {replica} left the pool while the agent waited for admission; retry",
            retry_after_s=1.0,
        )
        self.replica = replica
