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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NoReturn

import httpx
import httpx2

from . import cancel
from .faults import STREAM_FAULTS, TRANSPORT_FAULTS, Dialect, Fault, before_reply, disturb, error_reply
from .providers import kinds


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
        what = self.fault.describe()
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
    spared: set[str] = field(default_factory=set)  # healed by hand while it plays: left alone to its end


@dataclass(frozen=True)
class Active:
    """One provider's fault in force at one moment, and where it comes from."""

    injection: Injection
    source: str  # "manual" (set on the panel, wins) or "scenario"
    down: bool  # striking now: False only in the healthy half of a flapping cycle

    def describe(self) -> str:
        return self.injection.describe()


@dataclass(frozen=True)
class Upcoming:
    """A scenario step still to come: at `at` seconds, `target` fails as `what` (None: recovers)."""

    at: float
    target: str  # a provider's name, or "every provider"
    what: str | None


@dataclass(frozen=True)
class Progress:
    """A playing scenario, as of one moment."""

    name: str
    title: str
    elapsed: float
    duration: float
    upcoming: tuple[Upcoming, ...] = ()


@dataclass(frozen=True)
class Now:
    """Everything chaos does at one moment: what the panel, the banners and /healthz show. Read
    once (`Chaos.now()`), so a card, the scenario clock and a banner drawn from it never disagree."""

    providers: dict[str, Active]
    scenario: Progress | None

    @property
    def on(self) -> bool:
        return bool(self.providers) or self.scenario is not None

    @property
    def signature(self) -> tuple:
        """What changes the page's content (not the clock's seconds, nor a flapping phase): a page
        drawn from one `Now` is out of date once a later one has another signature."""
        return (tuple(sorted((n, a.source, a.describe()) for n, a in self.providers.items())),
                self.scenario.name if self.scenario else None)

    def as_state(self) -> dict[str, Any]:
        """JSON-ready (/healthz and the fleet's replicas read this shape)."""
        scenario = None
        if self.scenario is not None:
            scenario = {"name": self.scenario.name, "title": self.scenario.title,
                        "elapsed": self.scenario.elapsed, "duration": self.scenario.duration}
        return {"providers": {n: a.describe() for n, a in self.providers.items()}, "scenario": scenario}


class Chaos:
    """Which faults are on, per provider entry. Thread-safe; read on every request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._manual: dict[str, Injection] = {}
        self._playing: _Playing | None = None
        self._watchers: list[Callable[[dict], None]] = []

    # -- sharing (a fleet's replicas keep one chaos setting: core/store/fleet.py) --------------------
    def watch(self, hook: Callable[[dict], None]) -> None:
        """Call `hook(snapshot())` after every change made here (not after `restore`)."""
        self._watchers.append(hook)

    def snapshot(self, shift: float = 0.0) -> dict[str, Any]:
        """Everything switched on, JSON-ready; times are this chaos clock's plus `shift` (to carry
        them to another process's clock)."""
        with self._lock:
            return _snapshot(self._manual, self._playing, shift)

    def restore(self, snap: dict[str, Any], shift: float = 0.0) -> None:
        """Replace everything with a snapshot (times minus `shift`). Raises ValueError for one that
        isn't a chaos snapshot, changing nothing."""
        manual, playing = _restored(snap, shift)
        with self._lock:
            self._manual, self._playing = manual, playing

    def _changed(self) -> None:
        if self._watchers:
            snap = self.snapshot()
            for hook in list(self._watchers):
                hook(snap)

    # -- switching ---------------------------------------------------------------------------------
    def set(self, provider: str, fault: Fault, *, probability: float = 1.0, flap: tuple[float, float] | None = None) -> None:
        down, up = flap or (0.0, 0.0)
        injection = Injection(fault, probability, down, up, since=self._clock())
        with self._lock:
            self._manual[provider] = injection
        self._changed()

    def clear(self, provider: str) -> None:
        """This provider healthy again: its manual fault off, and a playing scenario leaves it alone
        until it ends."""
        with self._lock:
            self._manual.pop(provider, None)
            if self._playing is not None:
                self._playing.spared.add(provider)
        self._changed()

    def play(self, name: str, chain: list[str]) -> None:
        """Start a scenario over this chain (names in priority order); replaces any playing one."""
        scenario = SCENARIOS[name]
        with self._lock:
            self._playing = _Playing(scenario, self._clock(), list(chain))
        self._changed()

    def stop(self) -> None:
        """End the playing scenario now (manual faults stay)."""
        with self._lock:
            self._playing = None
        self._changed()

    def reset(self) -> None:
        """Everything off: manual faults and any scenario."""
        with self._lock:
            self._manual.clear()
            self._playing = None
        self._changed()

    # -- reading (never changes anything) ----------------------------------------------------------
    def injection(self, provider: str) -> Injection | None:
        """The fault in force for this provider now (manual settings win over a scenario)."""
        return self._read(provider)[1]

    def strike(self, provider: str) -> Fault | None:
        """The fault to apply to one request now, after probability and flapping, or None."""
        now, injection = self._read(provider)
        if injection is None or not injection.down_now(now):
            return None
        if injection.probability < 1 and self._rng.random() >= injection.probability:
            return None
        return injection.fault

    def now(self) -> Now:
        """What is on, as of one moment: each provider's fault and its source, and the scenario's
        clock. A scenario that has run its course is over here, whether or not anyone stopped it."""
        with self._lock:
            now = self._clock()
            manual, playing = dict(self._manual), self._playing_at(now)
            spared = set(playing.spared) if playing else set()
        providers: dict[str, Active] = {}
        for name in sorted(set(manual) | set(playing.names if playing else ())):
            if name in manual:
                providers[name] = Active(manual[name], "manual", manual[name].down_now(now))
            elif name not in spared and (injection := _scheduled(name, now, playing)) is not None:
                providers[name] = Active(injection, "scenario", injection.down_now(now))
        progress = None
        if playing is not None:
            elapsed = now - playing.started
            upcoming = tuple(
                Upcoming(step.at, "every provider" if step.target == -1 else playing.names[step.target],
                         step.injection.describe() if step.injection else None)
                for step in playing.scenario.steps
                if step.at > elapsed and (step.target == -1 or step.target < len(playing.names)))
            progress = Progress(playing.scenario.name, playing.scenario.title, round(elapsed, 1),
                                playing.scenario.duration, upcoming)
        return Now(providers, progress)

    def state(self) -> dict[str, Any]:
        """What is on, JSON-ready: per-provider descriptions and the scenario clock, as of one moment."""
        return self.now().as_state()

    def _read(self, provider: str) -> tuple[float, Injection | None]:
        with self._lock:
            now = self._clock()
            if (injection := self._manual.get(provider)) is not None:
                return now, injection
            playing = self._playing_at(now)
            if playing is not None and provider in playing.spared:
                return now, None
        return now, _scheduled(provider, now, playing)

    def _playing_at(self, now: float) -> _Playing | None:
        """The scenario playing at `now`, or None once it is over (it stays in place: reading changes
        nothing). Call with the lock held."""
        playing = self._playing
        if playing is None or now - playing.started >= playing.scenario.duration:
            return None
        return playing


def _snapshot(manual: dict[str, Injection], playing: _Playing | None, shift: float) -> dict[str, Any]:
    def row(i: Injection) -> dict[str, Any]:
        return {"fault": asdict(i.fault), "probability": i.probability, "flap_down": i.flap_down,
                "flap_up": i.flap_up, "since": i.since + shift}

    return {"manual": {name: row(i) for name, i in manual.items()},
            "playing": None if playing is None else {"scenario": playing.scenario.name,
                                                     "started": playing.started + shift, "names": playing.names,
                                                     "spared": sorted(playing.spared)}}


def _restored(snap: Any, shift: float) -> tuple[dict[str, Injection], _Playing | None]:
    try:
        manual = {str(name): Injection(Fault(**row["fault"]), float(row["probability"]), float(row["flap_down"]),
                                       float(row["flap_up"]), float(row["since"]) - shift)
                  for name, row in snap["manual"].items()}
        p = snap["playing"]
        playing = None if p is None else _Playing(SCENARIOS[p["scenario"]], float(p["started"]) - shift,
                                                  [str(n) for n in p["names"]],
                                                  {str(n) for n in p.get("spared", ())})  # older replicas: none
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"not a chaos snapshot ({type(e).__name__}: {e})") from None
    return manual, playing


def _scheduled(provider: str, now: float, playing: _Playing | None) -> Injection | None:
    """The injection a scenario's timeline has on this provider at `now`."""
    if playing is None:
        return None
    current = None
    for step in playing.scenario.steps:
        if step.at > now - playing.started:
            break
        if step.target == -1 or (step.target < len(playing.names) and playing.names[step.target] == provider):
            current = replace(step.injection, since=playing.started + step.at) if step.injection else None
    return current


# -- the transport ---------------------------------------------------------------------------------
def _transport_class(lib: Any) -> type:
    class Peer:
        """Plays a fault's waits and hang-ups as this HTTP library's client would meet them."""

        def __init__(self, read_timeout: float | None) -> None:
            self.read_timeout = read_timeout
            self.replied = False

        def pause(self, seconds: float) -> None:
            _wait(lib, seconds, self.read_timeout)

        def hang_up(self) -> NoReturn:
            if self.replied:
                raise lib.RemoteProtocolError(
                    "peer closed connection without sending complete message body (incomplete chunked read)")
            raise lib.RemoteProtocolError("Server disconnected without sending a response.")

        def reset(self) -> NoReturn:
            raise lib.ReadError("[Errno 104] Connection reset by peer")

    class FaultStream(lib.SyncByteStream):
        def __init__(self, inner: Any, fault: Fault, dialect: Dialect, peer: Peer) -> None:
            self.inner, self.fault, self.dialect, self.peer = inner, fault, dialect, peer

        def __iter__(self) -> Iterator[bytes]:
            return disturb(self.dialect.split(self.inner), self.fault, self.dialect, self.peer)

        def close(self) -> None:
            self.inner.close()

    class ChaosTransport(lib.BaseTransport):
        """Passes requests to the real transport, or fails them as the chaos settings say."""

        def __init__(self, provider: str, dialect: Dialect, chaos: Chaos) -> None:
            self.provider, self.dialect, self.chaos = provider, dialect, chaos
            self.inner = cancel.scoped_transport(lib)  # a cancel shuts the socket, even before a response

        def handle_request(self, request: Any) -> Any:
            fault = self.chaos.strike(self.provider)
            if fault is None:
                return self.inner.handle_request(request)  # no fault: the real response, untouched
            if fault.kind == "status":
                reply = error_reply(fault, self.dialect, _model(request), dict(request.headers))
                return lib.Response(reply.status, headers=reply.headers, content=reply.body, request=request)
            peer = Peer((request.extensions.get("timeout") or {}).get("read"))
            before_reply(fault, peer)
            response = self.inner.handle_request(request)
            streaming = response.headers.get("content-type", "").split(";")[0] == self.dialect.content_type
            if fault.kind not in STREAM_FAULTS or not streaming:
                return response
            peer.replied = True
            return lib.Response(response.status_code, headers=response.headers, request=request,
                                stream=FaultStream(response.stream, fault, self.dialect, peer),
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
    """The chaos transport for one provider entry, on the HTTP library its SDK uses."""
    record = kinds()[kind]
    return _CLASSES[record.http](provider, record.dialect, chaos)
