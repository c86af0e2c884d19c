"""Tenants from API keys (hashes only in memory), resolved once per request at the front door."""

from concurproxy.tenancy.directory import (
    ANONYMOUS,
    TenancyError,
    TenantDirectory,
    api_key_from_headers,
    key_digest,
    keys_from_file_text,
)

__all__ = [
    "ANONYMOUS",
    "TenancyError",
    "TenantDirectory",
    "api_key_from_headers",
    "key_digest",
    "keys_from_file_text",
]
