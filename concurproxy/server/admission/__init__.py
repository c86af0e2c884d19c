"""Admission in the request path: one protocol (`AdmissionGate`), one ticket (`AdmissionTicket`).

The async shell of the pure admission core (``concurproxy.control.admission``): `WindowGate`
(windows of agents per replica), `SharedWindowGate` (``leases.py``: the same with Redis leases,
for a fleet of proxy instances), `OpenGate` (``admission.controller: none``). ``build_gate``
picks one from the policy's `DecisionCore`; see ``gate.py`` for the seam.
"""

from concurproxy.server.admission.build import build_gate
from concurproxy.server.admission.errors import AdmissionRejected, AdmissionTimeout, ReplicaLeft
from concurproxy.server.admission.gate import AdmissionGate, AdmissionTicket
from concurproxy.server.admission.listener import AdmissionListener, RecordingListener
from concurproxy.server.admission.open import OpenGate
from concurproxy.server.admission.windows import WindowGate

__all__ = [
    "AdmissionGate",
    "AdmissionListener",
    "AdmissionRejected",
    "AdmissionTicket",
    "AdmissionTimeout",
    "OpenGate",
    "RecordingListener",
    "ReplicaLeft",
    "WindowGate",
    "build_gate",
]
