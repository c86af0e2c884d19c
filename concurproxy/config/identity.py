"""Who a step belongs to when the client does not say (issue 20): the policy's ``identity`` section.

``client_session_ids`` lists, in order, where clients already put a conversation id of their own
(a header or a body field); ``infer`` turns on recognising an agent from its conversation when
none is sent. The default list holds only ids checked against each client's own source or docs;
docs/sessions.md says where each was checked and which candidates were left out, and why.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from concurproxy.config.base import Model


class ClientSessionIdConfig(Model):
    """One place a client's own session id is read from: a header or a dotted body path (exactly one)."""

    header: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Header name (case-insensitive), e.g. x-opencode-session."
    )
    body: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,3}$",
        description="Dotted path into the JSON body, e.g. session_params.session_id (a string or integer value).",
    )
    label: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,23}$",
        description="Prefix of the agent id made from it (LABEL:VALUE), so ids from different sources never meet.",
    )
    match: str | None = Field(
        None,
        description="A regular expression the value must contain; its first matching group is the session id "
        "(a value that does not match is not a session id), e.g. the session part of Claude Code's metadata.user_id.",
    )
    qualifier_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="A header that, when present, splits the session into sub-agents (LABEL:VALUE/QUALIFIER), "
        "e.g. Codex's x-openai-subagent.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ClientSessionIdConfig:
        if (self.header is None) == (self.body is None):
            raise ValueError("give exactly one of 'header' or 'body'")
        if self.match is not None:
            try:
                groups = re.compile(self.match).groups
            except re.error as exc:
                raise ValueError(f"match: not a regular expression: {exc}") from None
            if groups < 1:
                raise ValueError("match: needs a group, e.g. '_session_([0-9a-f-]+)$'")
        return self


# Claude Code's metadata.user_id carries its session: "user_<hash>_account_<uuid>_session_<uuid>" (older
# versions) or a JSON string with "session_id" (newer); any other user_id names a user, not an agent.
CLAUDE_CODE_USER_ID = r'_session_([0-9A-Fa-f-]{36})$|"session_id"\s*:\s*"([0-9A-Fa-f-]{36})"'


def default_client_session_ids() -> list[ClientSessionIdConfig]:
    """Verified sources only, most specific first (docs/sessions.md, "Session ids clients already send")."""
    c = ClientSessionIdConfig
    return [
        c(header="x-claude-code-session-id", label="claude-code"),
        c(header="x-opencode-session", label="opencode"),
        c(header="x-session-affinity", label="opencode"),
        c(header="session_id", label="codex", qualifier_header="x-openai-subagent"),
        c(header="x-session-id", label="session"),
        c(body="session_params.session_id", label="vllm-router"),
        c(body="conversation", label="conversation"),
        c(body="conversation.id", label="conversation"),
        c(body="metadata.user_id", label="claude-code", match=CLAUDE_CODE_USER_ID),
    ]


class IdentityConfig(Model):
    infer: Literal["chain", "off"] = Field(
        "chain",
        description="chain: a step without an agent id continues the agent whose remembered conversation it "
        "extends (else starts a new one); off: such a step is its own one-step agent.",
    )
    client_session_ids: list[ClientSessionIdConfig] = Field(
        default_factory=default_client_session_ids,
        description="Where clients already send a session id of their own, tried in order after X-Agent-Id.",
    )
    max_entries: int = Field(
        200_000,
        ge=100,
        description="Most remembered conversation fingerprints (LRU beyond). About 0.3 KB each: 200k is about 65 MB.",
    )
    ttl_s: float = Field(
        1800.0, gt=0, description="A fingerprint not used for this long is forgotten: a later step starts a new agent."
    )
    keys_per_agent: int = Field(
        8,
        ge=2,
        le=64,
        description="Fingerprints kept per agent (its newest): a busy agent cannot push a paused one out of the table.",
    )
    shared: bool = Field(
        True, description="With state.backend redis, share fingerprints through Redis (a fill-in for local misses)."
    )
