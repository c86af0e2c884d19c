"""Tenant from the API key, at the front door: a known key → its tenant; otherwise 401 or ``anonymous``.

The tenant never comes from a header the client can choose freely: only a key
whose sha256 is configured for a tenant maps to it (see `concurproxy.tenancy`).
"""

from __future__ import annotations

from collections.abc import Mapping

from concurproxy.errors import ProxyError
from concurproxy.tenancy.directory import ANONYMOUS, TenantDirectory, api_key_from_headers


class TenantResolver:
    def __init__(self, directory: TenantDirectory) -> None:
        self.directory = directory

    def resolve(self, headers: Mapping[str, str]) -> str:
        directory = self.directory
        if directory.everyone_anonymous:  # no tenant keys, anonymous allowed: no key can change the answer
            return ANONYMOUS
        key = api_key_from_headers(headers)
        tenant = directory.lookup(key)
        if tenant is not None:
            return tenant
        if key is None:
            raise ProxyError(
                401, "missing_api_key", "an API key is required: send Authorization: Bearer <key> (or x-api-key)"
            )
        raise ProxyError(401, "invalid_api_key", "the API key is not valid for this proxy")

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        return self.directory.is_admin(api_key_from_headers(headers))
