"""Fault injection under the SDKs: what the chaos panel drives.

Each provider's HTTP client gets a `ChaosTransport` wrapping the real one. While no fault is set it
passes requests straight through. With a fault set, it produces exactly what a real failure
produces on the wire — the provider's own error body and headers, a reset, silence until the
read timeout, a stream cut or stalled after N text chunks, a garbled frame — so the SDK, adapter,
breaker and router all see the real thing. Settings are thread-safe and apply from the next request.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import httpx2

from . import cancel
from .simulator.server import Fault
from .simulator.wire import STATUS_FLAVOUR, WIRES

# Faults the transport can apply (the in-band refusal needs a model's cooperation: the
# content-filter *status* stands in for it here).
TRANSPORT_FAULTS = ("status", "reset", "silence", "latency", "slow_first", "cut", "stall", "malformed",
                    "error_event", "no_end")
_STREAM_FAULTS = ("slow_first", "cut", "stall", "malformed", "error_event", "no_end")


@dataclass(frozen=True)
class Injection:
    """A fault on one provider, how often it strikes, and whether it flaps."""

    fault: Fault
    probability: float = 1.0  # share of requests hit, 0–1 (the panel's "error rate %")
    flap_down: float = 0.0  # flapping: failing for this many seconds …
    flap_up: float = 0.0  # … then healthy for this many, repeating
    since: float = 0.0  # when it was switched on (clock seconds), for the flapping phase

    def __post_init__(self) -> None:
        if self.fault.kind not in TRANSPORT_FAULTS:
            raise ValueError(f"{self.fault.kind!r} can't be injected; use one of {', '.join(TRANSPORT_FAULTS)}")
        if not 0 <= self.probability <= 1:
            raise ValueError("probability must be between 0 and 1")

    def down_now(self, now: float) -> bool:
        """Within a flapping cycle, is this the failing part?"""
        if self.flap_down > 0 and self.flap_up > 0:
            return (now - self.since) % (self.flap_down + self.flap_up) < self.flap_down
        return True

    def describe(self) -> str:
        f = self.fault
        what = {
            "status": f"HTTP {f.status} ({f.flavour})" + (f", Retry-After {f.retry_after:g}s" if f.retry_after else ""),
            "reset": "connection reset", "silence": "silence (never answers)",
            "latency": f"+{f.seconds:g}s latency", "slow_first": f"first token after {f.seconds:g}s",
            "cut": f"stream cut after {f.after} chunks", "stall": f"stream stalls {f.seconds:g}s after {f.after} chunks",
            "malformed": f"malformed chunk after {f.after} chunks",
            "error_event": f"error event after {f.after} chunks", "no_end": f"stream ends early after {f.after} chunks",
        }[f.kind]
        if self.probability < 1:
            what += f", {self.probability:.0%} of requests"
        if self.flap_down and self.flap_up:
            what += f", flapping {self.flap_down:g}s down / {self.flap_up:g}s up"
        return what


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the scenario starts
    target: int  # position in the chain (0 = primary); -1 = every provider
    injection: Injection | None  # None = healthy again


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    duration: float
    steps: tuple[Step, ...]


_503 = Injection(Fault.http(503))
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("primary_outage", "Primary outage", "The primary returns 503 for 60 s, then recovers.", 75.0,
             (Step(0, 0, _503), Step(60, 0, None))),
    Scenario("rolling_outage", "Rolling outage", "Each provider in turn is down for 20 s.", 80.0,
             (Step(0, 0, _503), Step(20, 0, None), Step(20, 1, _503), Step(40, 1, None), Step(40, 2, _503),
              Step(60, 2, None))),
    Scenario("cascade", "Cascade down to local", "Cloud providers fail one after another until only the last "
             "(local) one is left; all recover at 60 s.", 75.0,
             (Step(0, 0, _503), Step(10, 1, Injection(Fault.http(529))), Step(20, 2, Injection(Fault("reset"))),
              Step(60, 0, None), Step(60, 1, None), Step(60, 2, None))),
    Scenario("everything_down", "Everything down", "Every provider fails for 30 s: degraded tiers answer.", 40.0,
             (Step(0, -1, _503), Step(30, -1, None))),
    Scenario("slow_primary", "Slow primary", "The primary's first token takes 6 s for 60 s: hedging rescues it.",
             60.0, (Step(0, 0, Injection(Fault("slow_first", seconds=6))), Step(60, 0, None))),
    Scenario("flapping_primary", "Flapping primary", "The primary is down 5 s, up 5 s, for 60 s.", 60.0,
             (Step(0, 0, Injection(Fault.http(503), flap_down=5, flap_up=5)), Step(60, 0, None))),
)}


@dataclass
class _Playing:
    scenario: Scenario
    started: float
    names: list[str] = field(default_factory=list)


class Chaos:
    """Which faults are on, per provider entry. Thread-safe; read on every request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._manual: dict[str, Injection] = {}
        self._playing: _Playing | None = None

    # -- switching ---------------------------------------------------------------------------------
    def set(self, provider: str, fault: Fault, *, probability: float = 1.0, flap: tuple[float, float] | None = None) -> None:
        down, up = flap or (0.0, 0.0)
        injection = Injection(fault, probability, down, up, since=self._clock())
        with self._lock:
            self._manual[provider] = injection

    def clear(self, provider: str) -> None:
        with self._lock:
            self._manual.pop(provider, None)

    def play(self, name: str, chain: list[str]) -> None:
        """Start a scenario over this chain (names in priority order); replaces any playing one."""
        scenario = SCENARIOS[name]
        with self._lock:
            self._playing = _Playing(scenario, self._clock(), list(chain))

    def reset(self) -> None:
        """Everything off: manual faults and any scenario."""
        with self._lock:
            self._manual.clear()
            self._playing = None

    # -- reading -----------------------------------------------------------------------------------
    def injection(self, provider: str) -> Injection | None:
        """The fault in force for this provider now (manual settings win over a scenario)."""
        now = self._clock()
        with self._lock:
            if provider in self._manual:
                return self._manual[provider]
            playing = self._playing
            if playing is None:
                return None
            elapsed = now - playing.started
            if elapsed >= playing.scenario.duration:
                self._playing = None
                return None
        current = None
        for step in playing.scenario.steps:
            if step.at > elapsed:
                break
            hits = step.target == -1 or (step.target < len(playing.names) and playing.names[step.target] == provider)
            if hits:
                current = replace(step.injection, since=playing.started + step.at) if step.injection else None
        return current

    def strike(self, provider: str) -> Fault | None:
        """The fault to apply to one request now, after probability and flapping, or None."""
        injection = self.injection(provider)
        if injection is None or not injection.down_now(self._clock()):
            return None
        if injection.probability < 1 and self._rng.random() >= injection.probability:
            return None
        return injection.fault

    def state(self) -> dict[str, Any]:
        """What is on, for the UI: per-provider descriptions and the scenario clock."""
        with self._lock:
            manual = dict(self._manual)
            playing = self._playing
        out: dict[str, Any] = {"providers": {}, "scenario": None}
        names = set(manual) | set(playing.names if playing else ())
        for name in names:
            injection = self.injection(name)
            if injection is not None:
                out["providers"][name] = injection.describe()
        if playing is not None and self._playing is not None:
            out["scenario"] = {"name": playing.scenario.name, "title": playing.scenario.title,
                               "elapsed": round(self._clock() - playing.started, 1),
                               "duration": playing.scenario.duration}
        return out

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._manual) or self._playing is not None


# -- the transport ---------------------------------------------------------------------------------
_TEXT = re.compile(rb'"(text|content)"\s*:\s*"[^"]')


def _frames(chunks: Iterator[bytes], ndjson: bool) -> Iterator[bytes]:
    """Re-cut a byte stream into protocol frames (SSE events or NDJSON lines), separators kept."""
    buffer = b""
    separators = (b"\n",) if ndjson else (b"\r\n\r\n", b"\n\n")
    for chunk in chunks:
        buffer += chunk
        while True:
            cuts = [(buffer.find(s), s) for s in separators if buffer.find(s) != -1]
            if not cuts:
                break
            at, sep = min(cuts)
            yield buffer[: at + len(sep)]
            buffer = buffer[at + len(sep):]
    if buffer:
        yield buffer


def _transport_class(lib: Any) -> type:
    class FaultStream(lib.SyncByteStream):
        def __init__(self, inner: Any, fault: Fault, kind: str, read_timeout: float | None) -> None:
            self.inner, self.fault, self.kind, self.read_timeout = inner, fault, kind, read_timeout

        def __iter__(self) -> Iterator[bytes]:
            f, wire = self.fault, WIRES[self.kind]
            if f.kind == "slow_first":
                _wait(lib, f.seconds, self.read_timeout)
            texts = 0
            for frame in _frames(iter(self.inner), wire.stream_type == "application/x-ndjson"):
                is_text = bool(_TEXT.search(frame))
                if is_text and texts == f.after and f.kind in ("cut", "stall", "malformed", "error_event", "no_end"):
                    if f.kind == "cut":
                        raise lib.RemoteProtocolError(
                            "peer closed connection without sending complete message body (incomplete chunked read)")
                    if f.kind == "stall":
                        _wait(lib, f.seconds, self.read_timeout)
                    elif f.kind == "malformed":
                        yield wire.malformed()
                    elif f.kind == "error_event":
                        yield wire.stream_error("model")
                        return
                    else:
                        return
                texts += is_text
                yield frame

        def close(self) -> None:
            self.inner.close()

    class ChaosTransport(lib.BaseTransport):
        """Passes requests to the real transport, or fails them as the chaos settings say."""

        def __init__(self, provider: str, kind: str, chaos: Chaos) -> None:
            self.provider, self.kind, self.chaos = provider, kind, chaos
            self.inner = lib.HTTPTransport()

        def handle_request(self, request: Any) -> Any:
            fault = self.chaos.strike(self.provider)
            if fault is None:
                return self.inner.handle_request(request)
            read_timeout = (request.extensions.get("timeout") or {}).get("read")
            if fault.kind == "status":
                status = fault.status or 500
                flavour = fault.flavour or STATUS_FLAVOUR.get(status, "server")
                headers = {"content-type": "application/json", "x-request-id": "req_chaos"}
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                body = WIRES[self.kind].error(status, flavour, _model(request), fault.retry_after)
                return lib.Response(status, headers=headers, content=json.dumps(body).encode(), request=request)
            if fault.kind == "reset":
                raise lib.ReadError("[Errno 104] Connection reset by peer")
            if fault.kind == "silence":
                _wait(lib, float("inf"), read_timeout)
            if fault.kind == "latency":
                _wait(lib, fault.seconds, read_timeout)
            response = self.inner.handle_request(request)
            streaming = response.headers.get("content-type", "").split(";")[0] in (
                "text/event-stream", "application/x-ndjson")
            if fault.kind not in _STREAM_FAULTS or not streaming:
                return response
            return lib.Response(response.status_code, headers=response.headers, request=request,
                                stream=FaultStream(response.stream, fault, self.kind, read_timeout),
                                extensions=response.extensions)

        def close(self) -> None:
            self.inner.close()

    return ChaosTransport


def _wait(lib: Any, seconds: float, read_timeout: float | None) -> None:
    """Be silent for `seconds`, as a real peer would: past the read timeout the client gives up."""
    limit = min(seconds, read_timeout if read_timeout is not None else 600.0)
    scope = cancel.current()
    cancelled = scope.wait(limit) if scope is not None else threading.Event().wait(limit)
    if cancelled:
        raise lib.ReadError("cancelled")
    if seconds >= (read_timeout if read_timeout is not None else float("inf")):
        raise lib.ReadTimeout("timed out")


def _model(request: Any) -> str:
    try:
        return str(json.loads(request.content or b"{}").get("model", "model"))
    except (ValueError, AttributeError):
        return "model"


_CLASSES = {"httpx": _transport_class(httpx), "httpx2": _transport_class(httpx2)}


def transport_for(kind: str, provider: str, chaos: Chaos) -> Any:
    """The chaos transport for one provider entry, built on the HTTP library its SDK uses."""
    return _CLASSES["httpx" if kind == "ollama" else "httpx2"](provider, kind, chaos)
