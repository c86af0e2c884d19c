"""The request path's one entry point for a step's prompt tokens: ``StepTokens.step_tokens``.

    n_tokens, keys = tokens.step_tokens(agent_id, model, body, route)

``n_tokens`` sizes the step for admission (KV footprint) and budgets; ``keys`` are the chained
block keys (:mod:`concurproxy.routing.prefix`) prefix routing matches against its indexes, or
None when the routing policy keeps no prefixes. ``agent_id`` is None for a one-step agent:
its chat is then cached under its opening messages (a client without identity headers still
resends its history), in a separate, smaller LRU so such steps never evict real agents.

*Which tokens.* A model with a ``models: {NAME: {tokenizer: DIR}}`` entry gets the ids vLLM
computes for the body (:mod:`concurproxy.tokenizer.model`): the chat template rendered as vLLM
renders it, then encoded; completions' text or id prompts as vLLM takes them. Those ids are
the ``token_ids`` of the engine's ``BlockStored`` events, so the step's keys meet the keys the
exact index recomputes from them. Per agent the encoding resumes from the previous step's
render (:mod:`concurproxy.tokenizer.incremental`). Any other model, and a step the model's
template cannot render exactly (media parts, ``continue_final_message``, a template error:
:class:`~concurproxy.tokenizer.conversation.Unrenderable`), is counted with the proxy's
estimator (:mod:`concurproxy.tokens`) over the canonical prompt, as before; such steps are
counted per model and reason in ``fallbacks``. No upstream call either way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from concurproxy.routing.prefix import hash_tokens
from concurproxy.routing.prompt_cache import IncrementalPrefixHasher
from concurproxy.tokenizer.conversation import Unrenderable
from concurproxy.tokenizer.incremental import Encode, IncrementalEncoder
from concurproxy.tokenizer.model import ModelTokenizer
from concurproxy.tokenizer.template import TemplateError
from concurproxy.tokens import count_tokens, prompt_text

COMPLETIONS = "/v1/completions"
ESTIMATOR = "estimator"
ANONYMOUS = 1024  # conversations cached for steps without an agent id, per model (LRU)
# What rendering an arbitrary template over client data can raise; vLLM turns each into a 400
# (safe_apply_chat_template), so the step is counted with the estimator, never failed here.
TEMPLATE_FAILURES = (TemplateError, TypeError, ValueError, LookupError, ArithmeticError, AttributeError, RecursionError)


class StepTokens:
    """Per model: its tokenizer and two incremental encoders (agents; steps without an agent id);
    the estimator's hasher for every other model. Not thread-safe: the proxy's event loop owns it."""

    def __init__(self, models: Mapping[str, ModelTokenizer], block_tokens: int | None, max_agents: int = 4096) -> None:
        self.models = dict(models)
        self.block_tokens = block_tokens
        self._encoders = {
            name: IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, block_tokens, max_agents=max_agents)
            for name, m in self.models.items()
        }
        # Steps without an agent id, keyed by their conversation's opening (see _opening): a client that
        # sends no identity still resends its history, and a full encode costs ~3 ms per 1k tokens.
        self._openings = {
            name: IncrementalEncoder(_encode_fn(m), m.cut_tokens, m.margin, block_tokens, max_agents=ANONYMOUS)
            for name, m in self.models.items()
        }
        # The estimator's per-agent hasher, as the routing stage kept it before (only when keys are used).
        self._estimator = IncrementalPrefixHasher(block_tokens, max_agents) if block_tokens else None
        self.fallbacks: Counter[tuple[str, str]] = Counter()  # (model, reason) → steps

    def step_tokens(
        self, agent_id: str | None, model: str, body: Mapping[str, Any], route: str
    ) -> tuple[int, Sequence[int] | None]:
        m = self.models.get(model)
        if m is not None:
            enc, key = self._encoders[model], agent_id
            if key is None and route != COMPLETIONS:
                enc, key = self._openings[model], _opening(body)
            try:
                return self._model_tokens(m, enc, key, body, route)
            except Unrenderable as exc:
                self.fallbacks[(model, str(exc))] += 1
            except TEMPLATE_FAILURES:  # raise_exception(), or the template's own bug: vLLM answers 400 to it
                self.fallbacks[(model, "template_error")] += 1
        text = prompt_text(body)
        if self._estimator is None:
            return count_tokens(text), None
        n, keys, _ = self._estimator.prompt(agent_id, text)
        return n, keys

    def _model_tokens(
        self, m: ModelTokenizer, enc: IncrementalEncoder, agent_id: str | None, body: Mapping[str, Any], route: str
    ) -> tuple[int, Sequence[int] | None]:
        bt = self.block_tokens
        if route == COMPLETIONS:
            prompts = m.completion_prompts(body)
            if len(prompts) > 1 or not isinstance(prompts[0], str):  # ids, or a batch: no prefix to resume
                batch = m.completion_ids(body)
                return sum(map(len, batch)), (hash_tokens(batch[0], bt) if bt and len(batch) == 1 else None)
            text, special = prompts[0], bool(body.get("add_special_tokens", True))
        else:
            text, special = m.chat_text(body), bool(body.get("add_special_tokens", False))
        wrap = m.special_wrap if special else ((), ())
        if wrap is None:  # special tokens that cannot be put around a cached encoding: encode it whole
            ids = m.encode(text, True)
            return len(ids), (hash_tokens(ids, bt) if bt else None)
        r = enc.encode(agent_id, text, *wrap)
        return r.n_tokens, r.keys

    def forget(self, agent_id: str) -> None:
        """The agent finished: drop what is cached for it."""
        for enc in self._encoders.values():
            enc.forget(agent_id)
        if self._estimator is not None:
            self._estimator.forget(agent_id)

    def describe(self) -> dict[str, Any]:
        """For /admin/state and the startup log: which tokenizer each configured model uses."""
        return {
            "models": {
                name: {"tokenizer": m.source, "templates": sorted(m.templates)} for name, m in self.models.items()
            },
            "other_models": ESTIMATOR,
            "fallbacks": {f"{model}/{reason}": n for (model, reason), n in sorted(self.fallbacks.items())},
        }

    def tokenizer_of(self, model: str) -> str:
        m = self.models.get(model)
        return m.source if m is not None else ESTIMATOR


def _opening(body: Mapping[str, Any]) -> str | None:
    """A one-step agent's cache key: its messages up to the first user turn (system prompt + task).

    Agents sharing a system prompt usually differ by their task, so they rarely share a key; when
    they do, the prefix check fails and the step is encoded whole (exact either way)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    end = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), 0)
    try:
        return str(hash(orjson.dumps(messages[: end + 1])))
    except TypeError:  # not JSON (cannot come from a parsed body, but the key must never raise)
        return None


def _encode_fn(m: ModelTokenizer) -> Encode:
    """The incremental encoder's view of a tokenizer: ids without special tokens, and where each token is."""
    tok = m.tokenizer

    def encode(text: str) -> tuple[list[int], Callable[[int], tuple[int, int]]]:
        e = tok.encode(text, add_special_tokens=False)
        return e.ids, e.token_to_chars  # type: ignore[return-value]  # None only for out-of-range indices

    return encode
