"""Simulated provider servers on 127.0.0.1: real HTTP, real SSE / NDJSON, scriptable faults.

Tests drive the real SDKs against them; demo mode runs the app on them. Each server speaks
one provider's protocol (see `wire.py`) and answers each request according to the next
scripted `Fault`, or its default when the script is empty.
"""

from __future__ import annotations

import collections
import json
import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .wire import FLAVOUR_STATUS, STATUS_FLAVOUR, STOP, WIRES, Frames

# What a simulated server can do with one request; every fault in the failure catalogue.
FAULT_KINDS = (
    "ok",           # a normal answer
    "status",       # an HTTP error in the provider's own shape (status, flavour, retry_after)
    "reset",        # TCP reset before any byte
    "silence",      # accept, read the request, never answer (for `seconds`)
    "latency",      # wait `seconds` before answering normally
    "slow_first",   # headers and preamble at once, first text after `seconds`
    "cut",          # `after` text chunks, then the connection dies mid-body
    "stall",        # `after` text chunks, then silence for `seconds`, then the rest
    "malformed",    # one garbled frame after `after` text chunks, then the rest
    "error_event",  # `after` text chunks, then the protocol's in-stream error
    "no_end",       # `after` text chunks, then a clean close without the end marker
    "no_sentinel",  # the whole answer without the optional end sentinel (S11)
    "refusal",      # `after` text chunks, then a content-policy stop (blocked prompt when 0)
    "length",       # the whole answer, ending because max_tokens was reached
    "finish",       # the answer (its first `after` text chunks when `after` > 0), then the protocol's
                    # end marker with the finish reason `reason`, verbatim (e.g. "OTHER", "pause_turn")
)


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


@dataclass(frozen=True)
class Fault:
    kind: str = "ok"
    status: int | None = None
    flavour: str | None = None
    retry_after: float | None = None
    after: int = 0
    seconds: float = 0.0
    retry_after_header: bool = True  # False: only where the protocol has a body field (Gemini's RetryInfo)
    reason: str = ""  # the finish reason a "finish" fault ends with
    echo_headers: bool = False  # the error message quotes the request's credential headers, as some proxies do

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if (self.kind == "finish") != bool(self.reason):
            raise ValueError('a "finish" fault needs a reason, and only it takes one')

    @classmethod
    def finish(cls, reason: str, after: int = 0) -> Fault:
        """End the answer (after `after` text chunks, if given) with this protocol finish reason."""
        return cls("finish", reason=reason, after=after)

    @classmethod
    def http(cls, status: int = 0, flavour: str | None = None, retry_after: float | None = None,
             retry_after_header: bool = True, echo_headers: bool = False) -> Fault:
        """An HTTP error. Give a status, a flavour (e.g. "context_length") or both."""
        status = status or FLAVOUR_STATUS[flavour or "server"]
        return cls("status", status=status, flavour=flavour or STATUS_FLAVOUR.get(status, "server"),
                   retry_after=retry_after, retry_after_header=retry_after_header, echo_headers=echo_headers)


@dataclass(frozen=True)
class Recorded:
    """A request the server received, for tests to check what the SDK sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


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
    ) -> None:
        self.wire = WIRES[kind]
        self.kind = kind
        self.responder = responder
        self.chunk_delay = chunk_delay
        self.first_delay = first_delay
        self.api_key = api_key
        self.default = Fault()
        self._script: collections.deque[Fault] = collections.deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        # Bounded: a long-running demo must not grow without end.
        self._requests: collections.deque[Recorded] = collections.deque(maxlen=keep)
        self._stop = threading.Event()
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
        sim._record(Recorded(method, self.path, headers, body))
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

        if fault.kind == "reset":
            return self._reset()
        if fault.kind == "silence":
            sim._stop.wait(fault.seconds or 60)
            self.close_connection = True
            return None
        if fault.kind == "latency" and sim._stop.wait(fault.seconds):
            return None
        if fault.kind == "status":
            return self._error(fault, model, headers)
        if op == "models":
            return self._json(200, wire.models(model))

        text = sim.responder(question, model)
        pieces = re.findall(r"\S+\s*", text) or [text]
        usage = (max(1, len(question.split())), len(pieces))
        finish = STOP[sim.kind]
        if fault.kind == "refusal":
            finish = wire.refusal_finish()
            pieces = pieces[: fault.after]
        elif fault.kind == "length":
            finish = {"anthropic": "max_tokens", "openai": "length", "gemini": "MAX_TOKENS",
                      "ollama": "length"}[sim.kind]
        elif fault.kind == "finish":
            finish = fault.reason
            pieces = pieces[: fault.after] if fault.after else pieces
        if op == "chat":
            if sim._stop.wait(sim.first_wait()):
                return None
            return self._json(200, wire.full("".join(pieces), model, usage, finish))
        self._stream(wire.frames(pieces, model, usage, finish), fault, model)
        return None

    def _stream(self, frames: Frames, fault: Fault, model: str) -> None:
        sim, wire = self.sim, self.sim.wire
        if fault.kind == "no_sentinel":
            frames = wire.without_sentinel(frames)
        self.send_response(200)
        self.send_header("Content-Type", wire.stream_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for frame in frames.preamble:
                self._chunk(frame)
            delay = fault.seconds if fault.kind == "slow_first" else sim.first_wait()
            if delay and sim._stop.wait(delay):
                return
            cut_at = fault.after if fault.kind in ("cut", "stall", "malformed", "error_event", "no_end") else None
            for i, frame in enumerate(frames.text):
                if i == cut_at:
                    if fault.kind == "cut":
                        return self._die()
                    if fault.kind == "stall":
                        if sim._stop.wait(fault.seconds or 60):
                            return None
                    elif fault.kind == "malformed":
                        self._chunk(wire.malformed())
                    elif fault.kind == "error_event":
                        self._chunk(wire.stream_error(model))
                        return self._end()
                    elif fault.kind == "no_end":
                        return self._end()
                if i and sim.chunk_delay and sim._stop.wait(sim.chunk_delay):
                    return None
                self._chunk(frame)
            if cut_at is not None and cut_at >= len(frames.text):
                if fault.kind == "cut":
                    return self._die()
                if fault.kind in ("error_event", "no_end"):
                    if fault.kind == "error_event":
                        self._chunk(wire.stream_error(model))
                    return self._end()
            for frame in frames.epilogue:
                self._chunk(frame)
            self._end()
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell anyone

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

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _error(self, fault: Fault, model: str, request_headers: dict[str, str]) -> None:
        status = fault.status or 500
        flavour = fault.flavour or STATUS_FLAVOUR.get(status, "server")
        headers = {"x-request-id": "req_sim", "request-id": "req_sim"}
        if fault.retry_after is not None and fault.retry_after_header:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        body = self.sim.wire.error(status, flavour, model, fault.retry_after)
        if fault.echo_headers:
            quoted = {k: v for k, v in request_headers.items() if k in _CREDENTIAL_HEADERS}
            body = self.sim.wire.with_note(body, f" (request headers: {quoted!r})")
        self._json(status, body, headers)


__all__ = ["FAULT_KINDS", "Fault", "Recorded", "SimServer", "echo_responder"]
