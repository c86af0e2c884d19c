"""Async admission shell: waits on the pure core's decisions (``concurproxy.control.admission``)."""

from concurproxy.admission.errors import AdmissionRejected, AdmissionTimeout
from concurproxy.admission.listener import AdmissionListener, RecordingListener
from concurproxy.admission.service import AdmissionService
from concurproxy.admission.ticket import StepTicket, outcome_of

__all__ = [
    "AdmissionListener",
    "AdmissionRejected",
    "AdmissionService",
    "AdmissionTimeout",
    "RecordingListener",
    "StepTicket",
    "outcome_of",
]
