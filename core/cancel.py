"""Cancelling one provider attempt from another thread (a hedge loser, a stalled stream).

The attempt's thread enters a `CancelScope`; code below it — the adapters' response hook and the
fault-injecting transport — finds the scope with `current()`. `cancel()` wakes any wait of ours
and shuts the attempt's socket down, so a read blocked in the SDK ends at once and the
connection is closed rather than left to time out.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any

local = threading.local()  # `scope`: the calling thread's CancelScope (read directly on hot paths)


class CancelScope:
    __slots__ = ("event", "_responses", "_sockets", "_lock")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._responses: list[Any] = []
        self._sockets: set[socket.socket] = set()
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

    def hold(self, sock: socket.socket) -> None:
        """The attempt is about to wait on this socket (before any response exists: connecting,
        sending, waiting for the headers of a silent provider)."""
        with self._lock:
            self._sockets.add(sock)
            late = self.event.is_set()
        if late:
            _shut(sock)

    def release(self) -> None:
        """The attempt is over: its pooled connection may serve someone else now."""
        with self._lock:
            self._responses.clear()
            self._sockets.clear()

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            responses, sockets = list(self._responses), list(self._sockets)
        for response in responses:
            _shutdown(response)
        for sock in sockets:
            _shut(sock)


def _shutdown(response: Any) -> None:
    # httpcore exposes the connection's socket through the documented "network_stream" extension.
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ScopedBackend:
    """An httpcore network backend whose connections tell the calling thread's scope which socket
    it waits on, at every read and write: so a cancel ends even a wait for the first byte of a
    silent provider, on a new or a pooled connection."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
        return _ScopedStream(self._inner.connect_tcp(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ScopedStream:
    """One connection's socket stream: it tells the calling thread's scope which socket it waits
    on, and a read in a thread that is `reading_rest` waits no longer than that allows."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        sock = inner.get_extra_info("socket")
        self._sock = sock if isinstance(sock, socket.socket) else None

    def _held(self) -> None:
        if self._sock is not None and (s := current()) is not None:
            s.hold(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._held()
        if (until := getattr(local, "until", None)) is not None:
            left = until - time.monotonic()
            if left <= 0:  # also when more is there already: a server that never stops is no end
                raise TimeoutError("the read's deadline passed")
            timeout = left if timeout is None else min(timeout, left)
        return self._inner.read(max_bytes, timeout)

    def write(self, *args: Any, **kwargs: Any) -> None:
        self._held()
        return self._inner.write(*args, **kwargs)

    def start_tls(self, *args: Any, **kwargs: Any) -> Any:
        return _ScopedStream(self._inner.start_tls(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def scoped_transport(lib: Any) -> Any:
    """A plain `lib.HTTPTransport` (httpx or httpx2) whose connections tell the calling thread's
    scope which socket it waits on: cancelling an attempt then shuts that socket, even before any
    response exists. httpx builds its pool with no say in the network backend: it is swapped in."""
    transport = lib.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = ScopedBackend(pool._network_backend)
    return transport


@contextmanager
def reading_rest(seconds: float):
    """In this thread, for the block: a socket read waits at most until `seconds` from now,
    whatever its own timeout, and none starts after that (each raises a timeout instead)."""
    previous = getattr(local, "until", None)
    local.until = time.monotonic() + seconds
    try:
        yield
    finally:
        local.until = previous


def current() -> CancelScope | None:
    return getattr(local, "scope", None)


def enter(s: CancelScope) -> CancelScope | None:
    """Make `s` this thread's scope; returns the previous one for `leave()` (cheap, per chunk)."""
    previous = current()
    local.scope = s
    return previous


def leave(previous: CancelScope | None) -> None:
    local.scope = previous


@contextmanager
def scope(s: CancelScope):
    previous = enter(s)
    try:
        yield s
    finally:
        leave(previous)
