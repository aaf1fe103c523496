"""Health of the chain: active probes (also in the background), each provider's status, and the
one overall verdict that `/healthz` and the Status page both show (`judge`).

A provider's health is read from its recent results (`Metrics.recent`): its calls and its probes
(list-models calls that cost no tokens) alike, the newest weighing most, so it follows probes when
there is no traffic, and a good minute outweighs the bad patch before it. An operator's breaker
reset forgets the results before it. Reading it calls no provider unless asked to probe.

  breaker open ............................................ down
  breaker half-open (its trial call in flight) ............ degraded
  the newest result failed: down if the one before it failed too (or nothing succeeded), else degraded
  under 80 % of recent results succeeded (weighted) ........ degraded
  otherwise ok; with no result in the window: unknown

A failed probe puts a provider on the outage schedule below, as an open breaker does, so an outage
with no traffic shows within seconds of the first failed probe, and so does its end.

While a provider's breaker is open, or its last probe failed, it is probed much more often than the background interval
(`[health] outage_probe_interval`, doubling after each failed probe up to `outage_probe_max`) (in
a fleet, one replica probes it: a lease per wait). A good probe lets the breaker's trial call
through at once, so traffic is back on the primary seconds after an outage ends instead of after
the whole cooldown.

One probe per provider is in flight at most, whoever asks (the background prober, the outage
prober, "Probe now", `python -m core status`): a caller who asks while one is in flight waits for
it and gets its result, rather than opening another connection to a provider that may be hanging.
No phase of a probe waits longer than `[health] probe_timeout`, nor does any caller much longer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import cancel
from .breaker import HALF_OPEN, OPEN, Breaker

OUTAGE_TICK = 0.1  # seconds (real time) between looks at which open breakers are due a probe
from .errors import ErrorKind, ProviderError
from .metrics import Metrics, ProbeEvent
from .providers.base import PROBE_TIMEOUT, Provider
from .redact import redact

if TYPE_CHECKING:
    from .router import Router
    from .store.fleet import ProbeLeases

log = logging.getLogger("understudy")


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    kind: str
    model: str
    endpoint: str
    key: str  # masked
    health: str  # "ok" | "degraded" | "down" | "no key" | "unknown"
    breaker: str  # "closed" | "open" | "half-open"
    retry_in_s: float = 0.0  # while open: seconds until a trial call is let through
    detail: str = ""
    probe_ms: float | None = None
    success_rate: float | None = None


HEALTHY = 0.8  # the weighted share of recent results that must succeed for "ok"
# A probe's phases (connect, send, the answer) may each take the probe timeout; a caller waits for
# them all, not longer: a provider that trickles its list of models never holds a page's thread.
PROBE_PHASES = 3


class _Flight:
    """One provider's probe in flight, and its result for every caller who waited for it."""

    __slots__ = ("done", "event", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.event: ProbeEvent | None = None
        self.error: BaseException | None = None


@dataclass(frozen=True)
class Verdict:
    """The whole chain in one word and one line, as `/healthz` and the Status page both say it."""

    status: str  # "ok" | "degraded" | "down"
    headline: str  # e.g. "All systems answering", "Degraded: Claude down, GPT answering", "Down"
    problems: tuple[str, ...] = ()  # what makes it degraded besides the providers
    providers: tuple[ProviderStatus, ...] = ()

    @property
    def http_status(self) -> int:
        return 503 if self.status == "down" else 200


def overall(rows: Sequence[ProviderStatus], followups: Mapping, problems: Sequence[str] = ()) -> Verdict:
    """Down when no provider can take traffic; degraded when some can't, one is sick, questions
    can't be kept (the follow-up store is failing) or there is another `problem`; else ok."""
    problems = list(problems)
    if followups.get("status") not in (None, "ok", "off"):
        problems.insert(0, "questions can't be kept")
    usable = [r for r in rows if r.breaker != OPEN and r.health not in ("no key", "down")]
    if not rows or not usable:
        return Verdict("down", "Down: no provider is answering", tuple(problems), tuple(rows))
    trouble = [r for r in rows if r not in usable or r.health == "degraded"]
    if not trouble and not problems:
        return Verdict("ok", "All systems answering", (), tuple(rows))
    said = {"no key": "has no key", "degraded": "struggling"}
    parts = [f"{r.name} {said.get(r.health, 'down')}" for r in trouble]
    answering = [r.name for r in usable if r.health != "degraded"]
    if answering:
        parts.append(f"{_names(answering)} answering")
    return Verdict("degraded", "Degraded: " + ", ".join(parts + problems), tuple(problems), tuple(rows))


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def judge(router: Router) -> Verdict:
    """The chain's verdict, from state only (no provider is called): each provider's status, and
    what else would let users down (kept questions, the fleet's shared state, saved history)."""
    rows = router.status(probe=False)
    problems = []
    if router.stores.health()["shared"]["status"] == "unavailable":
        problems.append("shared state unavailable")  # every replica answers on its own state meanwhile
    if "failing" in (router.history.health()["status"], router.answers.health()["status"]):
        problems.append("history temporarily not saved")  # waits in a bounded backlog and is retried
    return overall(rows, router.followups.health(), problems)


class Health:
    """Probes and status for a router's providers; thread-safe."""

    def __init__(self, providers: Sequence[Provider], breakers: Mapping[str, Breaker], metrics: Metrics, *,
                 interval: float, window: float, wall: Callable[[], float] = time.time,
                 leases: ProbeLeases | None = None, clock: Callable[[], float] = time.monotonic,
                 outage_interval: float = 0.0, outage_max: float = 4.0,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.providers = providers
        self.leases = leases  # a fleet's: one replica probes each provider per interval
        self.breakers = breakers
        self.metrics = metrics
        self.interval = interval
        self.window = window
        self.wall = wall
        self._last_probe: dict[str, ProbeEvent] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self.traffic: Callable[[], Metrics] | None = None  # whose traffic passive health reads; None: `metrics`
        self.rounds = 0  # background probe rounds run (in a fleet, a round may find every lease taken)
        self.clock = clock  # the breakers' clock: when an open breaker's next probe is due
        self.outage_interval, self.outage_max = outage_interval, outage_max
        self._outage: dict[str, tuple[float, float]] = {}  # open breaker -> (next probe due, its wait)
        self._probing: set[str] = set()  # providers with an outage probe in flight
        self.probe_timeout = probe_timeout  # seconds each phase of a probe may wait, whatever the entry's
        self._flights: dict[str, _Flight] = {}  # provider -> its probe in flight, whoever started it
        self._outage_thread: threading.Thread | None = None

    def probe(self, names: Sequence[str] | None = None, *, leased: bool = False) -> list[ProbeEvent]:
        """Cheap active checks (list-models calls, no tokens), in parallel. A success lets an open
        breaker try a real call at once; a failure alone never opens one (probes can be wrong).
        `leased` (the background prober): in a fleet, only the providers whose lease for this
        interval this replica took."""
        targets = [p for p in self.providers if names is None or p.name in names]
        if leased and self.leases is not None:
            targets = [p for p in targets if self.leases.take(p.name, self.interval)]
        flights = [self._flight(p) for p in targets]  # all in parallel
        return [self._result(p, f) for p, f in zip(targets, flights)]

    def _flight(self, p: Provider) -> _Flight:
        """The probe of `p` in flight, started now if there is none."""
        with self._lock:
            flight = self._flights.get(p.name)
            if flight is not None:
                return flight
            flight = self._flights[p.name] = _Flight()
        # A daemon thread, not a ThreadPoolExecutor: the interpreter joins an executor's workers at
        # exit, so a probe of a silent provider would hold a finished CLI open until its timeout.
        threading.Thread(target=self._fly, args=(p, flight), name=f"understudy-probe-{p.name}", daemon=True).start()
        return flight

    def _fly(self, p: Provider, flight: _Flight) -> None:
        try:
            flight.event = self._probe_one(p)
        except BaseException as e:  # noqa: BLE001 — re-raised in every waiting caller's thread
            flight.error = e
        finally:
            with self._lock:
                if self._flights.get(p.name) is flight:
                    del self._flights[p.name]
            flight.done.set()

    def _result(self, p: Provider, flight: _Flight) -> ProbeEvent:
        """The flight's result, once it lands; a failed probe (timeout, not recorded: the flight
        records its own) if that takes longer than a probe may."""
        wait = PROBE_PHASES * self.probe_timeout
        if not flight.done.wait(wait):
            return ProbeEvent(self.wall(), p.name, False, _ms(wait), ErrorKind.TIMEOUT.value)
        if flight.error is not None:
            raise flight.error
        assert flight.event is not None
        return flight.event

    def _probe_one(self, p: Provider) -> ProbeEvent:
        t0 = time.monotonic()
        # Each phase waits at most `probe_timeout`; the whole probe at most what its callers wait,
        # so a list of models that trickles in a byte at a time can't hold the flight (and every
        # later probe of the provider) for ever: its socket is shut then.
        scope = cancel.CancelScope()
        deadline = threading.Timer(PROBE_PHASES * self.probe_timeout, scope.cancel)
        deadline.daemon = True
        deadline.start()
        try:
            with cancel.scope(scope):
                p.probe(timeout=self.probe_timeout)
        except ProviderError as e:
            kind = ErrorKind.TIMEOUT if scope.cancelled else e.kind
            event = ProbeEvent(self.wall(), p.name, False, _ms(time.monotonic() - t0), kind.value)
        else:
            event = ProbeEvent(self.wall(), p.name, True, _ms(time.monotonic() - t0))
            self.breakers[p.name].probe_succeeded()
        finally:
            deadline.cancel()
            scope.release()
        with self._lock:
            self._last_probe[p.name] = event
        self.metrics.record(event)
        if self.leases is not None:
            self.leases.share(event)
        return event

    def start(self) -> None:
        """Probe every provider in the background every `interval` seconds, and open breakers'
        providers as `outage_interval` says; once, however many threads ask at the same time."""
        with self._lock:
            if self._stop.is_set():
                return
            if self.interval > 0 and self._prober is None:
                self._prober = threading.Thread(target=self._loop, name="understudy-prober", daemon=True)
                self._prober.start()
            if self.outage_interval > 0 and self._outage_thread is None:
                self._outage_thread = threading.Thread(target=self._outage_loop, name="understudy-outage-prober",
                                                       daemon=True)
                self._outage_thread.start()

    # -- probing open breakers ---------------------------------------------------------------------
    def next_outage_probe(self, name: str) -> float | None:
        """When (on `clock`) this provider's next outage probe is due; None while it is not in
        trouble (see `outage_round`), or its first one is not planned yet."""
        with self._lock:
            planned = self._outage.get(name)
        return planned[0] if planned else None

    def outage_round(self) -> list[str]:
        """Start a probe of each provider in trouble (its breaker open, or its last probe failed)
        whose probe is due and has none in flight; the providers probed. The outage prober calls
        this every OUTAGE_TICK."""
        now, started = self.clock(), []
        for p in self.providers:
            with self._lock:
                last = self._last_probe.get(p.name)
            if self.breakers[p.name].state != OPEN and (last is None or last.ok):
                with self._lock:
                    self._outage.pop(p.name, None)  # closed (or trying) and answering: the next outage starts afresh
                continue
            with self._lock:
                due, wait = self._outage.setdefault(p.name, (now + self.outage_interval, self.outage_interval))
                if now < due or p.name in self._probing:
                    continue
                self._probing.add(p.name)
            if self.leases is not None and not self.leases.take(f"{p.name}#outage", wait):
                self._planned(p.name, wait)  # another replica probes it this time
                continue
            threading.Thread(target=self._outage_probe, args=(p, wait), name=f"understudy-outage-{p.name}",
                             daemon=True).start()
            started.append(p.name)
        return started

    def _outage_probe(self, p: Provider, wait: float) -> None:
        ok = False
        try:
            ok = self._result(p, self._flight(p)).ok  # one already in flight (a "Probe now") counts
        except Exception:  # noqa: BLE001 — a probe bug must not stop the outage prober
            log.exception("outage probe failed")
        # Back: the trial call may go now, and there is no hurry to probe again. Still down: wait longer.
        self._planned(p.name, self.outage_max if ok else min(wait * 2, self.outage_max))

    def _planned(self, name: str, wait: float) -> None:
        with self._lock:
            self._probing.discard(name)
            self._outage[name] = (self.clock() + wait, wait)

    def _outage_loop(self) -> None:
        while not self._stop.wait(OUTAGE_TICK):
            try:
                self.outage_round()
            except Exception:  # noqa: BLE001 — a probe bug must not kill the prober
                log.exception("outage probe round failed")

    def _loop(self) -> None:
        while True:  # probe at once, then on the interval
            try:
                self.probe(leased=True)
            except Exception:  # noqa: BLE001 — a probe bug must not kill the prober
                log.exception("probe failed")
            self.rounds += 1
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()

    def status(self, *, probe: bool = True) -> list[ProviderStatus]:
        """Each entry's configuration, breaker and health (passive from traffic, active from probes)."""
        if probe:
            self.probe()
        traffic = self.traffic() if self.traffic else self.metrics
        with self._lock:
            probes = dict(self._last_probe)
        if self.leases is not None:  # another replica's probe may be the latest
            for name, event in self.leases.latest().items():
                if name not in probes or event.at > probes[name].at:
                    probes[name] = event
        rows = []
        for p in self.providers:
            e, b = p.entry, self.breakers[p.name]
            key = e.api_key.masked() if e.api_key else ("missing" if p.info.needs_key else "not needed")
            last = probes.get(p.name)
            recent = traffic.recent(p.name, self.window)
            state = b.state
            if p.info.needs_key and e.api_key is None:
                health, detail = "no key", f"set {e.api_key_env or ' or '.join(p.info.key_envs)}"
            elif state == OPEN:
                health, detail = "down", f"breaker open, trial call in {b.retry_in():.0f}s"
            elif state == HALF_OPEN:
                health, detail = "degraded", "breaker half-open: its trial call is in flight"
            elif recent is None:
                health, detail = "unknown", "no calls or probes yet"
            elif not recent.last_ok:
                probed = recent.last_probe is not None and recent.last_probe.at == recent.last_at
                down = recent.failing >= 2 or recent.success == 0
                health = "down" if down else "degraded"
                detail = f"{'probe' if probed else 'call'} failed: {recent.last_error or 'error'}"
                if recent.failing >= 2:
                    detail += f" (the last {recent.failing} results failed)"
            elif recent.success < HEALTHY:
                health, detail = "degraded", f"{recent.success:.0%} of recent calls and probes succeeded"
            else:
                health, detail = "ok", ""
            rows.append(ProviderStatus(p.name, p.kind, p.model, redact(e.endpoint), key, health, state,
                                       round(b.retry_in(), 1), detail, last.latency_ms if last else None,
                                       recent.success if recent else None))
        return rows


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
