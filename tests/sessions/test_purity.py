"""The session logic is pure (no I/O, clock, environment or randomness); only its shell is not.

`resolver.py` owns the injectable clock and id source (their defaults read time and os), and
`shared.py` is the Redis shell: both are checked for what else they may not import.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_core_purity import forbidden_imports

PACKAGE = Path(__file__).resolve().parents[2] / "concurproxy" / "sessions"
PURE = ["conversation.py", "replies.py", "fingerprint.py", "table.py", "client_ids.py", "__init__.py"]


@pytest.mark.parametrize("name", PURE)
def test_pure_module(name: str) -> None:
    assert forbidden_imports((PACKAGE / name).read_text(encoding="utf-8")) == []


def test_the_shell_imports_only_what_it_needs() -> None:
    resolver = forbidden_imports((PACKAGE / "resolver.py").read_text(encoding="utf-8"))
    assert [hit.split(": ")[1] for hit in resolver] == ["os", "time"]
    shared = forbidden_imports((PACKAGE / "shared.py").read_text(encoding="utf-8"))
    assert [hit.split(": ")[1] for hit in shared] == ["asyncio"]
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == sorted([*PURE, "resolver.py", "shared.py"])
