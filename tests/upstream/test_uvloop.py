"""The same scenarios on uvloop (the proxy's production loop): its transports differ from asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from concurproxy.upstream.http1 import UpstreamPool

from . import test_client, test_raw_server, test_reuse, test_streaming
from .servers import Peers, aiohttp_server

SCENARIOS: list[Callable[[], Coroutine[Any, Any, None]]] = [
    test_client.test_connect_refused,
    test_streaming.test_slow_consumer_pauses_upstream,
    test_streaming.test_abort_mid_stream_server_sees_disconnect,
    test_streaming.test_server_closing_idle_connections_is_transparent,
    test_raw_server.test_stale_keepalive_get_is_retried_once_on_a_fresh_connection,
    test_raw_server.test_fresh_connection_closed_without_answer_is_an_error,
    test_raw_server.test_reused_connection_already_closing_is_retried,
    test_raw_server.test_body_until_close_and_interim_1xx,
    test_raw_server.test_truncated_content_length_body_is_disconnected,
    test_raw_server.test_204_and_head_have_no_body_and_keep_the_connection,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


REUSE_SCENARIOS: list[Callable[[], Coroutine[Any, Any, None]]] = [
    lambda: test_reuse.test_post_the_server_may_have_read_is_not_sent_again("rst"),
    lambda: test_reuse.test_idempotent_request_is_sent_once_more_on_a_fresh_connection("GET"),
    test_reuse.test_server_closing_the_idle_connection_before_the_write_resends_a_post,
    lambda: test_reuse.test_bodyless_response_announcing_a_body_is_not_reused(
        b"HTTP/1.1 204 No\r\nContent-Length: 47\r\n\r\n"
    ),
    lambda: test_reuse.test_stray_bytes_after_a_response_close_the_connection(test_reuse.OK + b"x", "GET", True),
]


@pytest.mark.parametrize("scenario", range(len(REUSE_SCENARIOS)))
def test_reuse_rules_on_uvloop(scenario: int) -> None:
    """uvloop reports a server's FIN/RST through its own transports: the re-send rules must hold there too."""
    make = REUSE_SCENARIOS[scenario]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(make())


def test_fixture_scenarios_on_uvloop() -> None:
    """Reuse, SSE, 200 concurrent requests with a pool of 10 - through the aiohttp fixture app."""

    async def main() -> None:
        peers, release = Peers(), asyncio.Event()
        async with aiohttp_server(test_client.make_app(peers, release), shutdown_timeout=0.1) as url:
            pool = UpstreamPool(max_per_host=8)
            env = (url, peers, pool, release)
            try:
                await test_client.test_content_length_json_and_reuse(env)
                await test_client.test_chunked_sse_iter_chunks(env)
                await test_client.test_large_bodies(env)
                await test_client.test_head_timeout_frees_the_slot(env)
                peers.seen.clear()
                await test_client.test_concurrency_200_with_pool_limit(env)
            finally:
                release.set()
                await pool.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
