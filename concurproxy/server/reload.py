"""Apply a new policy to a running proxy (SIGHUP, a changed policy file, or POST /admin/reload).

What changes live: tenants and keys, auth, roles and budgets (bucket levels
kept), limits, timeouts, retries, and the replica pool (new upstreams join the
pool, the poller and the router — they start empty, so new agents go there
first; removed ones leave at once, their in-flight steps finish). What needs a
restart: the listen address, the admission controller kind and its AIMD
parameters, the fairness policy, routing policy and scorers, the state
backend. A new file that does not validate changes nothing: the old policy
stays, and the error is logged and kept in /admin/state. Naming a plugin that is
not installed counts as not validating (even in a restart-only section: the next
restart would fail on it).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import orjson

from concurproxy.config.load import ConfigError, load_policy
from concurproxy.config.models import Policy
from concurproxy.control.budgets import BudgetLimits
from concurproxy.plugins import PluginError
from concurproxy.plugins.installed import Plugins
from concurproxy.server.components import Components
from concurproxy.server.membership import add_replica, remove_replica
from concurproxy.server.stages.budgets import BudgetStage
from concurproxy.tenancy.directory import TenancyError, TenantDirectory
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.reload")

RESTART_ONLY = ("listen", "admission", "fairness", "routing", "models", "state", "telemetry", "discovery")


def fingerprint(policy: Policy) -> str:
    return hashlib.sha256(orjson.dumps(policy.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def apply_policy(c: Components, new: Policy) -> list[str]:
    """Swap in ``new``; returns what changed (for the log). Raises ConfigError, PluginError or
    TenancyError before changing anything."""
    old = c.policy
    if not new.upstreams and new.discovery is None:
        raise ConfigError("upstreams: a reload may not empty the replica pool (the proxy would fail every step)")
    (c.plugins if c.plugins is not None else Plugins.load()).check(new)
    directory = TenantDirectory.from_policy(new.tenants, new.auth)  # may raise: nothing changed yet
    changes: list[str] = []
    c.tenants.directory = directory
    if isinstance(c.budgets, BudgetStage):
        c.budgets.reconfigure(BudgetLimits.for_policy(new))
    c.admission.reconfigure(new)
    changes += _apply_upstreams(c, new)
    if old.health != new.health:  # read by the checker's next round and by every routing decision
        c.pool.health_cfg = new.health
        changes.append("health: applied")
    for section in RESTART_ONLY:
        if getattr(old, section) != getattr(new, section):
            changes.append(f"{section}: changed, takes effect on restart")
    if c.forwarder is not None:
        c.forwarder.configure(new)
    c.policy = new
    c.rate_limiter = c.make_rate_limiter(new)
    return changes


def _apply_upstreams(c: Components, new: Policy) -> list[str]:
    """Configured replicas follow the file; replicas found by DNS discovery are discovery's business."""
    wanted = {r.id: r for r in (Replica.from_config(u) for u in new.upstreams)}
    changes = []
    for rid in [r.id for r in c.pool if r.id not in wanted and not r.discovered]:
        remove_replica(c, rid)
        changes.append(f"replica {rid} removed")
    for rid, replica in wanted.items():
        current = c.pool.get(rid)
        if current is None:
            add_replica(c, replica)
            changes.append(f"replica {rid} added")
        elif current.priority_scheduling != replica.priority_scheduling:  # a plain flag: applies to the next step
            current.priority_scheduling = replica.priority_scheduling
            changes.append(f"replica {rid} priority_scheduling {replica.priority_scheduling}")
    return changes


def reload_from_file(c: Components, path: str | Path, overrides: dict[str, object] | None = None) -> bool:
    """Load, validate and apply; on any error keep the running policy and remember why."""
    try:
        new = load_policy(path, overrides)
        changes = apply_policy(c, new)
    except (ConfigError, PluginError, TenancyError) as exc:
        c.reload_status.record_error(str(exc))
        log.error("policy reload from %s rejected, keeping the running policy: %s", path, exc)
        return False
    c.reload_status.record_ok(fingerprint(new))
    log.info("policy reloaded from %s (%s): %s", path, fingerprint(new), "; ".join(changes) or "no pool changes")
    return True
