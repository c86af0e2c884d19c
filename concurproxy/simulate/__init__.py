"""``concurproxy simulate``: the proxy's decision core against a virtual fleet, in virtual time.

Entry points: :func:`simulate` (one run → :class:`SimReport`), :func:`run_sweep`
(replicas × policies × load → table + plot), :func:`load_fleet`.
"""

from concurproxy.simulate.fleet import Fleet, FleetError, load_fleet, uniform_fleet
from concurproxy.simulate.record import FleetFigures, SimReport
from concurproxy.simulate.sim import SimOptions, Simulation, simulate

__all__ = [
    "Fleet",
    "FleetError",
    "FleetFigures",
    "SimOptions",
    "SimReport",
    "Simulation",
    "load_fleet",
    "simulate",
    "uniform_fleet",
]
