"""Which agent a step belongs to: the one entry point of session inference for the request path.

At step start `SessionResolver.resolve` decides, in this order:

1. an agent id already decided: ``X-Agent-Id`` (source ``header``) or the codec's (``codec``, e.g. the
   agent of a Responses ``previous_response_id``);
2. a session id the client already sends (``client-session``, `client_ids.py`);
3. with ``identity.infer: chain``, the conversation (`fingerprint.py`): a step whose history ends
   with a remembered step's prompt + answer (``chain``/``reply``), or repeats a step's messages
   exactly (``chain``/``retry``), or ends with a remembered prompt + one run of assistant messages
   whose answer was not remembered (``chain``/``prompt``) continues that agent; else a new agent
   (``new``, id ``s-<16 hex>``);
4. ``one-shot`` (``req-<request id>``, as today) when inference is off or the body is unusable.

At the step's successful end `SessionResolver.remember` adds key(prompt + answer) → agent. A
different answer to a prompt that was already answered (two agents that sent the same step, or a
retry whose first attempt also completed) makes the later answer a child agent: from then on the
two conversations are two agents. The full rules and their reasons: docs/sessions.md.

Failure policy: nothing raises out of here. A conversation the fingerprint cannot read (a caller
that passed something other than strings) makes a one-shot step and counts ``errors``.
Concurrency: one event loop, no awaits; the clock is injected.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from concurproxy.config.identity import IdentityConfig
from concurproxy.identity import Identity
from concurproxy.sessions.client_ids import ClientSessionIds
from concurproxy.sessions.conversation import TurnLike
from concurproxy.sessions.fingerprint import ArgsCache, StepKeys, reply_key, step_keys
from concurproxy.sessions.table import SessionTable

Source = Literal["header", "codec", "client-session", "chain", "new", "one-shot"]
PutHook = Callable[[bytes, str], None]
_READ_ERRORS = (TypeError, ValueError, AttributeError)  # a malformed view from a caller: fail open


@dataclass(frozen=True, slots=True)
class Resolved:
    agent_id: str  # tenant-relative, as `Identity.agent_id`; the request path scopes it as tenant/agent
    source: Source
    detail: str = ""  # client-session: the source's label; chain: reply | retry | prompt | shared; one-shot: why
    tenant: str = ""
    keys: StepKeys | None = field(default=None, repr=False, compare=False)

    @property
    def one_shot(self) -> bool:
        return self.source == "one-shot"

    @property
    def inferred(self) -> bool:
        return self.source in ("chain", "new")

    @property
    def scoped_id(self) -> str:
        return f"{self.tenant}/{self.agent_id}"

    def identity(self, ident: Identity) -> Identity:
        """``ident`` (from `extract_identity`, which found no agent id) carrying this agent. An inferred,
        client-session or codec agent does not end with this step (``done`` False: extract_identity
        marks a one-step agent done); an idle agent goes dormant instead."""
        if self.source in ("header", "one-shot"):
            return ident
        task = self.agent_id if ident.task_id == ident.agent_id else ident.task_id
        return Identity(ident.tenant, self.agent_id, task, ident.role, ident.priority, False, False)


@dataclass(slots=True)
class _Agent:
    tenant: str
    created: float
    last_seen: float
    steps: int = 0  # steps resolved to it
    parent: str | None = None  # the agent it was forked from


def random_id() -> str:
    return f"s-{os.urandom(8).hex()}"


class SessionResolver:
    def __init__(
        self,
        config: IdentityConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = random_id,
    ) -> None:
        self.config, self.clock, self.new_id = config, clock, new_id
        self.infer = config.infer == "chain"
        self.client_ids = ClientSessionIds(config.client_session_ids)
        self.table = SessionTable(config.max_entries, config.ttl_s, config.keys_per_agent, self._gone)
        self.on_put: PutHook | None = None  # the shared store's writer (`shared.py`)
        self._agents: dict[str, _Agent] = {}  # inferred agents with keys in the table (ids are unique)
        self._args: ArgsCache = {}  # canonical tool-call arguments (`fingerprint.step_keys`)
        self.counts: dict[str, int] = {}
        self.forks = self.errors = 0

    # ---- step start -----------------------------------------------------------------------
    def resolve(
        self,
        tenant: str,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        conversation: Sequence[TurnLike] | None,
        *,
        request_id: str,
        explicit: str | None = None,
        explicit_source: Literal["header", "codec"] = "header",
    ) -> Resolved:
        if explicit:
            return self._count(Resolved(explicit, explicit_source, tenant=tenant))
        found = self.client_ids.find(headers, body)
        if found is not None:
            return self._count(Resolved(found.agent_id, "client-session", found.label, tenant))
        if not self.infer:
            return self._one_shot(tenant, request_id, "infer-off")
        if not conversation:
            return self._one_shot(tenant, request_id, "no-conversation")
        try:
            keys = step_keys(tenant, conversation, self._args)
        except _READ_ERRORS:
            self.errors += 1
            return self._one_shot(tenant, request_id, "unreadable")
        return self._count(self._infer(tenant, keys))

    def _infer(self, tenant: str, keys: StepKeys) -> Resolved:
        now, t = self.clock(), self.table
        if keys.chain is not None and (e := t.get(keys.chain, now)) is not None:
            how = "reply"  # the previous step's prompt + its answer, as the client resent it
        elif (e := t.get(keys.prompt, now)) is not None:
            how = "retry"  # the very same messages again (before or after their answer)
        elif keys.previous is not None and (e := t.get(keys.previous, now)) is not None:
            how = "prompt"  # the previous step's prompt; its answer was not remembered (or was rewritten)
        else:
            agent = self.new_id()
            self._agent(tenant, agent, now)
            t.put(keys.prompt, agent, now)  # published after the shared fill-in (`adopt`), not before
            return Resolved(agent, "new", "", tenant, keys)
        self._agent(tenant, e.agent, now)
        self._put(keys.prompt, e.agent, now)
        return Resolved(e.agent, "chain", how, tenant, keys)

    def adopt(self, resolved: Resolved, agent: str | None) -> Resolved:
        """A ``new`` step after the shared fill-in: ``agent`` (found in Redis) or, when None, its own
        new id; either way its prompt key is now published."""
        if resolved.keys is None:
            return resolved
        now = self.clock()
        if agent is None or agent == resolved.agent_id:
            self._publish(resolved.keys.prompt, resolved.agent_id)
            return resolved
        self._agent(resolved.tenant, agent, now)
        self._put(resolved.keys.prompt, agent, now)  # (the provisional new id loses its only key)
        self.counts["new"] = self.counts.get("new", 1) - 1  # counted by `resolve`: a continued agent after all
        return self._count(replace(resolved, agent_id=agent, source="chain", detail="shared"))

    # ---- step end -------------------------------------------------------------------------
    def remember(self, resolved: Resolved, reply: Sequence[TurnLike] | None) -> None:
        """A successful step's answer, as the client will resend it (``replies.py``). Call it once the
        answer was delivered: one the client never got would split its retry off as a child."""
        if not resolved.inferred or resolved.keys is None or not reply:
            return
        try:
            answer = reply_key(resolved.keys, reply, self._args)
        except _READ_ERRORS:
            self.errors += 1
            return
        now, t, agent = self.clock(), self.table, resolved.agent_id
        prompt = t.peek(resolved.keys.prompt, now)
        known = t.peek(answer, now)
        if known is not None:
            agent = known.agent  # this answer was remembered before (a retry that got the same answer)
        elif prompt is not None and prompt.answer is not None and prompt.answer != answer:
            agent = self.new_id()  # a second, different answer to one prompt: the later one is a child
            self.forks += 1
            self._agent(resolved.tenant, agent, now, parent=resolved.agent_id)
        if prompt is not None and prompt.answer is None:
            prompt.answer = answer
        self._put(answer, agent, now)

    # ---- views ----------------------------------------------------------------------------
    def state(self, limit: int = 50) -> dict[str, Any]:
        """JSON-ready, for /admin/state: counters and the most recently seen inferred agents."""
        self.table.sweep(self.clock())
        recent = heapq.nlargest(limit, self._agents.items(), key=lambda kv: kv[1].last_seen)
        return {
            "infer": self.config.infer,
            "entries": len(self.table),
            "max_entries": self.table.max_entries,
            "ttl_s": self.table.ttl_s,
            "agents": len(self._agents),
            "resolved": dict(self.counts),
            "forks": self.forks,
            "errors": self.errors,
            "evicted": self.table.evicted,
            "expired": self.table.expired,
            "recent": [
                {"tenant": a.tenant, "agent": agent, "steps": a.steps, "parent": a.parent, "idle_s": self._idle(a)}
                for agent, a in recent
            ],
        }

    # ---- internals ------------------------------------------------------------------------
    def _idle(self, a: _Agent) -> float:
        return round(self.clock() - a.last_seen, 3)

    def _one_shot(self, tenant: str, request_id: str, why: str) -> Resolved:
        return self._count(Resolved(f"req-{request_id}", "one-shot", why, tenant))

    def _count(self, r: Resolved) -> Resolved:
        self.counts[r.source] = self.counts.get(r.source, 0) + 1
        return r

    def _agent(self, tenant: str, agent: str, now: float, parent: str | None = None) -> None:
        a = self._agents.get(agent)
        if a is None:
            a = self._agents[agent] = _Agent(tenant, now, now, parent=parent)
        if parent is None:  # a step of it (a child is created at its parent's step end)
            a.steps += 1
        a.last_seen = now

    def _put(self, key: bytes, agent: str, now: float) -> None:
        self.table.put(key, agent, now)
        self._publish(key, agent)

    def _publish(self, key: bytes, agent: str) -> None:
        if self.on_put is not None:
            self.on_put(key, agent)

    def _gone(self, agent: str) -> None:
        self._agents.pop(agent, None)
