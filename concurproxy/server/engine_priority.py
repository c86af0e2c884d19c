"""The ``priority`` a step carries to an upstream that schedules by it (vLLM ``--scheduling-policy priority``).

vLLM orders its waiting queue by ``(priority, arrival)`` (lower first) and, under KV pressure,
preempts the running request with the largest pair. An upstream opted in with
``upstreams[].priority_scheduling`` gets the step's priority class as that integer:
critical 0 < high 1 < normal 2 < low 3 (:class:`PriorityClass` values).

Client-supplied ``priority``: **clamped**, never above the class. An integer the client sends is
kept only when it is *larger* (the client lowering its own step); a smaller one, or a value
that is not an integer, is replaced by the class's. A tenant therefore cannot use the body to
jump the engine's queue: its standing there is the class the proxy gave the step (role or
``X-Priority``), the same class the fairness policy already serves it by.

Bytes: the client's body is forwarded as it came whenever no stage edited it; the field is
then spliced in before the closing brace instead of re-serialising the body. Only a body whose
own ``priority`` must change is serialised again (once per attempt on an opted-in upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from concurproxy.control.types import PriorityClass


def engine_priority(step_class: PriorityClass, client_value: object) -> int:
    """The integer to send: the class's, or the client's own when that is an int asking for less."""
    floor = int(step_class)
    if isinstance(client_value, int) and not isinstance(client_value, bool) and client_value > floor:
        return client_value
    return floor


def with_priority(payload: bytes, body: Mapping[str, Any], step_class: PriorityClass) -> bytes:
    """``payload`` (the JSON object ``body`` as it will be sent) with ``priority`` set for the engine."""
    if "priority" not in body:
        value = int(step_class)
        head = payload.rstrip()
        if not body or not head.endswith(b"}"):  # nothing to splice after: build it
            return orjson.dumps({**body, "priority": value})
        return head[:-1] + b',"priority":' + str(value).encode() + b"}"
    client = body["priority"]
    value = engine_priority(step_class, client)
    if type(client) is int and client == value:
        return payload  # the client's own value stands: its bytes go as they are
    return orjson.dumps({**body, "priority": value})
