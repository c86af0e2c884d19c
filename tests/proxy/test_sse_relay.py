from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.server.api import CHAT, MESSAGES, RESPONSES
from concurproxy.server.api.chat import ChatRelay as SSERelay

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_events_split_across_reads_are_reassembled():
    relay = SSERelay(strip_usage=False)
    stream = CONTENT + CONTENT + USAGE + DONE
    out = b"".join(relay.feed(stream[i : i + 5]) for i in range(0, len(stream), 5))
    assert out == stream
    assert relay.usage is not None and relay.usage.completion_tokens == 7 and relay.done_seen


def test_usage_only_chunk_is_stripped_when_injected():
    relay = SSERelay(strip_usage=True)
    assert relay.feed(CONTENT + USAGE + DONE) == CONTENT + DONE
    assert relay.usage.prompt_tokens == 3


def test_crlf_separators_and_usage_inside_content_chunk_kept():
    relay = SSERelay(strip_usage=True)
    with_usage = b'data: {"choices":[{"index":0}],"usage": {"prompt_tokens":1,"completion_tokens":2}}\r\n\r\n'
    assert relay.feed(with_usage) == with_usage  # it carries choices: never dropped
    assert relay.usage.completion_tokens == 2


def test_unterminated_tail_is_flushed():
    relay = SSERelay(strip_usage=False)
    assert relay.feed(b"data: [DONE]") == b""
    assert relay.flush() == b"data: [DONE]\n\n"


def test_garbage_is_relayed_not_crashed():
    relay = SSERelay(strip_usage=True)
    junk = b'data: {"usage":{broken\n\n'
    assert relay.feed(junk) == junk
    assert relay.usage is None


PIECES = [CONTENT, USAGE, DONE, b"\n", b"\r\n", b"data: x", b": comment\n\n", b"\n\n\n", b'"usage":']
R_USAGE = b'{"input_tokens":3,"output_tokens":2}'
API_PIECES = {
    "responses": [
        b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1","usage":null}}\n\n',
        b'event: response.in_progress\ndata: {"type":"response.in_progress","response":{"id":"r1","usage":null}}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r1","usage":'
        + R_USAGE
        + b"}}\n\n",
    ],
    "messages": [
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"x"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":2}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ],
}


@settings(max_examples=300, deadline=None)
@given(
    api=st.sampled_from(["chat", "responses", "messages"]),
    parts=st.lists(st.integers(0, 30), max_size=12),
    cuts=st.lists(st.integers(1, 80), max_size=8),
    strip=st.booleans(),
)
def test_fast_paths_equal_the_event_loop(api: str, parts: list[int], cuts: list[int], strip: bool) -> None:
    """Same output per read, same counters, as feeding every read through the per-event loop, for every
    API's relay (the whole-read fast path, and the marked-events path of a read holding whole events)."""
    codec = {"chat": CHAT, "responses": RESPONSES, "messages": MESSAGES}[api]
    pieces = PIECES + API_PIECES.get(api, [])
    stream = b"".join(pieces[i % len(pieces)] for i in parts)
    reads, pos = [], 0
    for c in cuts:
        reads.append(stream[pos : pos + c])
        pos += c
    reads.append(stream[pos:])
    fast, slow = codec.relay(strip, 1 << 20), codec.relay(strip, 1 << 20)
    for r in reads:
        if r:
            assert fast.feed(r) == slow._feed_events(r)
    assert fast.flush() == slow.flush()
    assert (fast.chunks_seen, fast.done_seen, fast.usage) == (slow.chunks_seen, slow.done_seen, slow.usage)
    assert fast.response_id == slow.response_id


def test_a_whole_stream_in_one_read_sends_only_marked_events_through_keep():
    relay = SSERelay(strip_usage=True)
    stream = CONTENT * 5 + USAGE + DONE
    assert relay.feed(stream) == CONTENT * 5 + DONE
    assert relay.chunks_seen == 7 and relay.done_seen and relay.usage.completion_tokens == 7


def test_whole_content_chunks_take_the_fast_path_and_count():
    relay = SSERelay(strip_usage=True)
    assert relay.feed(CONTENT + CONTENT) == CONTENT + CONTENT and relay.chunks_seen == 2
    assert relay.feed(USAGE + DONE) == DONE and relay.usage is not None and relay.done_seen


async def test_an_upstream_event_past_the_bound_fails_the_step_cleanly(proxy_factory):
    """Issue 21 item 7: an event that never ends stops at limits.max_sse_event_bytes: the client gets the
    API's error event and the end of the stream, the step counts as an upstream error, its slot is free."""
    from concurproxy.testing.stub_upstream import StubBehaviour

    stub = StubBehaviour(flood_bytes=1_000_000)
    async with proxy_factory(behaviours=[stub], limits={"max_sse_event_bytes": 65536}) as h:
        body = {"model": "stub-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "stream": True}
        r = await h.post("/v1/chat/completions", body, headers={"X-Agent-Id": "a1"})
        events = [e for e in (await r.text()).split("\n\n") if e]
        assert r.status == 200 and len(events) == 3  # the first chunk, the error, [DONE]
        assert '"upstream_event_too_large"' in events[1] and events[2] == "data: [DONE]"
        step = h.listener.steps[-1]
        assert step.outcome == "error"
        reg = h.components.metrics.registry
        assert reg.get_sample_value("concurproxy_upstream_errors_total", {"replica": "r0", "kind": "mid_stream"}) == 1
        state = await (await h.session.get(h.url + "/admin/state")).json()
        assert all(rep["running_steps"] == 0 for rep in state["admission"]["replicas"].values())
