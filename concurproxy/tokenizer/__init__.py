"""A model's own tokenizer and chat template, so the proxy's token ids equal the engine's (issue 20).

The request path calls one thing: :meth:`StepTokens.step_tokens` (see :mod:`.step`). Loading a
tokenizer directory is :mod:`.model`; rendering a chat as vLLM does is :mod:`.conversation` and
:mod:`.template`; resuming an agent's encoding from its previous step is :mod:`.incremental`.
"""

from __future__ import annotations

import logging

from concurproxy.config.models import Policy
from concurproxy.tokenizer.conversation import Unrenderable
from concurproxy.tokenizer.model import ModelTokenizer, TokenizerLoadError
from concurproxy.tokenizer.step import ESTIMATOR, StepTokens

log = logging.getLogger("concurproxy.tokenizer")


def build_step_tokens(policy: Policy, block_tokens: int | None) -> StepTokens:
    """Load every configured tokenizer (a bad directory fails startup) and say once which model uses what."""
    models = {}
    for name, cfg in policy.models.items():
        if cfg.tokenizer is None:
            continue
        try:
            models[name] = ModelTokenizer.load(cfg)
        except TokenizerLoadError as exc:
            raise TokenizerLoadError(f"models.{name}.tokenizer: {exc}") from exc
    tokens = StepTokens(models, block_tokens)
    uses = ", ".join(f"{n}: {m.source}" for n, m in models.items()) or "none"
    log.info("prompt tokens: model tokenizers (%s); every other model: the %s", uses, ESTIMATOR)
    return tokens


__all__ = ["ESTIMATOR", "ModelTokenizer", "StepTokens", "TokenizerLoadError", "Unrenderable", "build_step_tokens"]
