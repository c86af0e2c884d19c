"""How one step goes on the wire in each API, and how its answer is read (pure, no I/O).

One conversation model (``StepSpec.messages``: the agent's whole context as
(role, content) pairs) and three small codecs that write it as a
``/v1/chat/completions``, ``/v1/responses`` or Anthropic ``/v1/messages``
request and read usage, generated text and the first-token event back from
each answer (streamed or not). The codecs map the conversation the way the
bundled worker and vLLM map it back to chat messages (a leading system message
becomes ``instructions`` / ``system``; every other message stays its own
message, consecutive user turns included), so the same step sends the engine
the same tokens in every API.

Usage per API: chat ``usage.prompt_tokens`` (+ ``prompt_tokens_details.cached_tokens``)
in the final chunk; Responses ``response.usage`` in ``response.completed``
(``input_tokens_details.cached_tokens``); Messages ``message_start.message.usage``
then the cumulative ``message_delta.usage``, where the prompt is ``input_tokens +
cache_read_input_tokens + cache_creation_input_tokens``. The first-token event
(TTFT): chat, the first chunk with a choice; Responses, the first
``response.output_text.delta``; Messages, the first ``content_block_delta``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from loadgen.client import Attempt
    from loadgen.plan import StepSpec
    from loadgen.scenario import ClientSpec
    from loadgen.text import Message

ANTHROPIC_VERSION = "2023-06-01"  # the anthropic SDK's default anthropic-version header
_ERR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Link:
    """The previous step of an agent, for ``previous_response_id`` chaining."""

    messages: tuple[Message, ...]
    response_id: str


class Api(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...

    def body(self, spec: StepSpec, model: str, stream: bool, link: Link | None) -> dict[str, Any]: ...
    def auth(self, api_key: str) -> dict[str, str]: ...
    def event(self, a: Attempt, doc: dict[str, Any]) -> tuple[bool, str]:
        """Read one streamed event: (does it carry generated output, its text)."""
        ...

    def whole(self, a: Attempt, doc: dict[str, Any]) -> str:
        """Read a non-streamed answer; return its generated text."""
        ...


def headers(spec: StepSpec, api: Api, api_key: str, client: ClientSpec) -> dict[str, str]:
    """A step's request headers: the API's auth, plus identity and done headers when the mode sends them."""
    h = api.auth(api_key)
    if client.identity == "headers":
        h.update(spec.identity_headers())
    if client.done_signal and spec.agent_done:
        h["X-Agent-Done"] = "1"
    return h


def _split_system(messages: tuple[Message, ...]) -> tuple[str, tuple[Message, ...]]:
    if messages and messages[0][0] == "system" and messages[0][1]:
        return messages[0][1], messages[1:]
    return "", messages


def _int(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _set_usage(a: Attempt, prompt: int | None, completion: int | None, cached: int | None) -> None:
    """Record what a usage object reported (a missing field keeps what an earlier event said)."""
    if prompt is not None:
        a.prompt_tokens = prompt
    if completion is not None:
        a.completion_tokens = completion
    if cached is not None:
        a.cached_tokens = cached


@dataclass(frozen=True, slots=True)
class ChatApi:
    name: str = "chat"
    path: str = "/v1/chat/completions"

    def body(self, spec: StepSpec, model: str, stream: bool, link: Link | None) -> dict[str, Any]:
        return spec.body(model, stream)

    def auth(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def _usage(self, a: Attempt, doc: dict[str, Any]) -> None:
        u = doc.get("usage")
        if isinstance(u, dict):
            details = u.get("prompt_tokens_details")
            _set_usage(a, _int(u, "prompt_tokens"), _int(u, "completion_tokens"), _int(details, "cached_tokens"))

    def event(self, a: Attempt, doc: dict[str, Any]) -> tuple[bool, str]:
        self._usage(a, doc)
        return bool(doc.get("choices")), _choice_text(doc)

    def whole(self, a: Attempt, doc: dict[str, Any]) -> str:
        self._usage(a, doc)
        return _choice_text(doc)


def _choice_text(doc: dict[str, Any]) -> str:
    out = []
    for ch in doc.get("choices") or ():
        delta = ch.get("delta") or ch.get("message") or {}
        c = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(c, str):
            out.append(c)
        elif isinstance(ch.get("text"), str):
            out.append(ch["text"])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ResponsesApi:
    """With ``chain``, a step with a ``link`` sends ``previous_response_id`` and only the messages
    after the linked step's reply. ``store`` is asked for only when chaining: clients that resend
    the history (e.g. Codex) send ``store: false``."""

    chain: bool = False
    name: str = "responses"
    path: str = "/v1/responses"

    def body(self, spec: StepSpec, model: str, stream: bool, link: Link | None) -> dict[str, Any]:
        system, rest = _split_system(spec.messages)
        if link is not None:
            rest = spec.messages[len(link.messages) + 1 :]
        b: dict[str, Any] = {
            "model": model,
            "input": [{"role": r, "content": c} for r, c in rest],
            "max_output_tokens": spec.max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": stream,
            "store": self.chain,
        }
        if system:
            b["instructions"] = system  # not carried over a chain: sent with every step, as the Agents SDK does
        if link is not None:
            b["previous_response_id"] = link.response_id
        return b

    def auth(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def _response(self, a: Attempt, r: Any) -> None:
        if not isinstance(r, dict):
            return
        if isinstance(r.get("id"), str):
            a.response_id = r["id"]
        u = r.get("usage")
        if isinstance(u, dict):
            details = u.get("input_tokens_details")
            _set_usage(a, _int(u, "input_tokens"), _int(u, "output_tokens"), _int(details, "cached_tokens"))
        if r.get("status") == "failed":
            a.error = f"response failed: {str(r.get('error'))[:_ERR_CHARS]}"

    def event(self, a: Attempt, doc: dict[str, Any]) -> tuple[bool, str]:
        kind = doc.get("type")
        if kind == "response.output_text.delta":
            d = doc.get("delta")
            return True, d if isinstance(d, str) else ""
        if kind == "error":
            a.error = f"stream error: {str(doc.get('message') or doc)[:_ERR_CHARS]}"
        elif isinstance(kind, str) and kind.startswith("response.") and "response" in doc:
            self._response(a, doc["response"])  # created / in_progress / completed / incomplete / failed
        return False, ""

    def whole(self, a: Attempt, doc: dict[str, Any]) -> str:
        self._response(a, doc)
        texts = []
        for item in doc.get("output") or ():
            for part in item.get("content") or () if isinstance(item, dict) else ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text", "")))
        return "".join(texts)


@dataclass(frozen=True, slots=True)
class MessagesApi:
    name: str = "messages"
    path: str = "/v1/messages"

    def body(self, spec: StepSpec, model: str, stream: bool, link: Link | None) -> dict[str, Any]:
        system, rest = _split_system(spec.messages)
        b: dict[str, Any] = {
            "model": model,
            "max_tokens": spec.max_tokens,
            "messages": [{"role": r, "content": c} for r, c in rest],
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": stream,
        }
        if system:
            b["system"] = system
        return b

    def auth(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    def _usage(self, a: Attempt, u: Any) -> None:
        if not isinstance(u, dict):
            return
        prompt = cached = None
        if (n := _int(u, "input_tokens")) is not None:  # Anthropic's input_tokens excludes the cache
            cached = _int(u, "cache_read_input_tokens") or 0
            prompt = n + cached + (_int(u, "cache_creation_input_tokens") or 0)
        _set_usage(a, prompt, _int(u, "output_tokens"), cached)

    def event(self, a: Attempt, doc: dict[str, Any]) -> tuple[bool, str]:
        kind = doc.get("type")
        if kind == "content_block_delta":
            d = doc.get("delta") or {}
            return True, d.get("text", "") if isinstance(d, dict) and d.get("type") == "text_delta" else ""
        if kind == "message_start":
            self._usage(a, (doc.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._usage(a, doc.get("usage"))
        elif kind == "error":
            a.error = f"stream error: {str(doc.get('error'))[:_ERR_CHARS]}"
        return False, ""

    def whole(self, a: Attempt, doc: dict[str, Any]) -> str:
        self._usage(a, doc.get("usage"))
        blocks = doc.get("content") or ()
        return "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")


def make_api(client: ClientSpec) -> Api:
    """The codec of a scenario's ``client.api``."""
    if client.api == "responses":
        return ResponsesApi(chain=client.responses_chain)
    return MessagesApi() if client.api == "messages" else ChatApi()


def chain_link(prev: Link | None, spec: StepSpec) -> Link | None:
    """``prev`` if ``spec`` continues it (its messages are prev's, prev's reply, then new input), else None."""
    if prev is None:
        return None
    n = len(prev.messages)
    m = spec.messages
    ok = len(m) > n + 1 and m[:n] == prev.messages and m[n][0] == "assistant"
    return prev if ok else None
