"""Simulated provider servers speaking each real wire protocol on 127.0.0.1 (tests and demo mode)."""

from .server import FAULT_KINDS, Fault, Recorded, SimServer, echo_responder

__all__ = ["FAULT_KINDS", "Fault", "Recorded", "SimServer", "echo_responder"]
