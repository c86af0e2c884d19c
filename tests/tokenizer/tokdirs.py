"""Small Hugging Face tokenizer directories of the kinds real models ship, trained in milliseconds.

* ``bytelevel`` — GPT-2/Qwen style: ByteLevel pre-tokenizer and post-processor, ChatML specials
  and a ChatML template (the shape of ``scripts/vllm/make_tiny_model.py``'s tokenizer);
* ``metaspace`` — Mistral/Llama style: NFKC, Metaspace with ``prepend_scheme: first``, byte
  fallback, a BOS added by ``add_special_tokens``, ``[INST]`` specials and a template that
  writes ``bos_token`` itself; plus an ``lstrip`` mask token and a ``normalized`` added token,
  which an encoding must never resume at;
* ``prepend`` — Llama-2 HF style: no pre-tokenizer, a normalizer that prepends ``▁`` to every
  piece and replaces spaces, so the piece after each special token starts differently.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

WORDS = (
    "hello world agent tool call résumé 日本語 naïve über x y the a cache block token 42 3.14 "
    '{"a": } : get_weather Paris °C 🙂 tab\tnew\nline'
).split(" ")
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content }}</s>"
    "{% else %}{{ raise_exception('roles must be user/assistant') }}{% endif %}"
    "{% endfor %}"
)


def corpus(n: int = 400, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(24)) for _ in range(n)]


def _bytelevel() -> tuple[Tokenizer, dict[str, object]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tr = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), tr)
    return tok, {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "chat_template": CHATML}


def _metaspace() -> tuple[Tokenizer, dict[str, object]]:
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "</s>", "[INST]", "[/INST]"]
    alphabet = [f"<0x{b:02X}>" for b in range(256)]
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=specials + alphabet, show_progress=False)
    tok.train_from_iterator(corpus(), tr)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.add_tokens([AddedToken("cache", normalized=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    cfg = {"bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "</s>", "chat_template": INST}
    return tok, cfg


def _prepend() -> tuple[Tokenizer, dict[str, object]]:
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Strip(" ", 1, 0)])
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    alphabet = [f"<0x{b:02X}>" for b in range(256)]
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=specials + alphabet, show_progress=False)
    tok.train_from_iterator(corpus(), tr)
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHATML}


KINDS: dict[str, Callable[[], tuple[Tokenizer, dict[str, object]]]] = {
    "bytelevel": _bytelevel,
    "metaspace": _metaspace,
    "prepend": _prepend,
}


def write_tokenizer_dir(out: Path, kind: str, **config: object) -> Path:
    tok, cfg = KINDS[kind]()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **cfg, **config})
    )
    return out
