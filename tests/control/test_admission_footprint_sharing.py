"""New agents are charged only their private KV: a resident shared prefix is free, a one-step agent does not grow."""

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.admission.core import AdmissionCore
from concurproxy.control.types import StepInfo


def footprint(**kw: object) -> int:
    window = AdmissionCore(AdmissionConfig()).window("r0")
    step = StepInfo(
        tenant="t", role="executor", agent_id="a", task_id="k", est_prompt_tokens=1600, max_tokens=200, **kw
    )  # type: ignore[arg-type]
    return window._held.new_footprint(step).tokens()


def test_shared_prefix_and_last_step_reduce_the_new_agents_footprint():
    full = footprint()
    assert full == 1600 + 4 * 200  # context + 4 steps of growth (initial growth = min(max_tokens, 512))
    assert footprint(resident_prefix_tokens=1200) == 400 + 4 * 200
    assert footprint(last_step=True) == 1600
    assert footprint(resident_prefix_tokens=1200, last_step=True) == 400
    assert footprint(resident_prefix_tokens=5000) == 0 + 4 * 200  # never negative
