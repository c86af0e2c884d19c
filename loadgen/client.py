"""One HTTP attempt of one step against an OpenAI- or Anthropic-compatible target.

The step's API codec (:mod:`loadgen.apis`) reads each streamed event (or the
whole answer): streaming attempts measure TTFT as the time to the first event
that carries generated output; token counts come from the usage the API
reports or, when the target sends none, from the generated text under
``concurproxy.tokens``. The proxy's
``x-concurproxy-queue-wait-ms`` / ``x-concurproxy-replica`` response headers
are recorded when present. Every attempt is bounded by ``timeout_s`` overall.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from concurproxy.tokens import count_tokens
from loadgen.apis import Api, ChatApi

QUEUE_WAIT_HEADER = "x-concurproxy-queue-wait-ms"
REPLICA_HEADER = "x-concurproxy-replica"
_ERR_BODY_CHARS = 300


class TargetUnreachable(ConnectionError):
    """The target did not answer at all (refused, DNS, timeout) before the run started."""


def api_url(target: str, path: str) -> str:
    """``target`` (a base URL, with or without ``/v1``) joined with an API path such as ``/v1/messages``."""
    base = target.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + path


_CHAT = ChatApi()


def chat_url(target: str) -> str:
    return api_url(target, _CHAT.path)


async def check_target(client: httpx.AsyncClient, target: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear message when nothing answers at ``target`` (any HTTP answer is fine)."""
    url = chat_url(target).removesuffix("/chat/completions") + "/models"
    try:
        await client.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise TargetUnreachable(
            f"cannot reach target {target} (GET {url} failed: {type(e).__name__}: {e or 'no answer'}). "
            "Is the proxy or engine running and is the URL right?"
        ) from None


@dataclass(slots=True)
class Attempt:
    status: int
    start: float
    end: float
    ttft: float | None = None
    queue_wait_ms: float | None = None
    replica: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # the prefix-cache hit the target reported
    response_id: str | None = None  # Responses API: for previous_response_id chaining
    error: str | None = None
    retry_after_s: float | None = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - time.time())


def _read_headers(a: Attempt, h: httpx.Headers) -> None:
    qw = h.get(QUEUE_WAIT_HEADER)
    if qw is not None:
        try:
            a.queue_wait_ms = float(qw)
        except ValueError:
            a.queue_wait_ms = None
    a.replica = h.get(REPLICA_HEADER)
    a.retry_after_s = _retry_after(h.get("retry-after"))


async def _stream(a: Attempt, r: httpx.Response, api: Api, clock: Callable[[], float]) -> None:
    text: list[str] = []
    async for line in r.aiter_lines():
        if not line.startswith("data:"):
            continue  # "event:" names repeat the data's "type"; the codecs dispatch on that
        data = line[5:].strip()
        if data == "[DONE]":
            break
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            continue
        if "error" in doc and "type" not in doc:  # an OpenAI-shaped error written into the stream
            a.error = f"stream error: {str(doc['error'])[:_ERR_BODY_CHARS]}"
            break
        output, piece = api.event(a, doc)
        if a.error is not None:
            break
        if output and a.ttft is None:
            a.ttft = clock() - a.start
        text.append(piece)
    if a.completion_tokens is None and text:
        a.completion_tokens = count_tokens("".join(text))


async def send(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    api: Api = _CHAT,
) -> Attempt:
    """POST one step; never raises for HTTP/transport failures (they become ``status``/``error``)."""
    a = Attempt(status=0, start=clock(), end=0.0)
    payload = orjson.dumps(body)
    hdrs = {**headers, "Content-Type": "application/json"}
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, content=payload, headers=hdrs) as r:
                a.status = r.status_code
                _read_headers(a, r.headers)
                if r.status_code != 200:
                    raw = await r.aread()
                    a.error = raw[:_ERR_BODY_CHARS].decode("utf-8", "replace") or f"HTTP {r.status_code}"
                elif body.get("stream"):
                    await _stream(a, r, api, clock)
                else:
                    doc = orjson.loads(await r.aread())
                    a.ttft = clock() - a.start
                    text = api.whole(a, doc) if isinstance(doc, dict) else ""
                    if a.completion_tokens is None:
                        a.completion_tokens = count_tokens(text)
    except TimeoutError:
        a.error = f"timeout after {timeout_s:g}s"
    except httpx.HTTPError as e:
        a.error = f"{type(e).__name__}: {e}"[:_ERR_BODY_CHARS]
    except orjson.JSONDecodeError as e:
        a.error = f"bad JSON from target: {e}"[:_ERR_BODY_CHARS]
    a.end = clock()
    return a
