"""Cancelling one provider attempt from another thread (a hedge loser, a stalled stream).

The attempt's thread enters a `CancelScope`; code below it — the adapters' response hook and the
fault-injecting transport — finds the scope with `current()`. `cancel()` wakes any wait of ours
and shuts the attempt's socket down, so a read blocked in the SDK ends at once and the
connection is closed rather than left to time out.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any

_local = threading.local()


class CancelScope:
    __slots__ = ("event", "_responses", "_lock")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._responses: list[Any] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if cancelled meanwhile."""
        return self.event.wait(seconds)

    def adopt(self, response: Any) -> None:
        """Remember an HTTP response (httpx or httpx2) whose connection belongs to this attempt."""
        with self._lock:
            self._responses.append(response)
            late = self.event.is_set()
        if late:
            _shutdown(response)

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            _shutdown(response)


def _shutdown(response: Any) -> None:
    # httpcore exposes the connection's socket through the documented "network_stream" extension.
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def current() -> CancelScope | None:
    return getattr(_local, "scope", None)


def enter(s: CancelScope) -> CancelScope | None:
    """Make `s` this thread's scope; returns the previous one for `leave()` (cheap, per chunk)."""
    previous = current()
    _local.scope = s
    return previous


def leave(previous: CancelScope | None) -> None:
    _local.scope = previous


@contextmanager
def scope(s: CancelScope):
    previous = enter(s)
    try:
        yield s
    finally:
        leave(previous)
