"""Every plugin kind's registry, built once per process, and the check of a policy's plugin names.

The shell builds one :class:`Plugins` at startup and hands its registries to
whatever creates controllers, queues, scorers and routers, so a name is looked
up the same way in ``config validate``, at ``serve`` and on a hot reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from concurproxy.config.models import Policy
from concurproxy.control.fairness.registry import FairnessRegistry
from concurproxy.control.limits.registry import ControllerRegistry
from concurproxy.plugins.registry import EntryPointSource, Lookup, PluginError, installed
from concurproxy.routing.factory import RouterRegistry
from concurproxy.routing.scorers.registry import ScorerRegistry


@dataclass(frozen=True, slots=True)
class Plugins:
    controllers: ControllerRegistry
    fairness: FairnessRegistry
    scorers: ScorerRegistry
    routers: RouterRegistry

    @classmethod
    def load(cls, entry_points: EntryPointSource = installed) -> Plugins:
        """Built-ins plus the installed packages' entry points (read when a name is first looked up)."""
        return cls(
            controllers=ControllerRegistry(entry_points=entry_points),
            fairness=FairnessRegistry(entry_points=entry_points),
            scorers=ScorerRegistry(entry_points=entry_points),
            routers=RouterRegistry(entry_points=entry_points),
        )

    def problems(self, policy: Policy) -> list[str]:
        """One line per plugin the policy names that cannot be used, with its path in the file."""
        named: list[tuple[str, Lookup, str]] = [
            ("admission.controller", self.controllers, policy.admission.controller),
            ("fairness.policy", self.fairness, policy.fairness.policy),
            ("routing.policy", self.routers, policy.routing.policy),
        ]
        # every scorer, even under a router that ignores them: a typo there is still a typo
        named += [(f"routing.scorers.{i}.type", self.scorers, s.type) for i, s in enumerate(policy.routing.scorers)]
        found = []
        for path, registry, name in named:
            try:
                registry.get(name)  # imports an installed plugin, so a broken one is reported here too
            except PluginError as exc:
                found.append(f"{path}: {exc}")
        return found

    def check(self, policy: Policy) -> None:
        """Raise :class:`PluginError` naming every unusable plugin of ``policy``."""
        found = self.problems(policy)
        if found:
            raise PluginError("; ".join(found))
