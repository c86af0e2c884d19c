"""StepInfo.with_resident_prefix carries every other field (it builds positionally for speed)."""

from __future__ import annotations

import dataclasses

from concurproxy.control.types import PriorityClass, StepInfo


def test_with_resident_prefix_equals_dataclasses_replace_for_every_field() -> None:
    # distinct non-default values, so a field dropped or swapped by the positional constructor shows
    values = {
        "tenant": "t",
        "role": "r",
        "agent_id": "a",
        "task_id": "k",
        "priority": PriorityClass.high,
        "est_prompt_tokens": 11,
        "max_tokens": 13,
        "last_step": True,
        "resident_prefix_tokens": 5,
    }
    assert {f.name for f in dataclasses.fields(StepInfo)} == set(values), "a new field: update with_resident_prefix"
    step = StepInfo(**values)  # type: ignore[arg-type]
    assert step.with_resident_prefix(7) == dataclasses.replace(step, resident_prefix_tokens=7)
