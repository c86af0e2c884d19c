"""Tenant resolution from API keys: only sha256 digests are held, lookups are constant-time.

Build (config layer, reads the environment and key files once, at load):
    ``TenantDirectory.from_policy(policy.tenants, policy.auth)``
Lookup (hot path, pure): ``lookup(api_key) -> tenant name | None``.

Algorithm: ``d = sha256(key)``; ``entry = by_digest.get(d)`` (O(1)); the match
is confirmed with ``hmac.compare_digest(entry.digest, d)``. The dict probe works
on a digest the caller cannot steer towards a stored one, so its timing leaks
nothing about stored keys; the raw key is never stored or compared.

Anonymous handling: with ``auth.allow_anonymous`` a request with no key, or
with a key that matches no tenant, is tenant ``anonymous``; without it such a
request gets ``None`` (the proxy answers 401).

Immutable after construction: safe to share; a policy reload builds a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from concurproxy.config.budgets import AuthConfig, TenantConfig

ANONYMOUS = "anonymous"


class TenancyError(ValueError):
    """A tenant key source that cannot be used (missing env var or file, bad digest, duplicate key)."""


def key_digest(api_key: str) -> str:
    """Hex sha256 of a key, as written in ``key_sha256`` (``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _check_hex(d: str, where: str) -> str:
    d = d.strip().lower()
    if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
        raise TenancyError(f"{where}: not a sha256 hex digest (64 hex characters)")
    return d


def _read_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def keys_from_file_text(text: str) -> list[str]:
    """One key per line; blank lines and ``#`` comments ignored."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    tenant: str


class TenantDirectory:
    def __init__(
        self, digests: Mapping[str, str], *, allow_anonymous: bool = True, admin_digests: Sequence[str] = ()
    ) -> None:
        """``digests``: hex sha256 → tenant name."""
        self.allow_anonymous = allow_anonymous
        self._by_digest: Mapping[bytes, _Entry] = MappingProxyType(
            {bytes.fromhex(d): _Entry(bytes.fromhex(d), t) for d, t in digests.items()}
        )
        self._admin: frozenset[bytes] = frozenset(bytes.fromhex(d) for d in admin_digests)
        self.tenants: frozenset[str] = frozenset(digests.values())
        # No tenant key configured and anonymous access allowed: every request is ``anonymous``,
        # whatever key it sends, so the front door need not read the key at all.
        self.everyone_anonymous = allow_anonymous and not self._by_digest

    @classmethod
    def from_policy(
        cls,
        tenants: Sequence[TenantConfig],
        auth: AuthConfig,
        *,
        env: Mapping[str, str] | None = None,
        read_file: Callable[[str], str] = _read_file,
    ) -> TenantDirectory:
        """Hash every key source of every tenant; raise `TenancyError` on anything unusable.

        ``env`` defaults to ``os.environ``; ``read_file`` is injectable for tests.
        """
        if env is None:
            env = os.environ
        digests: dict[str, str] = {}

        def add(d: str, tenant: str, where: str) -> None:
            owner = digests.setdefault(d, tenant)
            if owner != tenant:
                raise TenancyError(f"{where}: the same key is configured for tenants {owner!r} and {tenant!r}")

        for t in tenants:
            for i, h in enumerate(t.key_sha256):
                add(_check_hex(h, f"tenants.{t.name}.key_sha256[{i}]"), t.name, f"tenants.{t.name}")
            if t.key_env is not None:
                value = env.get(t.key_env)
                if not value:
                    raise TenancyError(f"tenants.{t.name}.key_env: environment variable {t.key_env} is not set")
                add(key_digest(value.strip()), t.name, f"tenants.{t.name}.key_env")
            if t.key_file is not None:
                try:
                    keys = keys_from_file_text(read_file(t.key_file))
                except OSError as exc:
                    raise TenancyError(f"tenants.{t.name}.key_file: cannot read {t.key_file}: {exc}") from exc
                if not keys:
                    raise TenancyError(f"tenants.{t.name}.key_file: {t.key_file} holds no key")
                for k in keys:
                    add(key_digest(k), t.name, f"tenants.{t.name}.key_file")
        admin = [_check_hex(h, f"auth.admin_key_sha256[{i}]") for i, h in enumerate(auth.admin_key_sha256)]
        return cls(digests, allow_anonymous=auth.allow_anonymous, admin_digests=admin)

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, api_key: str | None) -> str | None:
        """The tenant of ``api_key``; ``anonymous`` or None for no / unknown key (see module doc)."""
        if api_key:
            d = hashlib.sha256(api_key.encode("utf-8")).digest()
            entry = self._by_digest.get(d)
            if entry is not None and hmac.compare_digest(entry.digest, d):
                return entry.tenant
        return ANONYMOUS if self.allow_anonymous else None

    def is_admin(self, api_key: str | None) -> bool:
        if not api_key or not self._admin:
            return False
        d = hashlib.sha256(api_key.encode("utf-8")).digest()
        return any(hmac.compare_digest(a, d) for a in self._admin)


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer KEY`` (OpenAI clients) or ``x-api-key``."""
    auth = headers.get("Authorization") or headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key") or headers.get("X-Api-Key")
    return (key.strip() or None) if key else None
