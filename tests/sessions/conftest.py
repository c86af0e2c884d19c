"""Fixtures of tests/sessions: a resolver on a virtual clock (helpers in session_helpers.py)."""

from __future__ import annotations

import pytest
from session_helpers import Clock, make_resolver

from concurproxy.sessions import SessionResolver


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(clock: Clock) -> SessionResolver:
    return make_resolver(clock)
