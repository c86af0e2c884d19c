"""Step-time model of one engine iteration (one forward pass over the batch).

Formula (seconds)::

    t_step = fixed_s
           + prefill_s_per_token * prefill_tokens
           + decode_s_per_token  * decode_tokens
           + kv_read_s_per_token * kv_tokens_read
           + attn_s_per_token_pair * prefill_attn_pairs

- ``fixed_s``: reading the weights once per step plus launch/scheduling
  overhead — the memory-bandwidth floor of a decode step
  (≈ weight_bytes / (HBM bandwidth · efficiency)).
- ``prefill_s_per_token`` / ``decode_s_per_token``: the compute of one token
  through the model (≈ 2 · params FLOP / (peak FLOP/s · MFU)); decode tokens
  are usually cheaper per token only through batching, so both are exposed.
- ``kv_tokens_read``: for every request in the batch, the context length its
  attention reads this step (tokens already in its KV plus the new ones);
  ``kv_read_s_per_token ≈ kv_bytes_per_token / (HBM bandwidth · efficiency)``.
- ``prefill_attn_pairs``: the quadratic attention work of prefill, the number
  of (query token, context token) pairs: a chunk of ``c`` tokens at positions
  ``lo..lo+c`` contributes ``c · (2·lo + c) / 2``;
  ``attn_s_per_token_pair ≈ 4 · layers · q_heads · head_dim / (peak FLOP/s · MFU)``.
  It is what makes re-prefilling a long evicted history so expensive.

A step that schedules nothing takes 0 s. The model is linear on purpose: it is
cheap, monotone, and its four numbers can be derived from a datasheet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepTimeModel:
    fixed_s: float
    prefill_s_per_token: float
    decode_s_per_token: float
    kv_read_s_per_token: float
    attn_s_per_token_pair: float = 0.0

    def step_time(
        self, prefill_tokens: int, decode_tokens: int, kv_tokens_read: int, prefill_attn_pairs: float = 0.0
    ) -> float:
        if prefill_tokens == 0 and decode_tokens == 0:
            return 0.0
        return (
            self.fixed_s
            + self.prefill_s_per_token * prefill_tokens
            + self.decode_s_per_token * decode_tokens
            + self.kv_read_s_per_token * kv_tokens_read
            + self.attn_s_per_token_pair * prefill_attn_pairs
        )
