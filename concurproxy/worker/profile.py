"""Worker profiles: a model on a GPU → KV capacity, batching limits and step timing.

KV capacity (vLLM's own arithmetic)::

    bytes_per_token = 2 · num_layers · num_kv_heads · head_dim · dtype_bytes   (K and V)
    kv_bytes        = gpu_memory_bytes · memory_utilization − weight_bytes − activation_reserve_bytes
    num_gpu_blocks  = floor(kv_bytes / bytes_per_token / block_size)

``num_gpu_blocks`` in the YAML overrides the computation (the ``tiny`` profile
uses it, like vLLM's ``--num-gpu-blocks-override``). Timing: see
:mod:`concurproxy.worker.engine.timing`. Shipped profiles live in
``concurproxy/worker/profiles/*.yaml``; any other YAML path works too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concurproxy.worker.engine import EngineConfig, OutputLengths, StepTimeModel


class ProfileError(Exception):
    """A profile that cannot be found or does not validate."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShape(_Model):
    name: str = Field(description="served model name (/v1/models, metrics model_name)")
    num_layers: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    dtype_bytes: float = Field(gt=0, description="bytes per KV element (2 for bf16/fp16, 1 for fp8)")
    weight_bytes: float = Field(ge=0)


class Gpu(_Model):
    name: str
    memory_bytes: float = Field(gt=0)


class Timing(_Model):
    fixed_s: float = Field(ge=0)
    prefill_s_per_token: float = Field(ge=0)
    decode_s_per_token: float = Field(ge=0)
    kv_read_s_per_token: float = Field(ge=0)
    attn_s_per_token_pair: float = Field(0.0, ge=0)


class Profile(_Model):
    name: str
    description: str = ""
    model: ModelShape
    gpu: Gpu
    memory_utilization: float = Field(0.9, gt=0, le=1)
    activation_reserve_bytes: float = Field(0, ge=0)
    num_gpu_blocks: int | None = Field(None, gt=0, description="override the computed capacity")
    block_size: int = Field(16, gt=0)
    max_num_batched_tokens: int = Field(8192, gt=0)
    long_prefill_token_threshold: int = Field(
        0, ge=0, description="vLLM's --long-prefill-token-threshold: per-request new tokens per step (0: off)"
    )
    max_num_seqs: int = Field(256, gt=0)
    max_model_len: int = Field(8192, gt=0)
    enable_prefix_caching: bool = True
    default_max_tokens: int = Field(256, gt=0)
    timing: Timing
    sources: list[str] = Field(default_factory=list)

    @property
    def bytes_per_token(self) -> float:
        m = self.model
        return 2 * m.num_layers * m.num_kv_heads * m.head_dim * m.dtype_bytes

    @property
    def blocks(self) -> int:
        if self.num_gpu_blocks is not None:
            return self.num_gpu_blocks
        kv = self.gpu.memory_bytes * self.memory_utilization - self.model.weight_bytes - self.activation_reserve_bytes
        n = int(kv // self.bytes_per_token // self.block_size)
        if n <= 0:
            raise ProfileError(f"profile {self.name}: the weights do not leave room for any KV block")
        return n

    def engine_config(
        self,
        seed: int = 0,
        output_lengths: OutputLengths | None = None,
        scheduling_policy: Literal["fcfs", "priority"] = "fcfs",
        preempt_for_waiting: bool = False,
    ) -> EngineConfig:
        t = self.timing
        return EngineConfig(
            num_blocks=self.blocks,
            block_size=self.block_size,
            max_num_batched_tokens=self.max_num_batched_tokens,
            long_prefill_token_threshold=self.long_prefill_token_threshold,
            max_num_seqs=self.max_num_seqs,
            max_model_len=min(self.max_model_len, self.blocks * self.block_size),
            enable_prefix_caching=self.enable_prefix_caching,
            default_max_tokens=self.default_max_tokens,
            timing=StepTimeModel(
                t.fixed_s,
                t.prefill_s_per_token,
                t.decode_s_per_token,
                t.kv_read_s_per_token,
                t.attn_s_per_token_pair,
            ),
            output_lengths=output_lengths or OutputLengths(seed=seed),
            seed=seed,
            scheduling_policy=scheduling_policy,
            preempt_for_waiting=preempt_for_waiting,
        )


def with_scheduler_overrides(
    profile: Profile, max_num_batched_tokens: int | None = None, long_prefill_token_threshold: int | None = None
) -> Profile:
    """The profile with vLLM's scheduler flags applied (None: keep the profile's value); validated."""
    update = {
        k: v
        for k, v in (
            ("max_num_batched_tokens", max_num_batched_tokens),
            ("long_prefill_token_threshold", long_prefill_token_threshold),
        )
        if v is not None
    }
    if not update:
        return profile
    try:
        return Profile.model_validate({**profile.model_dump(), **update})
    except ValidationError as exc:
        raise ProfileError(f"profile {profile.name}: {exc}") from exc


def builtin_profiles() -> list[str]:
    root = resources.files("concurproxy.worker") / "profiles"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name (``tiny``, ``llama3-8b-h100``, …) or a YAML file path."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read profile: {exc.strerror or exc}") from exc
        source = str(path)
    else:
        res = resources.files("concurproxy.worker") / "profiles" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ProfileError(f"unknown profile {name_or_path!r}; built-in: {', '.join(builtin_profiles())}")
        text = res.read_text(encoding="utf-8")
        source = f"profile {name_or_path}"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} invalid field(s)"]
        lines += [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ProfileError("\n".join(lines)) from exc
