"""Write a deterministic, randomly initialised Llama model + tokenizer that vLLM can serve offline.

    .venv-vllm/bin/python scripts/vllm/make_tiny_model.py OUT_DIR [--size tiny|small|medium|large] [--seed 0]

No hub is reachable from CI, so the test tier makes its model at test time:

* config — Llama architecture; ``tiny``: 2 layers, hidden 256, 4 heads, 2 KV heads, MLP 512;
  ``small``: 4 layers, hidden 512, 8 heads, 4 KV heads, MLP 1376; ``medium`` (the test tier,
  41 M parameters): 6 layers, hidden 768, 12 heads, 4 KV heads, MLP 2048; ``large`` (the demo,
  72 M): 6 layers, hidden 1024, 16 heads, 4 KV heads, MLP 2816. On one core of the CPU build,
  prefilling ~750 tokens costs ~9 decode iterations of ``tiny`` but 31-36 of ``medium`` and
  ``large`` (55 / 506 / 781 ms; 6 / 14 / 23 ms an iteration; ``python -m
  benchmarks.vllm_model_costs``): only from ``medium`` up does recomputing an evicted agent context
  cost more than the step it serves, as it does for real models on GPUs.
* weights — every tensor drawn from a ``torch.Generator`` seeded with ``seed`` in sorted-name
  order (normal, std 0.02; norms 1.0), so the same seed gives byte-identical safetensors
  whatever transformers' own initialisation does. Saved as ``model.safetensors`` (bfloat16).
* tokenizer — byte-level BPE trained with the ``tokenizers`` library on the committed
  ``corpus.txt`` next to this script plus deterministic hex words (the load generator's prompt
  words, ``" 3fa9c1"``, so that they cost ~2-3 tokens each instead of 6), with ChatML-style
  special tokens and a chat template.

The model's outputs are random text: it exists to exercise the engine (KV cache, prefix cache,
preemption, streaming), not to say anything. Needs torch, transformers, tokenizers and
safetensors — the vLLM venv's interpreter has them all.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).with_name("corpus.txt")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


SIZES = {
    "tiny": Size(layers=2, hidden=256, heads=4, kv_heads=2, intermediate=512, vocab=2048),
    "small": Size(layers=4, hidden=512, heads=8, kv_heads=4, intermediate=1376, vocab=4096),
    "medium": Size(layers=6, hidden=768, heads=12, kv_heads=4, intermediate=2048, vocab=2048),
    "large": Size(layers=6, hidden=1024, heads=16, kv_heads=4, intermediate=2816, vocab=2048),
}


def training_text(hex_words: int = 20000) -> list[str]:
    """The committed corpus, plus lines of 6-hex-character words (a fixed seed of their own)."""
    rng = random.Random("concurproxy-tokenizer")
    lines = CORPUS.read_text().splitlines()
    words = [rng.randbytes(3).hex() for _ in range(hex_words)]
    lines += [" ".join(words[i : i + 16]) for i in range(0, len(words), 16)]
    return lines


def train_tokenizer(vocab: int) -> Any:  # a tokenizers.Tokenizer (imported lazily: only this script needs it)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    return tok


def write_tokenizer(out: Path, vocab: int) -> int:
    tok = train_tokenizer(vocab)
    tok.save(str(out / "tokenizer.json"))
    eos, bos = "<|im_end|>", "<|endoftext|>"
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": bos,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": bos, "eos_token": eos, "pad_token": bos}, indent=2) + "\n"
    )
    return int(tok.get_vocab_size())


def write_model(out: Path, size: Size, vocab: int, seed: int, ids: dict[str, int]) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="bfloat16",
    )
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in LlamaForCausalLM(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in sorted(shapes):
        if name.endswith("norm.weight"):
            t = torch.ones(shapes[name])
        else:
            t = torch.randn(shapes[name], generator=gen) * 0.02
        tensors[name] = t.to(torch.bfloat16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["architectures"] = ["LlamaForCausalLM"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen_cfg = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    return sum(t.numel() for t in tensors.values())


def make_model(out: Path, size: str = "tiny", seed: int = 0) -> dict[str, object]:
    """Write config, weights and tokenizer into ``out``; returns a short description."""
    from tokenizers import Tokenizer

    spec = SIZES[size]
    out.mkdir(parents=True, exist_ok=True)
    n_tok = write_tokenizer(out, spec.vocab)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids: dict[str, int] = {}
    for special in SPECIALS:
        token_id = tokenizer.token_to_id(special)
        if token_id is None:
            raise RuntimeError(f"the trained tokenizer lacks the special token {special!r}")
        ids[special] = token_id
    vocab = -(-n_tok // 64) * 64  # pad the embedding to a multiple of 64
    params = write_model(out, spec, vocab, seed, ids)
    return {"dir": str(out), "size": size, "seed": seed, "params": params, "vocab": vocab}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    info = make_model(a.out, a.size, a.seed)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
