"""Engine configuration (frozen, validated once) and the seeded output-length model."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from concurproxy.worker.engine.timing import StepTimeModel


@dataclass(frozen=True, slots=True)
class OutputLengths:
    """How many tokens a request generates.

    ``max_tokens`` (default): exactly ``max_tokens`` — the deterministic choice
    benchmarks want. ``uniform``: uniform on ``[1, max_tokens]``.
    ``exponential``: ``1 + Exp(mean - 1)`` clamped to ``max_tokens``. Draws are
    seeded per request (``seed`` and the request id), so they do not depend on
    arrival order. ``ignore_eos`` on a request always forces ``max_tokens``.
    """

    mode: Literal["max_tokens", "uniform", "exponential"] = "max_tokens"
    mean: float = 128.0
    seed: int = 0

    def draw(self, req_id: str, max_tokens: int, ignore_eos: bool) -> int:
        if ignore_eos or self.mode == "max_tokens" or max_tokens <= 1:
            return max_tokens
        rng = random.Random(f"{self.seed}:{req_id}")
        if self.mode == "uniform":
            return rng.randint(1, max_tokens)
        return min(max_tokens, 1 + int(rng.expovariate(1.0 / max(self.mean - 1.0, 1e-9))))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    num_blocks: int
    timing: StepTimeModel
    block_size: int = 16
    max_num_batched_tokens: int = 8192
    # vLLM's --long-prefill-token-threshold: no request gets more than this many new tokens in one
    # step (its prefill is chunked at this size even when the step's budget has room); 0 = off
    long_prefill_token_threshold: int = 0
    max_num_seqs: int = 256
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    default_max_tokens: int = 256
    output_lengths: OutputLengths = field(default_factory=OutputLengths)
    seed: int = 0
    # vLLM's --scheduling-policy: "fcfs" (a non-zero request priority is refused) or "priority"
    # (waiting queue by (priority, arrival), lower first; the preemption victim is the lowest priority)
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    # Not in vLLM (its open proposal, vllm#40004 / #54530, extended to KV blocks): under the priority
    # policy a waiting request that finds no free blocks preempts running requests of strictly lower
    # priority (largest (priority, arrival) first) until it fits
    preempt_for_waiting: bool = False

    def __post_init__(self) -> None:
        if self.num_blocks <= 0 or self.block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        if self.max_model_len > self.num_blocks * self.block_size:
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds the KV capacity "
                f"{self.num_blocks * self.block_size} tokens: one request could never fit"
            )
        if self.max_num_batched_tokens <= 0 or self.max_num_seqs <= 0:
            raise ValueError("max_num_batched_tokens and max_num_seqs must be positive")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0 (0: off)")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"scheduling_policy must be fcfs or priority, not {self.scheduling_policy!r}")
        if self.preempt_for_waiting and self.scheduling_policy != "priority":
            raise ValueError("preempt_for_waiting needs scheduling_policy priority")

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def chunk(self, remaining: int, budget: int) -> int:
        """New tokens a request gets in one step: ``remaining``, capped at the long-prefill threshold
        (vLLM: ``if 0 < threshold < num_new_tokens: num_new_tokens = threshold``), then at ``budget``."""
        cap = self.long_prefill_token_threshold
        if 0 < cap < remaining:
            remaining = cap
        return min(remaining, budget)
