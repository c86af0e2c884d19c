"""A model's tokenizer directory, loaded as transformers/vLLM load it, and its full (non-incremental) ids.

Files read from the directory (a Hugging Face tokenizer, as ``save_pretrained`` writes it):

* ``tokenizer.json`` with the ``tokenizers`` library, truncation and padding switched off (vLLM
  truncates only past max-model-len, where the step fails anyway);
* the chat template as transformers 5 finds it: ``chat_template.jinja`` (and named ones in
  ``additional_chat_templates/*.jinja``) over ``tokenizer_config.json``'s ``chat_template``
  (a string, or a list of ``{name, template}``). With several, a request with ``tools`` uses
  ``tool_use`` if there is one, else ``default`` (``get_chat_template``). A policy's
  ``chat_template`` file replaces them all (vLLM's ``--chat-template``);
* the named special tokens (``bos_token``, ``eos_token``, ``unk_token``, ``sep_token``,
  ``pad_token``, ``cls_token``, ``mask_token``: strings or ``{"content": …}``) from
  ``tokenizer_config.json``, missing ones from ``special_tokens_map.json``: the template sees them.

Chat prompts are encoded without special tokens (vLLM's chat default: the template writes
them); completion prompts with them unless the body says ``add_special_tokens: false``. What
``add_special_tokens`` adds (e.g. a BOS) is measured once at load as the ids around a probe
text, so the incremental encoder can wrap a cached encoding with them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from tokenizers import Tokenizer

from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.tokenizer.conversation import Unrenderable, render_chat
from concurproxy.tokenizer.template import ChatTemplate

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class TokenizerLoadError(ValueError):
    """A configured tokenizer directory that cannot be used (startup fails with this message)."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerLoadError(f"{path}: {exc}") from exc
    return doc if isinstance(doc, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    content = value.get("content") if isinstance(value, dict) else None
    return content if isinstance(content, str) else None


def _templates(root: Path, config: Mapping[str, Any], override: str | None) -> dict[str, str]:
    if override is not None:
        try:
            return {"default": Path(override).read_text(encoding="utf-8")}
        except OSError as exc:
            raise TokenizerLoadError(f"chat_template {override}: {exc.strerror or exc}") from exc
    found: dict[str, str] = {}
    if (root / "chat_template.jinja").is_file():
        found["default"] = (root / "chat_template.jinja").read_text(encoding="utf-8")
    extra = root / "additional_chat_templates"
    if extra.is_dir():
        for f in sorted(extra.glob("*.jinja")):
            found[f.stem] = f.read_text(encoding="utf-8")
    if found:
        return found
    raw = config.get("chat_template")
    if isinstance(raw, str):
        return {"default": raw}
    if isinstance(raw, list):
        return {t["name"]: t["template"] for t in raw if isinstance(t, dict) and "name" in t and "template" in t}
    return {}


def _special_wrap(tok: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(pre, post)`` ids that ``add_special_tokens=True`` puts around any text, or None if not that simple."""
    wraps = set()
    for probe in ("a", "hello world", "x\ny"):
        bare = tok.encode(probe, add_special_tokens=False).ids
        full = tok.encode(probe, add_special_tokens=True).ids
        i = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
        if i is None:
            return None
        wraps.add((tuple(full[:i]), tuple(full[i + len(bare) :])))
    return wraps.pop() if len(wraps) == 1 else None


@dataclass(frozen=True)
class ModelTokenizer:
    source: str  # the directory, for /admin/state and logs
    tokenizer: Tokenizer
    templates: Mapping[str, ChatTemplate]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # default_chat_template_kwargs
    cut_tokens: Mapping[int, str] = field(default_factory=dict)  # id → content of the added tokens an
    # encoding can resume at (see incremental.py)
    margin: int = 1  # the longest added token, in characters
    special_wrap: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @classmethod
    def load(cls, cfg: ModelTokensConfig) -> ModelTokenizer:
        if cfg.tokenizer is None:
            raise TokenizerLoadError("no tokenizer directory configured")
        root = Path(cfg.tokenizer)
        if not (root / "tokenizer.json").is_file():
            raise TokenizerLoadError(f"{root}: no tokenizer.json (a Hugging Face tokenizer directory is needed)")
        try:
            tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as exc:  # the library raises its own Exception subclass for bad files
            raise TokenizerLoadError(f"{root / 'tokenizer.json'}: {exc}") from exc
        tok.no_truncation()
        tok.no_padding()
        config = _read_json(root / "tokenizer_config.json")
        specials_file = _read_json(root / "special_tokens_map.json")
        specials = {}
        for name in SPECIAL_TOKEN_NAMES:
            text = _token_text(config[name]) if name in config else _token_text(specials_file.get(name))
            if text is not None:
                specials[name] = text
        fmt = cfg.chat_template_content_format
        try:
            templates = {
                n: ChatTemplate(s, specials, fmt) for n, s in _templates(root, config, cfg.chat_template).items()
            }
        except jinja2.TemplateError as exc:
            raise TokenizerLoadError(f"{root}: chat template does not compile: {exc}") from exc
        added = tok.get_added_tokens_decoder()
        cut_tokens = {
            i: t.content for i, t in added.items() if not (t.normalized or t.lstrip or t.rstrip or t.single_word)
        }
        margin = max((len(t.content) for t in added.values()), default=1)
        return cls(
            str(root), tok, templates, dict(cfg.default_chat_template_kwargs), cut_tokens, margin, _special_wrap(tok)
        )

    def template_for(self, body: Mapping[str, Any]) -> ChatTemplate:
        """The template vLLM would pick for this request (``tool_use`` with tools when there is one)."""
        t = self.templates
        if not t:
            raise Unrenderable("no_chat_template")
        if len(t) == 1:
            return next(iter(t.values()))
        if body.get("tools") is not None and "tool_use" in t:
            return t["tool_use"]
        if "default" in t:
            return t["default"]
        raise Unrenderable("no_default_template")

    def chat_text(self, body: Mapping[str, Any]) -> str:
        return render_chat(self.template_for(body), body, self.defaults)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def chat_ids(self, body: Mapping[str, Any]) -> list[int]:
        """The ids vLLM computes for a chat body, the whole way (the reference for the incremental path)."""
        return self.encode(self.chat_text(body), bool(body.get("add_special_tokens", False)))

    def completion_prompts(self, body: Mapping[str, Any]) -> list[str | list[int]]:
        """A completions ``prompt`` as vLLM splits it: one text, ids, or a batch of either."""
        p = body.get("prompt")
        if isinstance(p, str):
            return [p]
        if isinstance(p, list) and p:
            if all(isinstance(x, int) and not isinstance(x, bool) for x in p):
                return [list(p)]
            if all(isinstance(x, str) for x in p) or all(_is_ids(x) for x in p):
                return list(p)
        raise Unrenderable("prompt")

    def completion_ids(self, body: Mapping[str, Any]) -> list[list[int]]:
        special = bool(body.get("add_special_tokens", True))
        return [self.encode(p, special) if isinstance(p, str) else p for p in self.completion_prompts(body)]


def _is_ids(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)
