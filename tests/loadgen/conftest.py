from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from loadgen_stub import OpenAIStub


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as s:
        yield s
