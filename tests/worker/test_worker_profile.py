"""Profiles: capacity formula, shipped profiles, custom YAML, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from concurproxy.worker.profile import ProfileError, builtin_profiles, load_profile, with_scheduler_overrides


def test_builtin_profiles_and_capacity_formula() -> None:
    assert {"tiny", "llama3-8b-h100", "qwen3-32b-h100"} <= set(builtin_profiles())
    llama = load_profile("llama3-8b-h100")
    assert llama.bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    kv = 80 * 2**30 * 0.9 - 16.06e9 - 2.0e9
    assert llama.blocks == int(kv // 131072 // 16) == 28252
    qwen = load_profile("qwen3-32b-h100")
    assert qwen.bytes_per_token == 262144 and qwen.blocks == 2338
    assert all(p.sources for p in (llama, qwen))
    tiny = load_profile("tiny").engine_config(seed=5)
    assert tiny.num_blocks == 64 and tiny.capacity_tokens == 1024 and tiny.seed == 5


def test_custom_profile_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text(
        "name: mine\n"
        "model: {name: m, num_layers: 1, num_kv_heads: 1, head_dim: 8, dtype_bytes: 2, weight_bytes: 0}\n"
        "gpu: {name: g, memory_bytes: 1.0e6}\nmemory_utilization: 1.0\nblock_size: 4\nmax_model_len: 64\n"
        "timing: {fixed_s: 0.001, prefill_s_per_token: 0, decode_s_per_token: 0, kv_read_s_per_token: 0}\n"
    )
    prof = load_profile(str(p))
    assert prof.bytes_per_token == 32 and prof.blocks == int(1e6 // 32 // 4)
    assert prof.engine_config().max_model_len == 64


def test_bad_profiles_explain_themselves(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: m}\ngpu: {name: g, memory_bytes: 1}\ntimingg: {}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(bad))
    assert "model.num_layers" in str(err.value) and "timingg" in str(err.value)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.yaml"))


def test_scheduler_overrides_apply_vllm_flags_and_validate() -> None:
    base = load_profile("qwen3-32b-h100")
    assert with_scheduler_overrides(base) is base
    p = with_scheduler_overrides(base, max_num_batched_tokens=2048, long_prefill_token_threshold=128)
    cfg = p.engine_config()
    assert (cfg.max_num_batched_tokens, cfg.long_prefill_token_threshold) == (2048, 128)
    assert (
        with_scheduler_overrides(base, long_prefill_token_threshold=0).engine_config().long_prefill_token_threshold == 0
    )
    with pytest.raises(ProfileError, match="max_num_batched_tokens"):
        with_scheduler_overrides(base, max_num_batched_tokens=0)
