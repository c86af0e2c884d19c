"""Typed run results and their JSON form (``Results.to_json`` / ``load_results``).

Times are seconds relative to the run start (``start_s``/``end_s``), measured
with the runner's monotonic clock; ``meta.started_at`` is the wall-clock ISO
start for humans. One ``StepResult`` per HTTP attempt (a retried 429 leaves a
record for each attempt, so 429s are counted exactly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson


@dataclass(slots=True)
class StepResult:
    task_id: str
    agent_id: str
    role: str
    tenant: str
    step: int  # step index within the agent
    attempt: int  # 1 = first try
    start_s: float
    end_s: float
    status: int  # HTTP status; 0 = transport error / timeout
    ttft_s: float | None = None
    queue_wait_ms: float | None = None  # x-concurproxy-queue-wait-ms, when the target is the proxy
    replica: str | None = None  # x-concurproxy-replica
    prompt_tokens: int = 0  # reported usage, else the local estimate
    completion_tokens: int = 0
    max_tokens: int = 0
    error: str | None = None
    cached_tokens: int | None = None  # the prefix-cache hit the target reported, when it did

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None

    @property
    def total_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(slots=True)
class TaskResult:
    task_id: str
    tenant: str
    status: str  # ok | failed | cancelled
    start_s: float
    end_s: float | None
    n_steps: int
    deadline_s: float | None = None
    arrival_s: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s

    @property
    def in_deadline(self) -> bool:
        """Completed, and within its deadline when it has one (counts for goodput)."""
        lat = self.latency_s
        return self.status == "ok" and lat is not None and (self.deadline_s is None or lat <= self.deadline_s)


@dataclass(slots=True)
class Series:
    """One scraped metric series: ``points`` are ``[t_s, value]`` pairs."""

    url: str
    name: str
    labels: dict[str, str]
    points: list[list[float]] = field(default_factory=list)

    @property
    def key(self) -> str:
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{lab}}} @ {self.url}"


@dataclass(slots=True)
class Meta:
    scenario: str
    target: str
    seed: int
    started_at: str
    elapsed_s: float
    run_tag: str = ""
    label: str = ""  # shown in reports / A-B tables
    scrape_errors: int = 0
    truncated: bool = False  # the hard end (duration + drain) cancelled running tasks
    client: dict[str, Any] = field(default_factory=dict)  # the scenario's client mode (api, identity, …)


@dataclass(slots=True)
class Results:
    meta: Meta
    steps: list[StepResult] = field(default_factory=list)
    tasks: list[TaskResult] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        from loadgen.stats import summarize

        return summarize(self)

    def to_json(self) -> bytes:
        doc = {
            "meta": asdict(self.meta),
            "summary": self.summary(),
            "steps": [asdict(s) for s in self.steps],
            "tasks": [asdict(t) for t in self.tasks],
            "series": [asdict(s) for s in self.series],
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_json())

    @property
    def label(self) -> str:
        return self.meta.label or self.meta.target


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def results_from_dict(doc: dict[str, Any]) -> Results:
    return Results(
        meta=_build(Meta, doc["meta"]),
        steps=[_build(StepResult, s) for s in doc.get("steps", [])],
        tasks=[_build(TaskResult, t) for t in doc.get("tasks", [])],
        series=[_build(Series, s) for s in doc.get("series", [])],
    )


def load_results(path: str | Path) -> Results:
    try:
        doc = orjson.loads(Path(path).read_bytes())
        return results_from_dict(doc)
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a loadgen results file ({e})") from None
