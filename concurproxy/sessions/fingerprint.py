"""Step fingerprints: one running hash over a conversation, read once per step.

*Canonical message.* Role, the call it answers (``tool_call_id``), its text and its tool calls
(id, name, arguments), each length-prefixed so that no two different messages serialise alike.
Normalised so that what clients change between steps does not count: the text is stripped of
surrounding whitespace; a system message loses a leading ``x-anthropic-billing-header`` line
(Claude Code writes a per-request hash there); tool-call arguments that parse as JSON are
re-serialised compactly with sorted keys (frameworks such as LangChain parse the engine's
arguments and dump them again with other spacing). Ids are kept: they tell apart two agents that
made the same call. Re-serialising arguments costs ~1 µs per call and every step resends all the
earlier calls, so the caller keeps a cache of canonical arguments by their text (`ArgsCache`).

*Keys.* For a step with messages ``m[0:n]`` three prefixes matter (``i`` = just after the last
assistant message, ``j`` = the start of the run of assistant messages that ends at ``i``):

* ``prompt``  = key(m[0:n]): the whole step; the same messages again are a retry;
* ``chain``   = key(m[0:i]): the previous step's prompt plus its reply, as remembered at its end;
* ``previous``= key(m[0:j]): the previous step's prompt alone (its reply was not remembered).

*Incremental.* One hash object is fed every message once, in order (one update per stretch between
two boundaries); a key is its digest taken at a boundary (``digest()`` leaves the running state as
it is). The state after ``m[n-1]`` is
kept in `StepKeys`, so the reply is hashed at the step's end without reading the prompt again:
per step the cost is one pass of SHA-1 over the step's text, whatever its length (no JSON
re-serialisation, no per-prefix re-hashing). Measured by ``benchmarks/session_fingerprint.py``.

*Why SHA-1.* Keys must be stable across processes (they are shared through Redis), so Python's
keyed ``hash()`` will not do; of hashlib's, SHA-1 is the fastest on CPUs with SHA extensions
(about twice BLAKE2b here). Collision resistance is not what protects anything: the hash is
seeded with the tenant, so a crafted collision could only merge the crafting tenant's own agents.
Keys are the first 16 bytes of the digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from concurproxy.sessions.conversation import BILLING_HEADER, ToolCallLike, TurnLike

KEY_BYTES = 16
ARGS_CACHE_MAX = 20_000  # canonical arguments kept (a few MB at most); cleared whole when full
ArgsCache = dict[str, bytes]
_ENC = "surrogatepass"  # a lone surrogate in a parsed body must not raise


class StepKeys(NamedTuple):
    prompt: bytes
    chain: bytes | None  # None: the step holds no assistant message
    previous: bytes | None  # None: no assistant message, or nothing before the first run of them
    state: Any  # the hash after the last message (a hashlib object), extended by `reply_key`


def _args(value: Any) -> bytes:
    if value.__class__ is str:
        if value in ("", "{}"):
            return b"{}"
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value.encode("utf-8", _ENC)  # type: ignore[no-any-return]
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # (orjson.JSONEncodeError) e.g. an integer beyond 64 bits
        return repr(value).encode("utf-8", _ENC)


def _canonical(m: TurnLike, out: list[bytes], cache: ArgsCache) -> None:
    """Append the canonical bytes of ``m`` to ``out`` (see the module docstring)."""
    role, text = m.role, m.text
    if role == "system" and text.startswith(BILLING_HEADER):
        text = text.partition("\n")[2]
    if text and (text[0].isspace() or text[-1].isspace()):  # (strip copies the text: only when needed)
        text = text.strip()
    raw = text.encode("utf-8", _ENC)
    calls: Sequence[ToolCallLike] = m.tool_calls
    out.append(f"\x00{role}\x00{m.tool_call_id or ''}\x00{len(calls)}\x00{len(raw)}\x00".encode("utf-8", _ENC))
    out.append(raw)
    for c in calls:
        raw_args = c.arguments
        args = cache.get(raw_args) if raw_args.__class__ is str else None
        if args is None:
            args = _args(raw_args)
            if raw_args.__class__ is str:
                if len(cache) >= ARGS_CACHE_MAX:
                    cache.clear()
                cache[raw_args] = args
        out.append(f"{c.id}\x00{c.name}\x00{len(args)}\x00".encode("utf-8", _ENC))
        out.append(args)


def _boundaries(messages: Sequence[TurnLike]) -> tuple[int, int]:
    """(j, i): i just after the last assistant message (0: none), j the start of its run."""
    i = len(messages)
    while i and messages[i - 1].role != "assistant":
        i -= 1
    j = i
    while j and messages[j - 1].role == "assistant":
        j -= 1
    return j, i


def _segment(h: Any, messages: Sequence[TurnLike], cache: ArgsCache) -> None:
    # one update per segment: hashlib's per-call overhead (~0.5 µs) would otherwise cost more than
    # hashing the text itself for conversations of many short messages
    out: list[bytes] = []
    for m in messages:
        _canonical(m, out, cache)
    h.update(b"".join(out))


def step_keys(tenant: str, messages: Sequence[TurnLike], cache: ArgsCache | None = None) -> StepKeys:
    """The keys of one step (see the module docstring). ``cache``: canonical tool-call arguments by
    their text, kept by the caller across steps (each step resends every earlier call)."""
    cache = {} if cache is None else cache
    j, i = _boundaries(messages)
    h = hashlib.sha1(usedforsecurity=False)
    h.update(tenant.encode("utf-8", _ENC) + b"\x00")  # tenants never share a key
    _segment(h, messages[:j], cache)
    previous = h.digest()[:KEY_BYTES] if i and j else None
    _segment(h, messages[j:i], cache)
    chain = h.digest()[:KEY_BYTES] if i else None
    _segment(h, messages[i:], cache)
    return StepKeys(h.digest()[:KEY_BYTES], chain, previous, h)


def reply_key(keys: StepKeys, reply: Sequence[TurnLike], cache: ArgsCache | None = None) -> bytes:
    """key(prompt + reply), from the state kept at the prompt's end (the prompt is not read again)."""
    h = keys.state.copy()
    _segment(h, reply, {} if cache is None else cache)
    return h.digest()[:KEY_BYTES]  # type: ignore[no-any-return]
