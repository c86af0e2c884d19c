"""Closed-loop agent workload: multi-step agents whose context grows every step.

One agent task = ``steps`` model calls. Step ``k``'s prompt is step ``k-1``'s
prompt + the model's output + a new tool result of ``tool_tokens`` tokens;
step 0's prompt is a system prompt shared by all agents (``system_tokens``)
plus a per-task instruction (``task_tokens``). Between steps the agent waits
``tool_pause_s`` (the tool call). Context after step ``k``::

    ctx_k = system + task + k · (output + tool)

This is the shape that produces middle-phase thrashing: while an agent sits in
a tool pause its blocks are free-but-cached, and other agents' allocations
evict them; on return it prefills its whole history again.

Token ids are drawn from a seeded RNG (the engine only hashes ids), so a task's
prompts depend only on (seed, task number).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AgentSpec:
    steps: int = 6
    system_tokens: int = 32
    task_tokens: int = 32
    tool_tokens: int = 128
    output_tokens: int = 24
    tool_pause_s: float = 0.3

    def final_context(self) -> int:
        """Prompt length of the last step plus its output."""
        return (
            self.system_tokens
            + self.task_tokens
            + self.steps * self.output_tokens
            + (self.steps - 1) * self.tool_tokens
        )

    def mean_context(self) -> float:
        return self.system_tokens + self.task_tokens + (self.steps - 1) * (self.output_tokens + self.tool_tokens) / 2


@dataclass(slots=True)
class AgentTask:
    """One agent working through one task; feed it outputs, ask it for the next prompt."""

    task_no: int
    spec: AgentSpec
    seed: int
    step: int = 0
    context: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        shared = random.Random(f"system:{self.seed}")
        own = random.Random(f"task:{self.seed}:{self.task_no}")
        self.context = [shared.randrange(1 << 31) for _ in range(self.spec.system_tokens)]
        self.context += [own.randrange(1 << 31) for _ in range(self.spec.task_tokens)]

    @property
    def done(self) -> bool:
        return self.step >= self.spec.steps

    def prompt(self) -> list[int]:
        return list(self.context)

    def on_output(self, output_ids: list[int]) -> None:
        """Record the model's answer; append the tool result for the next step."""
        self.context.extend(output_ids)
        self.step += 1
        if not self.done:
            rng = random.Random(f"tool:{self.seed}:{self.task_no}:{self.step}")
            self.context.extend(rng.randrange(1 << 31) for _ in range(self.spec.tool_tokens))
