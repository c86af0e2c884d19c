"""Token-count calibration: scale the proxy's local prompt estimate to the engine's tokenizer.

The proxy counts prompt tokens with its own fast tokenizer (no extra upstream
call). A real engine's tokenizer counts differently (a BPE may count 2–4×
more on the same text), and the KV capacity, the admission footprint budget and
the token budgets are all in *engine* tokens. So each model keeps a ratio
``reported prompt tokens / local count``, an exponentially weighted mean over
successful steps (weight ``alpha`` for the newest), and every new estimate is
multiplied by it. Against the bundled worker the ratio stays 1.
"""

from __future__ import annotations

from concurproxy.server.hooks import StepContext


class KeyedMean:
    """An exponentially weighted mean per key (weight ``alpha`` for the newest sample; the first sample
    is the mean), None for a key never seen. Bounded: keys beyond ``max_keys`` are not tracked."""

    __slots__ = ("_mean", "alpha", "max_keys")

    def __init__(self, alpha: float, max_keys: int) -> None:
        self.alpha = alpha
        self.max_keys = max_keys
        self._mean: dict[str, float] = {}

    def get(self, key: str) -> float | None:
        return self._mean.get(key)

    def add(self, key: str, sample: float) -> None:
        old = self._mean.get(key)
        if old is None and len(self._mean) >= self.max_keys:
            return
        self._mean[key] = sample if old is None else old + self.alpha * (sample - old)

    def forget(self, key: str) -> None:
        self._mean.pop(key, None)


class TokenCalibration:
    __slots__ = ("_ratio",)

    def __init__(self, alpha: float = 0.1, max_models: int = 256) -> None:
        self._ratio = KeyedMean(alpha, max_models)  # models beyond the cap keep ratio 1

    def ratio(self, model: str | None) -> float:
        r = self._ratio.get(model or "")
        return 1.0 if r is None else r

    def estimate(self, model: str | None, local_tokens: int) -> int:
        r = self._ratio.get(model or "")
        return local_tokens if r is None else round(local_tokens * r)

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        usage = ctx.usage
        if usage is None or ctx.local_prompt_tokens <= 0 or usage.prompt_tokens <= 0 or ctx.status != 200:
            return
        self._ratio.add(ctx.model or "", min(20.0, max(0.05, usage.prompt_tokens / ctx.local_prompt_tokens)))
