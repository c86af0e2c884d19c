"""Routes the proxy does not admit: relayed to a healthy replica, answered as the engine answers."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from concurproxy.testing.stub_upstream import StubBehaviour

EMBED = {"model": "stub-model", "input": "a b c"}


async def test_routed_to_a_replica_serving_the_body_model(proxy_factory):
    async with proxy_factory(behaviours=[StubBehaviour(model="a"), StubBehaviour(model="b")]) as h:
        for _ in range(4):
            async with h.session.post(h.url + "/v1/embeddings", json={**EMBED, "model": "b"}) as r:
                assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r1"
        seen = set()
        for _ in range(4):  # no model named: any healthy replica, spread
            async with h.session.get(h.url + "/version") as r:
                assert r.status == 200
                seen.add(r.headers["x-concurproxy-replica"])
        assert seen == {"r0", "r1"}
        async with h.session.post(h.url + "/v1/embeddings", json={**EMBED, "model": "c"}) as r:
            assert r.status == 200  # no replica names it: any replica, the engine decides


async def test_retried_before_the_first_byte_only_where_safe(proxy_factory):
    """A GET that met a 503 goes to the next replica; a POST's 503 is the engine's answer, relayed once."""
    stubs = [StubBehaviour(status=503), StubBehaviour()]
    async with proxy_factory(behaviours=stubs, health={"interval_s": 60, "unhealthy_after": 100}) as h:
        for _ in range(4):
            async with h.session.get(h.url + "/version") as r:
                assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r1"
        reg = h.components.metrics.registry
        assert reg.get_sample_value("concurproxy_upstream_retries_total", {"replica": "r0", "kind": "status"})
        statuses = []
        for _ in range(4):
            async with h.session.post(h.url + "/v1/embeddings", json=EMBED) as r:
                statuses.append((r.status, r.headers["x-concurproxy-replica"]))
                if r.status == 503:
                    assert (await r.json())["error"]["message"] == "stub failure"  # the engine's body
        assert (503, "r0") in statuses and (200, "r1") in statuses
        assert len(stubs[0].seen) + len(stubs[1].seen) == 4  # each POST sent once


async def test_engine_answers_are_relayed_with_their_headers_and_the_client_key_stays_here(proxy_factory):
    async with proxy_factory() as h:
        h.components.pool.get("r0").api_key = "replica-key"
        headers = {"Authorization": "Bearer client-key", "anthropic-version": "2023-06-01", "X-Request-Id": "rq-1"}
        async with h.session.post(h.url + "/tokenize", json={"prompt": "a b"}, headers=headers) as r:
            assert r.status == 200 and r.headers["X-Request-Id"] == "rq-1"
            assert r.headers["Content-Type"].startswith("application/json")
        sent = {k.lower(): v for k, v in h.stubs[0].seen_headers[-1].items()}
        assert sent["authorization"] == "Bearer replica-key" and sent["anthropic-version"] == "2023-06-01"
        assert sent["x-request-id"] == "rq-1"
        async with h.session.post(h.url + "/tokenize", data=b"{bad") as r:
            assert r.status == 400 and r.headers["x-concurproxy-replica"] == "r0"  # the engine's 400


async def test_unended_bodies_stream_through_and_a_cut_is_not_passed_off_as_whole(proxy_factory):
    async with proxy_factory(behaviours=[StubBehaviour(chunks=5, chunk_delay_s=0.01)]) as h:
        async with h.session.post(h.url + "/v1/responses", json={"model": "stub-model", "input": "x"}) as r:
            rid = (await r.json())["id"]
        async with h.session.get(h.url + f"/v1/responses/{rid}?stream=true") as r:
            assert r.status == 200 and "Content-Length" not in r.headers  # relayed as it came: chunked
            events = [e for e in (await r.text()).split("\n\n") if e]
        assert len(events) == 7 and events[-1].startswith("event: response.completed")
        h.stubs[0].cut_after_chunks = 2
        with pytest.raises(aiohttp.ClientPayloadError):
            async with h.session.get(h.url + f"/v1/responses/{rid}?stream=true") as r:
                await r.read()


async def test_front_door_errors_keep_the_paths_api_shape(proxy_factory):
    async with proxy_factory(listen={"max_body_bytes": 4096}) as h:
        big = {"model": "stub-model", "input": "x" * 10_000}
        async with h.session.post(h.url + "/v1/embeddings", json=big) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
        async with h.session.post(h.url + "/v1/messages/count_tokens", json=big) as r:
            assert r.status == 413
            assert await r.json() == {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": "the request body is larger than the configured limit",
                },
            }
        assert all(not s.seen for s in h.stubs)


async def test_a_stored_response_of_another_tenant_is_not_found(proxy_factory):
    import hashlib

    tenants = [{"name": n, "key_sha256": [hashlib.sha256(n.encode()).hexdigest()]} for n in ("t1", "t2")]
    async with proxy_factory(tenants=tenants, auth={"allow_anonymous": False}) as h:
        body = {"model": "stub-model", "input": "secret"}
        async with h.session.post(h.url + "/v1/responses", json=body, headers={"Authorization": "Bearer t1"}) as r:
            rid = (await r.json())["id"]
        async with h.session.get(h.url + f"/v1/responses/{rid}", headers={"Authorization": "Bearer t2"}) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "response_not_found"
        follow = {**body, "previous_response_id": rid}
        async with h.session.post(h.url + "/v1/responses", json=follow, headers={"Authorization": "Bearer t2"}) as r:
            assert r.status == 404 and orjson.loads(await r.read())["error"]["param"] == "previous_response_id"
        async with h.session.get(h.url + f"/v1/responses/{rid}", headers={"Authorization": "Bearer t1"}) as r:
            assert r.status == 200


async def test_a_compressed_body_goes_upstream_decoded_without_its_coding(proxy_factory):
    import gzip

    async with proxy_factory() as h:
        data = gzip.compress(orjson.dumps({"model": "stub-model", "prompt": "a b c d"}))
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        async with h.session.post(h.url + "/tokenize", data=data, headers=headers) as r:
            assert r.status == 200 and (await r.json())["count"] == 4
        assert "content-encoding" not in {k.lower() for k in h.stubs[0].seen_headers[-1]}
