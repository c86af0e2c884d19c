"""The request body rules openapi.yaml states, held by the chat codec's ``parse`` (schemathesis found each gap)."""

from __future__ import annotations

import pytest

from concurproxy.errors import ProxyError
from concurproxy.server.api import CHAT as CHAT_CODEC


def parse_body(raw: bytes) -> object:
    return CHAT_CODEC.parse(raw, 4096)


def _chat(extra: str) -> bytes:
    return b'{"model": "m", "messages": [{"role": "user"}]' + extra.encode() + b"}"


@pytest.mark.parametrize(
    "extra",
    [
        ', "max_tokens": 2',
        ', "max_tokens": 2.0',  # JSON Schema's integer: 2.0 is 2 (was a 400)
        ', "max_tokens": 1e2',
        ', "max_tokens": null',
        ', "max_tokens": 9223372036854775807',
        ', "max_completion_tokens": 5, "max_tokens": null',
        ', "stream": true, "stream_options": {"include_usage": false}',
        ', "stream": true, "stream_options": null',  # nullable in the spec, as in OpenAI's (long API fuzz)
    ],
)
def test_what_the_spec_allows_is_accepted(extra: str) -> None:
    parse_body(_chat(extra))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (', "max_tokens": 0', "max_tokens"),
        (', "max_tokens": 2.5', "max_tokens"),
        (', "max_tokens": true', "max_tokens"),
        (', "max_tokens": "2"', "max_tokens"),
        (', "max_tokens": 9223372036854775808', "max_tokens"),
        (', "max_tokens": 1e30', "max_tokens"),
        (', "max_tokens": 3, "max_completion_tokens": 0', "max_completion_tokens"),  # was accepted
        (', "stream_options": {"include_usage": "yes"}', "stream_options.include_usage"),  # was accepted
    ],
)
def test_what_the_spec_forbids_is_a_400(extra: str, param: str) -> None:
    with pytest.raises(ProxyError) as err:
        parse_body(_chat(extra))
    assert (err.value.status, err.value.param) == (400, param)
