"""Tokenizer directories for the tests of this folder (see tokdirs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokdirs import KINDS, write_tokenizer_dir


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {kind: write_tokenizer_dir(root / kind, kind) for kind in KINDS}
