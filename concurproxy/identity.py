"""Who is asking: one typed `Identity` per step, extracted once at the front door.

Headers first (``X-Agent-Id`` / ``X-Session-Id``, ``X-Task-Id``, ``X-Agent-Role``,
``X-Priority``), then the body's ``metadata`` and ``user`` as fallbacks. The
tenant never comes from a header: it is resolved from the API key by the
caller. Values are validated here (length, characters) before they can reach
logs, metric labels or state keys. A request with no agent id is its own
one-step agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from concurproxy.control.types import PriorityClass
from concurproxy.errors import bad_request

MAX_ID_LEN = 128
_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_TRUE = frozenset({"1", "true", "yes"})
DEFAULT_ROLE = "default"


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    agent_id: str
    task_id: str
    role: str
    priority: PriorityClass | None  # None: not given; the role's priority applies
    one_shot: bool  # no agent id was given: the agent is this single step
    done: bool  # the client says this is the agent's last step (X-Agent-Done)


def _clean(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    if not _ID_RE.match(text):
        raise bad_request(
            f"{name} must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9._:@/+=-]", param=name, code="invalid_identity"
        )
    return text


def _priority(value: str | None) -> PriorityClass | None:
    if value is None:
        return None
    try:
        return PriorityClass[value.strip().lower()]
    except KeyError:
        pass
    try:
        return PriorityClass(int(value))
    except ValueError:
        pass
    names = ", ".join(p.name for p in PriorityClass)
    raise bad_request(f"X-Priority must be one of {names} (or 0-3)", param="X-Priority", code="invalid_identity")


def extract_identity(headers: Mapping[str, str], body: Mapping[str, Any], tenant: str, request_id: str) -> Identity:
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    agent = _clean(
        headers.get("X-Agent-Id")
        or headers.get("X-Session-Id")
        or meta.get("agent_id")
        or meta.get("session_id")
        or body.get("user"),
        "X-Agent-Id",
    )
    task = _clean(headers.get("X-Task-Id") or meta.get("task_id"), "X-Task-Id")
    role = _clean(headers.get("X-Agent-Role") or meta.get("role"), "X-Agent-Role") or DEFAULT_ROLE
    prio_raw = headers.get("X-Priority") or meta.get("priority")
    priority = _priority(str(prio_raw) if prio_raw is not None else None)
    done_raw = headers.get("X-Agent-Done") or meta.get("agent_done")
    done = str(done_raw).lower() in _TRUE if done_raw is not None else False
    one_shot = agent is None
    agent_id = agent if agent is not None else f"req-{request_id}"
    return Identity(
        tenant=tenant,
        agent_id=agent_id,
        task_id=task if task is not None else agent_id,
        role=role,
        priority=priority,
        one_shot=one_shot,
        done=done or one_shot,
    )
