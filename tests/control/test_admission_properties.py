"""Hypothesis properties of the admission window over random operation sequences."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import AdmissionConfig, AIMDConfig
from concurproxy.control.admission import Admitted, FifoQueue, Outcome, Queued, ReplicaWindow, Ticket
from concurproxy.control.limits import AIMDController
from concurproxy.control.types import PressureSnapshot, StepInfo

ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 12), st.integers(0, 5000)),
        st.tuples(st.just("end"), st.integers(0, 1000), st.sampled_from(list(Outcome))),
        st.tuples(st.just("end_again"), st.integers(0, 1000), st.sampled_from(list(Outcome))),
        st.tuples(st.just("cancel"), st.integers(0, 1000), st.just(0)),
        st.tuples(st.just("pressure"), st.sampled_from(["fresh", "thrash", "failed", "none"]), st.floats(0, 1)),
        st.tuples(st.just("time"), st.floats(0, 20), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 12), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.booleans())
# found by a random run (2026-12-08): an agent dormant past its return bound yields its slot to a new one,
# so the new agent is admitted with the window full beforehand (the property counts the yield)
@example(
    [
        ("step", 1, 0),
        ("pressure", "thrash", 0.0),
        ("end", 0, Outcome.success),
        ("time", 2.0, 0),
        ("pressure", "fresh", 0.0),
        ("step", 0, 0),
    ],
    False,
)
def test_tickets_window_and_staleness(seq: list[tuple], capacity_known: bool) -> None:  # type: ignore[type-arg]
    cfg = AdmissionConfig(
        idle_ttl_s=15,
        max_queue_wait_s=40,
        max_queue_length=20,
        starvation_timeout_s=25,
        aimd=AIMDConfig(initial=3, min=1, max=6, stale_after_ms=1000),
    )
    w = ReplicaWindow("r", AIMDController(cfg.aimd), cfg, FifoQueue[int]())
    now = 0.0
    issued: list[Ticket] = []
    ended: set[int] = set()
    waiting: list[int] = []

    def on_admit(t: Ticket, active_before: int, window: int, fresh: bool) -> None:
        issued.append(t)
        if t.reason == "new":
            assert fresh, "stale data never admits a new agent"
            assert active_before < window
        if t.reason == "starvation":
            assert fresh

    def check_grants() -> None:
        fresh = w.saturation(now) is None
        for g in w.grant(now):
            waiting.remove(g.waiter_id)
            on_admit(g.admitted.ticket, -1, 10**9, fresh)

    for op, a, b in seq:
        fresh = w.saturation(now) is None
        if op == "step":
            before, win, paused = w.active, w.window, w.counters.paused
            r = w.try_admit(StepInfo("t", "r", f"a{a}", "task", est_prompt_tokens=b), now)
            if isinstance(r, Admitted):  # a dormant holder may have yielded its slot for it
                on_admit(r.ticket, before - (w.counters.paused - paused), win, fresh)
            elif isinstance(r, Queued):
                waiting.append(r.waiter_id)
        elif op in ("end", "end_again") and issued:
            t = issued[a % len(issued)]
            first = t.id not in ended
            if op == "end" or not first:
                assert w.end(t, b, now, prompt_tokens=a, output_tokens=a) == first
                ended.add(t.id)
        elif op == "cancel" and waiting:
            wid = waiting.pop(a % len(waiting))
            assert w.cancel_wait(wid, now)
        elif op == "pressure":
            cap = 20000 if capacity_known else None
            snap = {
                "fresh": PressureSnapshot(ts=now, kv_usage=b * 0.8, kv_capacity_tokens=cap),
                "thrash": PressureSnapshot(ts=now, kv_usage=0.95, preemptions_per_s=1.0, kv_capacity_tokens=cap),
                "failed": PressureSnapshot(ts=now, ok=False),
                "none": None,
            }[a]
            d = w.on_pressure(snap, now)
            assert 1 <= d.window <= 6
        elif op == "time":
            now += a
            for to in w.expire(now).waiters:
                waiting.remove(to.waiter_id)
        elif op == "release":
            w.release_agent(f"a{a}", now)
        check_grants()
        st_ = w.state(now)
        assert st_.waiting == len(waiting) == len(w._waiters.queue)
        assert st_.running_steps == len(issued) - len(ended) == w.open_tickets()
        assert sum(x.running_steps for x in st_.agents) == st_.running_steps
    # every ticket can be ended exactly once, whatever happened before
    for t in issued:
        assert w.end(t, Outcome.cancelled, now) == (t.id not in ended)
    assert w.open_tickets() == 0
    assert sum(w.counters.ended.values()) == len(issued)
