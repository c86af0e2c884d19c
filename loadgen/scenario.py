"""Scenario files: the documented, validated description of a workload.

A scenario is YAML validated by the pydantic models below (unknown keys are
errors, so a typo cannot pass silently). ``load_scenario`` turns any
validation failure into a ``ScenarioError`` whose message names the file and
the dotted path of each bad field (``task.roles.executor.output_tokens.sigma``).
The field docs below are the schema reference (docs/loadgen.md mirrors them;
``Scenario.model_json_schema()`` exports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadgen.dists import Constant, Dist

Priority = Literal["critical", "high", "normal", "low"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Poisson(Model):
    """Open loop: tasks arrive as a Poisson process (exponential gaps, mean 1/rate)."""

    mode: Literal["poisson"]
    rate_per_s: float = Field(gt=0, description="mean task arrivals per second")


class Bursts(Model):
    """Open loop: ``size`` tasks arrive together every ``every_s`` seconds (spread over ``jitter_s``)."""

    mode: Literal["bursts"]
    every_s: float = Field(gt=0)
    size: int = Field(ge=1)
    jitter_s: float = Field(default=0.0, ge=0)


class Closed(Model):
    """Closed loop: keep ``concurrency`` tasks running; start the next when one ends (after ``think_s``)."""

    mode: Literal["closed"]
    concurrency: int = Field(ge=1)
    think_s: Dist = Constant(value=0.0)


Arrivals = Annotated[Poisson | Bursts | Closed, Field(discriminator="mode")]


class RoleSpec(Model):
    """Per-role step distributions. Every step first appends ``growth_tokens`` of new context
    (tool output / instructions) to the agent's history, asks for ``output_tokens``, and after
    the reply pauses ``tool_pause_s`` (a tool call) before its next step."""

    growth_tokens: Dist = Constant(value=200.0)
    output_tokens: Dist = Constant(value=128.0)
    tool_pause_s: Dist = Constant(value=0.0)
    priority: Priority = "normal"


class Roles(Model):
    planner: RoleSpec = RoleSpec(output_tokens=Constant(value=256.0), priority="high")
    executor: RoleSpec = RoleSpec()
    critic: RoleSpec = RoleSpec(growth_tokens=Constant(value=50.0), output_tokens=Constant(value=64.0))
    summary: RoleSpec = RoleSpec(growth_tokens=Constant(value=50.0), output_tokens=Constant(value=256.0))


class TaskShape(Model):
    """One task = planner step(s) → K executor branches of M steps, each branch reviewed by its
    critic, which sends it back for another round with probability ``critic_reject_p`` (at most
    ``max_rounds`` rounds) → one summary step over all branches."""

    system_prompt_tokens: int = Field(default=400, ge=0, description="shared by every agent of every task")
    task_prompt_tokens: Dist = Constant(value=300.0)
    planner_steps: int = Field(default=1, ge=0)
    branches: Dist = Constant(value=3.0)
    branch_steps: Dist = Constant(value=4.0)
    critic: bool = True
    critic_reject_p: float = Field(default=0.3, ge=0, le=1)
    max_rounds: int = Field(default=3, ge=1)
    summary: bool = True
    deadline_s: float | None = Field(default=None, gt=0, description="a task counts for goodput if done in time")
    roles: Roles = Roles()


class Tenant(Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    api_key: str = Field(min_length=1, description="sent as Authorization: Bearer <key>")
    weight: float = Field(default=1.0, gt=0, description="share of the task mix")
    task: TaskShape | None = Field(default=None, description="this tenant's own task shape")


class TraceSpec(Model):
    """Replay a trace instead of generating task trees."""

    path: str
    format: Literal["mooncake", "sessions"] = "mooncake"
    block_size: int = Field(default=512, ge=1, description="tokens per hash id (Mooncake: 512)")
    speedup: float = Field(default=1.0, gt=0, description="divide trace timestamps by this")
    max_output_tokens: int | None = Field(default=None, ge=1, description="clamp output lengths")


class Retry(Model):
    """429/503 answers are retried (honouring Retry-After, capped at ``max_backoff_s``)."""

    max_attempts: int = Field(default=3, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=10.0, ge=0)


class ClientSpec(Model):
    """How the simulated clients speak. ``api``: the wire API of every step (the same conversation
    in each). ``identity: headers`` sends X-Agent-Id/X-Task-Id/X-Agent-Role/X-Priority; ``none``
    sends only the API key, as most real agent frameworks do. ``done_signal`` sends X-Agent-Done on
    each agent's last step; real clients never do, and it names no agent without identity headers,
    so it defaults to ``identity == headers`` and is an error with ``identity: none``.
    ``responses_chain`` (``api: responses`` only) sends each agent's later steps as
    ``previous_response_id`` + the new input items instead of the whole history."""

    api: Literal["chat", "responses", "messages"] = "chat"
    identity: Literal["headers", "none"] = "headers"
    done_signal: bool = True
    responses_chain: bool = False

    @model_validator(mode="before")
    @classmethod
    def _done_follows_identity(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("done_signal") is None:
            return {**data, "done_signal": data.get("identity", "headers") == "headers"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ClientSpec:
        if self.done_signal and self.identity == "none":
            raise ValueError("done_signal needs identity: headers (X-Agent-Done names no agent without X-Agent-Id)")
        if self.responses_chain and self.api != "responses":
            raise ValueError("responses_chain needs api: responses")
        return self


class Scenario(Model):
    name: str = "scenario"
    description: str = ""
    model: str = Field(default="default", description="the `model` field of every request")
    seed: int = 0
    arrivals: Arrivals = Closed(mode="closed", concurrency=4)
    duration_s: float | None = Field(default=None, gt=0, description="stop starting tasks after this")
    max_tasks: int | None = Field(default=None, ge=1, description="stop after this many tasks")
    drain_s: float = Field(default=60.0, ge=0, description="after the end, how long running tasks may finish")
    max_inflight: int = Field(default=256, ge=1, description="hard cap on concurrent HTTP requests")
    request_timeout_s: float = Field(default=300.0, gt=0)
    stream: bool = True
    retry: Retry = Retry()
    tenants: list[Tenant] = Field(default_factory=lambda: [Tenant(name="default", api_key="sk-loadgen")], min_length=1)
    task: TaskShape = TaskShape()
    trace: TraceSpec | None = None
    client: ClientSpec = ClientSpec()

    @model_validator(mode="after")
    def _bounded(self) -> Scenario:
        if self.trace is None and self.duration_s is None and self.max_tasks is None:
            raise ValueError("set duration_s and/or max_tasks: a run must be bounded")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError(f"tenant names must be unique: {names}")
        return self

    def shape_for(self, tenant: Tenant) -> TaskShape:
        return tenant.task or self.task


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the bad field paths."""


_TAGS = frozenset({"constant", "uniform", "lognormal", "poisson", "bursts", "closed"})


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in _TAGS or p.startswith("function-"):
            continue  # discriminated-union tag / validator wrapper, not a YAML key
        else:
            parts.append(("." if parts else "") + p)
    return "".join(parts) or "<top level>"


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid scenario ({err.error_count()} error(s))"]
    for e in err.errors():
        lines.append(f"  {_loc(tuple(e['loc']))}: {e['msg']}")
    return "\n".join(lines)


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_errors(e, source)) from None
    if sc.trace is not None and base_dir is not None and not Path(sc.trace.path).is_absolute():
        trace = sc.trace.model_copy(update={"path": str(base_dir / sc.trace.path)})
        sc = sc.model_copy(update={"trace": trace})
    return sc


def with_overrides(
    sc: Scenario,
    *,
    client: Mapping[str, Any] | None = None,
    agents: int | None = None,
    steps: int | None = None,
) -> Scenario:
    """``sc`` with command-line overrides, validated again (a bad combination is a ``ScenarioError``).

    ``client``: fields of ``client`` (``None`` values are ignored; a new ``identity`` without a
    ``done_signal`` re-derives the default). ``agents``: a closed loop of that many concurrent
    tasks and that many tasks in all (in a one-agent-per-task scenario such as ``plain-loop``,
    N agents). ``steps``: steps per executor branch (``task.branch_steps``, every tenant's too).
    """
    data = sc.model_dump()
    if client:
        given = {k: v for k, v in client.items() if v is not None}
        merged = {**data["client"], **given}
        if "identity" in given and "done_signal" not in given:
            merged["done_signal"] = None
        data["client"] = merged
    if agents is not None:
        if sc.trace is not None or data["arrivals"]["mode"] != "closed":
            raise ScenarioError(f"{sc.name}: --agents needs closed-loop arrivals (arrivals.mode: closed)")
        data["arrivals"]["concurrency"] = agents
        data["max_tasks"] = agents
    if steps is not None:
        for shape in [data["task"], *(t["task"] for t in data["tenants"] if t["task"] is not None)]:
            shape["branch_steps"] = {"dist": "constant", "value": float(steps)}
    return parse_scenario(data, f"{sc.name} (with command-line overrides)")


def bundled_scenarios() -> dict[str, Path]:
    d = Path(__file__).parent / "scenarios"
    return {p.stem: p for p in sorted(d.glob("*.yaml"))}


def load_scenario(path: str | Path) -> Scenario:
    """Load a YAML scenario: a file path, or the name of a bundled one (``swe-swarm``)."""
    p = Path(path)
    if not p.exists():
        bundled = bundled_scenarios()
        if str(path) in bundled:
            p = bundled[str(path)]
        else:
            raise ScenarioError(f"{path}: no such file (bundled scenarios: {', '.join(bundled)})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{p}: a scenario must be a YAML mapping")
    return parse_scenario(data, str(p), p.parent)
