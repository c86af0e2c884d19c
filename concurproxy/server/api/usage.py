"""Token usage as the request path consumes it, whatever API reported it.

Budgets, admission footprints, fairness and the token metrics read one shape:
prompt (input) tokens, completion (output) tokens, and the prompt tokens served
from the engine's prefix cache when it says so. Each codec maps its API's
fields onto it (chat ``prompt_tokens``/``completion_tokens``, Responses
``input_tokens``/``output_tokens``, Messages ``input_tokens`` plus the cache
counts / ``output_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @classmethod
    def from_obj(cls, obj: object) -> Usage | None:
        """An OpenAI chat/completions ``usage`` object (None when absent or malformed)."""
        if not isinstance(obj, dict):
            return None
        try:
            prompt = int(obj.get("prompt_tokens") or 0)
            completion = int(obj.get("completion_tokens") or 0)
        except (TypeError, ValueError):
            return None
        details = obj.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return cls(prompt, completion, cached if isinstance(cached, int) else None)

    @classmethod
    def from_io(cls, obj: object, *, extra_input: tuple[str, ...] = ()) -> Usage | None:
        """A Responses or Messages ``usage`` object (``input_tokens``/``output_tokens``).

        ``extra_input`` names fields that count as prompt tokens too: Anthropic reports cache
        reads and writes apart from ``input_tokens``, and the engine processed all of them."""
        if not isinstance(obj, dict):
            return None
        try:
            prompt = int(obj.get("input_tokens") or 0)
            for name in extra_input:
                prompt += int(obj.get(name) or 0)
            completion = int(obj.get("output_tokens") or 0)
        except (TypeError, ValueError):
            return None
        details = obj.get("input_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else obj.get("cache_read_input_tokens")
        return cls(prompt, completion, cached if isinstance(cached, int) else None)
