"""Tenant directory: hashed keys from config / env / file, constant-time lookup, anonymous handling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from concurproxy.config.budgets import AuthConfig, TenantConfig
from concurproxy.tenancy import (
    ANONYMOUS,
    TenancyError,
    TenantDirectory,
    api_key_from_headers,
    key_digest,
)


def sha(k: str) -> str:
    return hashlib.sha256(k.encode()).hexdigest()


def test_key_digest_matches_sha256sum() -> None:
    # printf %s sk-research-1 | sha256sum
    assert key_digest("sk-research-1") == sha("sk-research-1")
    assert len(key_digest("x")) == 64


def test_lookup_from_hashes_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("# ops keys\nsk-ops-1\n\n  sk-ops-2  \n")
    tenants = [
        TenantConfig(name="research", key_sha256=[sha("sk-r1").upper()], key_env="RESEARCH_KEY", weight=2),
        TenantConfig(name="ops", key_file=str(f)),
    ]
    d = TenantDirectory.from_policy(tenants, AuthConfig(allow_anonymous=False), env={"RESEARCH_KEY": "sk-r2\n"})
    assert len(d) == 4
    assert d.lookup("sk-r1") == "research"
    assert d.lookup("sk-r2") == "research"
    assert d.lookup("sk-ops-1") == "ops" and d.lookup("sk-ops-2") == "ops"
    assert d.lookup("sk-ops-3") is None
    assert d.lookup(None) is None and d.lookup("") is None
    assert d.tenants == {"research", "ops"}
    assert "sk-r1" not in repr(vars(d))  # only digests are held


def test_anonymous_when_allowed() -> None:
    d = TenantDirectory.from_policy([TenantConfig(name="a", key_sha256=[sha("k")])], AuthConfig())
    assert d.lookup("k") == "a"
    assert d.lookup(None) == ANONYMOUS
    assert d.lookup("sk-whatever") == ANONYMOUS  # local use: any key works
    assert TenantDirectory({}).lookup("x") == ANONYMOUS


@pytest.mark.parametrize(
    ("tenants", "env", "match"),
    [
        ([TenantConfig(name="a", key_sha256=["abc"])], {}, "not a sha256 hex digest"),
        ([TenantConfig(name="a", key_sha256=["g" * 64])], {}, "not a sha256 hex digest"),
        ([TenantConfig(name="a", key_env="NOPE")], {}, "NOPE is not set"),
        ([TenantConfig(name="a", key_file="/nonexistent/keys")], {}, "cannot read"),
        (
            [TenantConfig(name="a", key_sha256=[sha("k")]), TenantConfig(name="b", key_env="K")],
            {"K": "k"},
            "the same key is configured for tenants 'a' and 'b'",
        ),
    ],
)
def test_unusable_key_sources_fail_at_load(tenants: list[TenantConfig], env: dict[str, str], match: str) -> None:
    with pytest.raises(TenancyError, match=match):
        TenantDirectory.from_policy(tenants, AuthConfig(), env=env)


def test_empty_key_file_is_an_error() -> None:
    with pytest.raises(TenancyError, match="holds no key"):
        TenantDirectory.from_policy(
            [TenantConfig(name="a", key_file="k")], AuthConfig(), env={}, read_file=lambda _: "# nothing\n"
        )


def test_admin_keys() -> None:
    d = TenantDirectory.from_policy([], AuthConfig(admin_key_sha256=[sha("root")]), env={})
    assert d.is_admin("root") and not d.is_admin("roo") and not d.is_admin(None)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer sk-1"}, "sk-1"),
        ({"authorization": "bearer  sk-2 "}, "sk-2"),
        ({"Authorization": "Basic abc"}, None),
        ({"x-api-key": "sk-3"}, "sk-3"),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_api_key_from_headers(headers: dict[str, str], key: str | None) -> None:
    assert api_key_from_headers(headers) == key


def test_lookup_is_a_dict_probe_not_a_scan() -> None:
    n = 20_000
    digests = {sha(f"k{i}"): f"t{i % 7}" for i in range(n)}
    d = TenantDirectory(digests, allow_anonymous=False)
    assert d.lookup("k12345") == f"t{12345 % 7}"
    assert d.lookup("k-missing") is None
