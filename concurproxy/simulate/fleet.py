"""Fleet files: which replicas the simulation runs, by worker profile and count.

```yaml
name: mixed-16
replicas:
  - {profile: llama3-8b-h100, count: 12}
  - {profile: qwen3-32b-h100, count: 4, name: big}   # ids big-0 … big-3
  - {profile: ./my-gpu.yaml, count: 2}               # any worker profile file
output_lengths: max_tokens                            # engine output-length mode (see EngineConfig)
```

Profiles are the bundled worker's (``concurproxy/worker/profiles``), so a
replica's KV capacity, batching limits and step time come from the same
numbers the ``concurproxy worker`` uses. Heterogeneous fleets are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concurproxy.worker.engine import EngineConfig, OutputLengths
from concurproxy.worker.profile import Profile, ProfileError, load_profile


class FleetError(ValueError):
    """A fleet file that cannot be used (names the file and the bad field)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaGroup(_Model):
    profile: str = Field(description="built-in worker profile name or a profile YAML path")
    count: int = Field(1, ge=1, le=4096)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$", description="replica id prefix")


class FleetFile(_Model):
    name: str = "fleet"
    replicas: list[ReplicaGroup] = Field(min_length=1)
    output_lengths: Literal["max_tokens", "uniform", "exponential"] = "max_tokens"


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    id: str
    profile: Profile
    engine: EngineConfig


@dataclass(frozen=True, slots=True)
class Fleet:
    name: str
    replicas: tuple[ReplicaSpec, ...]

    def __len__(self) -> int:
        return len(self.replicas)

    def scaled(self, n: int) -> Fleet:
        """The same mix with ``n`` replicas (profiles cycled in file order) — for sweeps."""
        if n < 1:
            raise ValueError("a fleet needs at least one replica")
        base = self.replicas
        reps = []
        for i in range(n):
            src = base[i % len(base)]
            reps.append(ReplicaSpec(f"{src.profile.name}-{i}", src.profile, src.engine))
        return Fleet(f"{self.name}x{n}", tuple(reps))


def build_fleet(doc: FleetFile, seed: int = 0, base_dir: Path | None = None) -> Fleet:
    reps: list[ReplicaSpec] = []
    profiles: dict[str, Profile] = {}
    for g in doc.replicas:
        ref = g.profile
        if base_dir is not None and ref.endswith((".yaml", ".yml")) and not Path(ref).is_absolute():
            ref = str(base_dir / ref)
        try:
            prof = profiles.get(ref) or load_profile(ref)
        except ProfileError as exc:
            raise FleetError(str(exc)) from exc
        profiles[ref] = prof
        cfg = prof.engine_config(seed=seed, output_lengths=OutputLengths(mode=doc.output_lengths, seed=seed))
        prefix = g.name or prof.name
        start = sum(1 for r in reps if r.id.startswith(prefix + "-"))
        reps.extend(ReplicaSpec(f"{prefix}-{start + i}", prof, cfg) for i in range(g.count))
    ids = [r.id for r in reps]
    if len(set(ids)) != len(ids):
        raise FleetError(f"fleet {doc.name}: replica ids collide: {ids}")
    return Fleet(doc.name, tuple(reps))


def uniform_fleet(profile: str, count: int, seed: int = 0) -> Fleet:
    """``count`` replicas of one profile (tests, sweeps without a file)."""
    return build_fleet(FleetFile(replicas=[ReplicaGroup(profile=profile, count=count)]), seed)


def load_fleet(path: str | Path, seed: int = 0) -> Fleet:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetError(f"{p}: cannot read fleet file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from exc
    try:
        doc = FleetFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{p}: {exc.error_count()} invalid field(s)"]
        lines += [f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise FleetError("\n".join(lines)) from exc
    return build_fleet(doc, seed, p.parent)
