"""Trace replay: recorded request shapes → deterministic ``TaskPlan``s.

**Mooncake JSONL** (one request per line)::

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, ...]}

``timestamp`` is in ms; each hash id stands for one block of ``block_size``
tokens. The prompt is the concatenation of each hash id's block text (the text
of a block depends only on its id, so requests with the same leading hash ids
get byte-identical prefixes), cut to ``input_length`` tokens; any length beyond
the blocks is filled with text unique to the request. Each line is its own
one-step agent.

**Session CSV** (header ``session_id,timestamp,input_tokens,output_tokens``,
optional ``role``, ``tenant``; timestamps in seconds): the rows of a session are
the steps of one agent, sent in order, each not before its timestamp. Turn
``n``'s prompt is the first ``input_tokens`` words of the session's own text
stream, so a growing session re-sends its earlier turns as a prefix.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

import orjson

from loadgen.plan import StepSpec, TaskPlan
from loadgen.scenario import Scenario, Tenant, TraceSpec
from loadgen.text import chat_tokens, words

_W = 7  # characters per word of loadgen.text.words (" " + 6 hex)


class TraceError(ValueError):
    """A trace file that cannot be replayed (the message names the file and line)."""


def block_text(hash_id: int | str, block_size: int) -> str:
    return words(f"block:{hash_id}", block_size)


def mooncake_prompt(hash_ids: list[int], input_length: int, block_size: int, row_key: str) -> str:
    parts: list[str] = []
    left = input_length
    for h in hash_ids:
        if left <= 0:
            break
        take = min(block_size, left)
        parts.append(block_text(h, block_size)[: take * _W])
        left -= take
    if left > 0:
        parts.append(words(f"{row_key}:tail", left))
    return "".join(parts)


def _one_step(task_id: str, index: int, tenant: Tenant, arrival_s: float, text: str, n_in: int, n_out: int) -> TaskPlan:
    step = StepSpec(
        task_id=task_id,
        agent_id=task_id,
        role="default",
        index=0,
        messages=(("user", text),),
        max_tokens=max(1, n_out),
        est_prompt_tokens=chat_tokens([("user", n_in)]),
        agent_done=True,
    )
    return TaskPlan(index, task_id, tenant.name, tenant.api_key, arrival_s, None, (((step,),),))


def _tenants(sc: Scenario, seed: int) -> tuple[random.Random, list[Tenant], list[float]]:
    return random.Random(f"{seed}:trace-tenants"), list(sc.tenants), [t.weight for t in sc.tenants]


def _limits_ok(n: int, at: float, max_tasks: int | None, duration_s: float | None) -> bool:
    return (max_tasks is None or n < max_tasks) and (duration_s is None or at <= duration_s)


def iter_mooncake(
    sc: Scenario, spec: TraceSpec, seed: int, max_tasks: int | None, duration_s: float | None, tag: str = ""
) -> Iterator[TaskPlan]:
    rng, tenants, weights = _tenants(sc, seed)
    t0: float | None = None
    n = 0
    with Path(spec.path).open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                ts, n_in, n_out = float(row["timestamp"]), int(row["input_length"]), int(row["output_length"])
                hash_ids = list(row.get("hash_ids", []))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise TraceError(f"{spec.path}:{lineno}: bad trace row ({e!r})") from None
            t0 = ts if t0 is None else t0
            at = (ts - t0) / 1000.0 / spec.speedup
            if not _limits_ok(n, at, max_tasks, duration_s):
                return
            if spec.max_output_tokens:
                n_out = min(n_out, spec.max_output_tokens)
            task_id = f"{tag}r{n:06d}"
            text = mooncake_prompt(hash_ids, n_in, spec.block_size, f"row{n}")
            yield _one_step(task_id, n, rng.choices(tenants, weights)[0], at, text, n_in, n_out)
            n += 1


def iter_sessions(
    sc: Scenario, spec: TraceSpec, seed: int, max_tasks: int | None, duration_s: float | None, tag: str = ""
) -> Iterator[TaskPlan]:
    rng, tenants, weights = _tenants(sc, seed)
    by_name = {t.name: t for t in tenants}
    sessions: dict[str, list[tuple[float, int, int, str, str | None]]] = {}
    with Path(spec.path).open(newline="") as f:
        reader = csv.DictReader(f)
        for lineno, row in enumerate(reader, 2):
            try:
                sid = row["session_id"]
                rec = (float(row["timestamp"]), int(row["input_tokens"]), int(row["output_tokens"]))
            except (KeyError, TypeError, ValueError) as e:
                raise TraceError(f"{spec.path}:{lineno}: bad session row ({e!r})") from None
            sessions.setdefault(sid, []).append((*rec, row.get("role") or "default", row.get("tenant")))
    if not sessions:
        return
    t0 = min(r[0] for rows in sessions.values() for r in rows)
    ordered = sorted(sessions.items(), key=lambda kv: (min(r[0] for r in kv[1]), kv[0]))
    for n, (sid, rows) in enumerate(ordered):
        rows.sort(key=lambda r: r[0])
        at = (rows[0][0] - t0) / spec.speedup
        if not _limits_ok(n, at, max_tasks, duration_s):
            return
        task_id = f"{tag}s{n:05d}"
        stream = words(f"session:{sid}", max(r[1] for r in rows))
        tname = rows[0][4]
        if tname is not None and tname not in by_name:
            raise TraceError(f"{spec.path}: session {sid} names unknown tenant {tname!r}")
        tenant = by_name[tname] if tname else rng.choices(tenants, weights)[0]
        steps = tuple(
            StepSpec(
                task_id=task_id,
                agent_id=task_id,
                role=role,
                index=i,
                messages=(("user", stream[: n_in * _W]),),
                max_tokens=max(1, min(n_out, spec.max_output_tokens or n_out)),
                est_prompt_tokens=chat_tokens([("user", n_in)]),
                agent_done=i == len(rows) - 1,
                at_s=(ts - t0) / spec.speedup,
            )
            for i, (ts, n_in, n_out, role, _) in enumerate(rows)
        )
        yield TaskPlan(n, task_id, tenant.name, tenant.api_key, at, None, ((steps,),))


def iter_trace_tasks(
    sc: Scenario, seed: int, max_tasks: int | None = None, duration_s: float | None = None, tag: str = ""
) -> Iterator[TaskPlan]:
    assert sc.trace is not None
    if not Path(sc.trace.path).exists():
        raise TraceError(f"{sc.trace.path}: trace file not found")
    fn = iter_mooncake if sc.trace.format == "mooncake" else iter_sessions
    return fn(sc, sc.trace, seed, max_tasks, duration_s, tag)
