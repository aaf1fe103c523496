"""Simulated provider servers on 127.0.0.1: real HTTP, real SSE / NDJSON, scriptable faults.

Tests drive the real SDKs against them; demo mode runs the app on them. Each server speaks
one provider's protocol (see `wire.py`) and answers each request according to the next
scripted `Fault` (core/faults.py), or its default when the script is empty.
"""

from __future__ import annotations

import collections
import json
import math
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NoReturn

from ..faults import Fault, Reply, before_reply, disturb, error_reply
from .wire import WIRES, Frames

@dataclass(frozen=True)
class Recorded:
    """A request the server received, for tests to check what the SDK sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    client: str = ""  # the client's address and port: the connection the request came on


def echo_responder(question: str, model: str) -> str:
    return f"Simulated answer from {model}: you asked {question.strip()[:200]!r}. " + " ".join(
        f"w{i}" for i in range(50))


class SimServer:
    """One simulated provider endpoint. Start it, point an SDK at `.url`, script faults.

    It remembers the last `keep` requests it received (for tests to inspect)."""

    def __init__(
        self,
        kind: str,
        *,
        responder: Callable[[str, str], str] = echo_responder,
        chunk_delay: float = 0.0,
        first_delay: float | Callable[[], float] = 0.0,
        api_key: str | None = None,
        keep: int = 2000,
        end_delay: float = 0.0,
    ) -> None:
        self.wire = WIRES[kind]
        self.kind = kind
        self.responder = responder
        self.chunk_delay = chunk_delay
        self.first_delay = first_delay
        # Seconds between a stream's last frame (its end marker) and the bytes that end the HTTP
        # body: a server slow to finish its response (inf: until `resume()`).
        self.end_delay = end_delay
        self.api_key = api_key
        self.default = Fault()
        self._script: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        # Bounded: a long-running demo must not grow without end.
        self._requests: collections.deque[Recorded] = collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._resumes = 0  # resume() calls so far: a pause that sees it change ends early
        self._resumed = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, port: int = 0) -> SimServer:
        handler = type("Handler", (_Handler,), {"sim": self})
        self._httpd = _Server(("127.0.0.1", port), handler)
        # A short poll interval: shutdown() waits for the serving loop to notice, and tests close
        # many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name=f"sim-{self.kind}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.resume()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SimServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def root(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The base URL to give the SDK (OpenAI's includes /v1)."""
        return self.wire.base_url(self.root)

    # -- scripting ---------------------------------------------------------------------------
    def push(self, *faults: Fault) -> None:
        """Answer the next chat requests with these faults, in order; then with the default."""
        with self._lock:
            self._script.extend(faults)

    def resume(self) -> None:
        """End every pause now: a stalled or silent stream goes on at once (a test's "the provider
        came back", at the moment it chooses)."""
        with self._resumed:
            self._resumes += 1
            self._resumed.notify_all()

    def set_default(self, fault: Fault) -> None:
        with self._lock:
            self._script.clear()
            self.default = fault

    def first_wait(self) -> float:
        """Seconds before the first text: fixed, or drawn per request (e.g. log-normal)."""
        return self.first_delay() if callable(self.first_delay) else self.first_delay

    def next_fault(self) -> Fault:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def wait_for(self, count: int, *, method: str | None = None, timeout: float = 10.0) -> list[Recorded]:
        """Block until `count` requests (of `method`) have arrived, or `timeout`; return them."""
        def matching() -> list[Recorded]:
            return [r for r in self._requests if method is None or r.method == method]

        with self._arrived:
            self._arrived.wait_for(lambda: len(matching()) >= count, timeout)
            return matching()

    def _record(self, rec: Recorded) -> None:
        with self._arrived:
            self._requests.append(rec)
            self._arrived.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default of 5 drops connections when many sessions arrive at once

    def handle_error(self, request, client_address) -> None:
        # Clients hang up on us on purpose (timeouts, cancelled hedges): not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sim: SimServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every small response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- one request ---------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        sim, wire = self.sim, self.sim.wire
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        sim._record(Recorded(method, self.path, headers, body, "%s:%s" % self.client_address[:2]))
        route = wire.route(method, path)
        if route is None:
            return self._json(404, {"error": {"message": f"no route {method} {path}"}})
        op, path_model = route
        model, stream, question = wire.prompt(body or {})
        model = path_model or model or "sim-model"
        if op == "stream" or (op == "chat" and stream):
            op = "stream"
        # Scripted faults are for chat calls; health probes (list models) see only the default.
        fault = sim.default if op == "models" else sim.next_fault()
        if sim.api_key and not wire.authorised(headers, sim.api_key):
            fault = Fault.http(401)

        try:
            if fault.kind == "status":
                return self._reply(error_reply(fault, wire.dialect, model, headers))
            before_reply(fault, self)
            if op == "models":
                return self._json(200, wire.models(model))
            text = sim.responder(question, model)
            pieces = re.findall(r"\S+\s*", text) or [text]
            usage = (max(1, len(question.split())), len(pieces))
            finish = wire.stop
            if fault.kind == "refusal":
                finish = wire.refusal
                pieces = pieces[: fault.after]
            elif fault.kind == "length":
                finish = wire.length
            elif fault.kind == "finish":
                finish = fault.reason
                pieces = pieces[: fault.after] if fault.after else pieces
            if op == "chat":
                self.pause(sim.first_wait())
                return self._json(200, wire.full("".join(pieces), model, usage, finish))
            return self._stream(wire.frames(pieces, model, usage, finish), fault)
        except _Gone:
            self.close_connection = True
            return None

    def _stream(self, frames: Frames, fault: Fault) -> None:
        wire = self.sim.wire
        if fault.kind == "no_sentinel":
            frames = wire.without_sentinel(frames)
        self.send_response(200)
        self.send_header("Content-Type", wire.dialect.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            # A slow first token replaces the usual first delay rather than adding to it.
            paced = self._paced(frames, first_delay=fault.kind != "slow_first")
            for frame in disturb(paced, fault, wire.dialect, self):
                self._chunk(frame)
            self.pause(self.sim.end_delay)
            self._end()
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell anyone

    def _paced(self, frames: Frames, *, first_delay: bool = True) -> Iterator[bytes]:
        """The frames at the simulated model's pace: the first text after `first_delay`, then one
        every `chunk_delay`."""
        yield from frames.preamble
        if first_delay:
            self.pause(self.sim.first_wait())
        for i, frame in enumerate(frames.text):
            if i:
                self.pause(self.sim.chunk_delay)
            yield frame
        yield from frames.epilogue

    # -- the fault peer (core.faults.Peer) -------------------------------------------------------
    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        sim = self.sim
        with sim._resumed:
            seen = sim._resumes
            sim._resumed.wait_for(lambda: sim._resumes != seen, None if math.isinf(seconds) else seconds)
        if sim._stop.is_set():
            raise _Gone  # the server is closing

    def hang_up(self) -> NoReturn:
        self._die()
        raise _Gone

    def reset(self) -> NoReturn:
        self._reset()
        raise _Gone

    # -- wire helpers ---------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _die(self) -> None:
        """Close mid-body, without the chunked terminator: the client sees a broken stream."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _json(self, status: int, body: dict) -> None:
        self._reply(Reply(status, {"content-type": "application/json"}, json.dumps(body).encode()))

    def _reply(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True


class _Gone(Exception):
    """The connection is over (hung up, reset, or the server is closing): send nothing more."""


__all__ = ["Recorded", "SimServer", "echo_responder"]
