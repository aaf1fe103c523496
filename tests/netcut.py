"""A TCP proxy on 127.0.0.1 that a test can cut and reconnect: the network between the app and a
real server (PostgreSQL) failing for real, without touching the server.

`cut()` closes every relayed connection and, until `restore()`, accepts new ones only to close
them at once, so a client sees a dead server immediately instead of after a timeout.
"""

from __future__ import annotations

import socket
import threading


class NetCut:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._flowing = threading.Event()  # cleared by freeze(): bytes are held, nothing is closed
        self._flowing.set()
        self.accepted = 0  # connections the proxy relayed (not counting refused ones)
        threading.Thread(target=self._accept, name="netcut-accept", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            live, self._open = self._open, set()
        for s in live:
            _close(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
        self._flowing.set()

    def freeze(self) -> None:
        """A server gone silent: connections stay open and are accepted, but nothing is relayed
        (no TCP-level error ever reaches the client) until `restore()`."""
        self._flowing.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut
            if refuse:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:  # cut while connecting
                    _close(client), _close(upstream)
                    continue
                self._open.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), name="netcut-pipe", daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
