"""Distributions a scenario may give for a per-step quantity.

Three shapes, all sampled from a caller-owned ``random.Random`` (no global RNG,
so a seed reproduces a workload exactly):

* ``constant``: always ``value``.
* ``uniform``: ``low + U(0,1) * (high - low)``.
* ``lognormal``: ``median * exp(sigma * N(0,1))`` (so ``median`` is the median),
  then clamped to ``[min, max]`` when those are given.

A bare number in YAML is shorthand for ``{dist: constant, value: N}``.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constant(_Dist):
    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0)

    def sample(self, rng: random.Random) -> float:
        return self.value

    def mean(self) -> float:
        return self.value


class Uniform(_Dist):
    dist: Literal["uniform"]
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: random.Random) -> float:
        return self.low + rng.random() * (self.high - self.low)

    def mean(self) -> float:
        return (self.low + self.high) / 2


class LogNormal(_Dist):
    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0, le=5)
    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)

    def sample(self, rng: random.Random) -> float:
        x = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        if self.min is not None:
            x = max(self.min, x)
        if self.max is not None:
            x = min(self.max, x)
        return x

    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)


def _coerce(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return {"dist": "constant", "value": v}
    return v


Dist = Annotated[Constant | Uniform | LogNormal, Field(discriminator="dist"), BeforeValidator(_coerce)]


def sample_int(d: Constant | Uniform | LogNormal, rng: random.Random) -> int:
    """Sample and round to a non-negative integer (token counts)."""
    return max(0, round(d.sample(rng)))


__all__ = ["Constant", "Dist", "LogNormal", "Uniform", "sample_int"]
