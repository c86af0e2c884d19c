"""Tenant from the API key (``Authorization: Bearer …``).

The tenant never comes from a header the client can choose freely: only a key
whose sha256 is listed for a tenant maps to it. Without configured tenants, or
with ``auth.allow_anonymous``, unknown or missing keys map to ``anonymous``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from concurproxy.errors import ProxyError

ANONYMOUS = "anonymous"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class TenantResolver:
    """O(1) lookup by the key's sha256 digest."""

    def __init__(self, digests_to_tenant: Mapping[str, str], allow_anonymous: bool) -> None:
        self._by_digest = {d.lower(): t for d, t in digests_to_tenant.items()}
        self.allow_anonymous = allow_anonymous

    def resolve(self, authorization: str | None) -> str:
        key = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        if key is not None and self._by_digest:
            digest = key_digest(key)
            # A dict lookup on the digest leaks timing about the hash, not the key.
            tenant = self._by_digest.get(digest)
            if tenant is not None:
                return tenant
        if self.allow_anonymous or not self._by_digest:
            return ANONYMOUS
        if key is None:
            raise ProxyError(401, "missing_api_key", "an API key is required: send Authorization: Bearer <key>")
        raise ProxyError(401, "invalid_api_key", "the API key is not valid for this proxy")
