"""Hypothesis properties of the AIMD controller over arbitrary sample sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import AIMDConfig
from concurproxy.control.limits import AIMDController
from concurproxy.control.types import PressureSnapshot

frac = st.none() | st.floats(0.0, 1.0)
samples = st.lists(
    st.tuples(
        st.floats(0.0, 3.0),  # time advance
        st.floats(0.0, 3.0),  # sample age at update time
        st.booleans(),  # ok
        frac,  # kv
        st.none() | st.floats(0.0, 5.0),  # preemptions/s
        frac,  # hit rate
        st.none() | st.integers(0, 50),  # waiting
        st.integers(0, 300),  # in_use
    ),
    max_size=60,
)
configs = st.builds(
    lambda lo, span, init, inc, dec: AIMDConfig(
        min=lo, max=lo + span, initial=lo + min(init, span), increase=inc, decrease=dec
    ),
    st.integers(1, 20),
    st.integers(0, 200),
    st.integers(0, 200),
    st.floats(0.1, 8.0),
    st.floats(0.05, 0.95),
)


@settings(max_examples=200, deadline=None)
@given(configs, samples)
def test_window_bounds_thrash_and_staleness(cfg: AIMDConfig, seq: list[tuple]) -> None:  # type: ignore[type-arg]
    c = AIMDController(cfg)
    now = 0.0
    for adv, age, ok, kv, pre, hit, waiting, in_use in seq:
        now += adv
        s = PressureSnapshot(
            ts=now - age, ok=ok, kv_usage=kv, preemptions_per_s=pre, prefix_hit_rate=hit, waiting=waiting
        )
        before = c.window
        fresh = ok and age <= cfg.stale_after_ms / 1000
        thrash = fresh and c.thrash_reason(s) is not None
        d = c.update(s, in_use, now)
        assert cfg.min <= d.window <= cfg.max
        assert d.window == c.window
        assert d.changed == (d.window != before)
        if thrash:
            assert d.window <= before  # a thrash signal never raises W
            assert d.reason.startswith("thrash") or d.reason.startswith("hold")
        if not fresh:
            assert d.saturated and d.window == before  # stale/failed data never grows W
        else:
            assert not d.saturated
        if d.window > before:
            assert d.reason == "increase" and kv is not None and kv < cfg.kv_target
