"""Simulated provider servers speaking each real wire protocol on 127.0.0.1 (tests and demo mode)."""

from ..faults import FAULT_KINDS, Fault  # the vocabulary lives in core.faults; re-exported for the tests
from .server import Recorded, SimServer, echo_responder

__all__ = ["FAULT_KINDS", "Fault", "Recorded", "SimServer", "echo_responder"]
