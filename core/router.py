"""The router: runs a request down the priority chain and always ends with a `Result`.

`stream()` yields `Delta` text as it arrives, `Restart` when a provider failed after its text was
shown (the caller replaces that text with what follows), and one final `Done`. It never raises.

What happens to a request, in order:
1. A fresh cached answer is served before any provider is called; identical requests in flight
   together are computed once.
2. Providers are tried in priority order, each attempt in its own thread so the router can keep
   the time: a first-token deadline and an idle deadline per provider, one overall deadline for
   the chain (retries never multiply waits). An open breaker skips its provider.
3. Transient errors are retried with full-jitter backoff, honouring a short Retry-After; a long
   one fails over at once and keeps the provider out for that long. Silent and stalled providers,
   request errors and context-length errors are never resent to the same provider.
4. If the first token is late (past the provider's observed p95), the next provider is started in
   parallel; the first to produce text wins and the other is cancelled, its connection closed.
5. A stream that breaks, stalls or errors after text was shown moves to the next provider, which
   answers from scratch (`Restart`): no assistant prefill, no duplicated text.
6. When no provider can answer: a stale cached answer, then an offline FAQ answer, then an honest
   reply that keeps the question. A content-policy decline is reported, never routed around.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from . import cancel
from .breaker import OPEN, Breaker, Permit
from .cache import AnswerCache, Flight, cache_key
from .chat import ChatRequest, StreamEnd, TextDelta, Usage
from .chaos import Chaos, transport_for
from .config import Config, ConfigError
from .errors import ErrorKind, ProviderError
from .metrics import AttemptEvent, Metrics, ProbeEvent, RequestEvent
from .offline import Faq, FollowUps
from .providers import Provider, build
from .redact import redact
from .store import database_url

log = logging.getLogger("understudy")

TIERS = ("provider", "cache", "stale_cache", "offline", "declined", "unavailable")


@dataclass(frozen=True)
class Attempt:
    """One try at one provider, as shown in the failover timeline."""

    provider: str
    model: str
    outcome: str  # "ok" | "error" | "declined" | "cancelled" | "skipped"
    error_kind: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    detail: str = ""  # a short reason for people; never message content or keys
    hedge: bool = False  # started in parallel because the one before it was slow


@dataclass(frozen=True)
class Result:
    text: str
    complete: bool
    tier: str
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    attempts: tuple[Attempt, ...] = ()
    elapsed_ms: float = 0.0
    finish_reason: str | None = None
    notice: str = ""  # why the answer is not a normal one (declined, stale, offline, unavailable, cut)
    ttft_ms: float | None = None  # time to the first text the caller kept

    def as_dict(self) -> dict:
        d = asdict(self)
        d["usage"] = self.usage.as_dict() if self.usage else None
        d["attempts"] = [asdict(a) for a in self.attempts]
        return d


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Restart:
    """`failed` broke off after its text was shown: discard that text. `provider` answers from
    scratch ("" when nobody will and a degraded answer follows)."""

    failed: str
    provider: str
    reason: str


@dataclass(frozen=True)
class Done:
    result: Result


Event = Delta | Restart | Done


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


def unavailable_text(question: str, *, kept: bool = True) -> str:
    q = question.strip()
    if not kept:  # nothing else holds it: quote it whole, so nothing typed is lost
        quoted = "\n".join(f"> {line}" for line in q.splitlines() or [""])
        return ("Sorry — we can't answer right now: all of our AI providers are unavailable, and we could not "
                "save your question for follow-up either. Please send it again in a moment; here it is, so "
                f"nothing you typed is lost:\n\n{quoted}")
    shown = q if len(q) <= 300 else q[:300] + "…"
    return ("Sorry — we can't answer right now: all of our AI providers are unavailable. We've kept your "
            f"question and will get back to you; you can also send it again in a moment.\n\n> {shown}")


def declined_text(provider: str, why: str) -> str:
    return (f"This request was declined by {provider}'s content policy ({why}). It was not sent to "
            "other providers. Try rephrasing the question.")


class Router:
    """One per process: shared by every session, safe to use from many threads at once."""

    def __init__(
        self,
        config: Config,
        *,
        providers: Sequence[Provider] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        chaos: Chaos | None = None,
        rng: random.Random | None = None,
    ) -> None:
        policy = config.policy
        self.config = config
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.chaos = chaos or Chaos(clock)
        if providers is None:
            providers = [build(e, transport=transport_for(e.kind, e.name, self.chaos)) for e in config.providers]
        self.providers = list(providers)
        self.metrics = Metrics(max_events=policy.metrics.max_events, wall=wall)
        b = policy.breaker
        self.breakers = {
            p.name: Breaker(p.name, fail_max=b.fail_max, reset_timeout=b.reset_timeout,
                            max_cooldown=b.max_cooldown, clock=clock, on_transition=self.metrics.transition)
            for p in self.providers
        }
        c = policy.cache
        self.cache = AnswerCache(ttl=c.ttl, max_entries=c.max_entries, stale_ttl=c.stale_ttl, clock=clock,
                                 enabled=c.enabled)
        o = policy.offline
        try:
            self.faq = Faq.load(o.faq_file or None, o.min_similarity) if o.enabled else None
        except ValueError as e:
            raise ConfigError(config.source, "offline.faq_file", str(e), "fix the FAQ file or point to another") from None
        self.followups = FollowUps(database_url(asdict(policy.store)), file=o.followup_file or None, wall=wall)
        self._last_probe: dict[str, ProbeEvent] = {}
        self._probe_lock = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    # -- answering ------------------------------------------------------------------------------
    def ask(self, request: ChatRequest, *, fresh: bool = False) -> Result:
        for event in self.stream(request, fresh=fresh):
            if isinstance(event, Done):
                return event.result
        raise AssertionError("stream() always ends with Done")  # pragma: no cover

    def stream(self, request: ChatRequest, *, fresh: bool = False) -> Iterator[Event]:
        """`fresh=True` skips the cached answer (a "regenerate"); the new answer still updates it."""
        run = _Run(self, request, fresh=fresh)
        try:
            yield from run.events()
        finally:
            run.close()  # also when the caller stops early (the UI's stop button)

    # -- operations -----------------------------------------------------------------------------
    def reset_breakers(self) -> None:
        for b in self.breakers.values():
            b.reset()

    def clear_cache(self) -> None:
        self.cache.clear()

    def probe(self, names: Sequence[str] | None = None) -> list[ProbeEvent]:
        """Cheap active checks (list-models calls, no tokens), in parallel. A success lets an open
        breaker try a real call at once; a failure alone never opens one (probes can be wrong)."""
        targets = [p for p in self.providers if names is None or p.name in names]

        def one(p: Provider) -> ProbeEvent:
            t0 = time.monotonic()
            try:
                p.probe()
            except ProviderError as e:
                event = ProbeEvent(self.wall(), p.name, False, _ms(time.monotonic() - t0), e.kind.value)
            else:
                event = ProbeEvent(self.wall(), p.name, True, _ms(time.monotonic() - t0))
                self.breakers[p.name].probe_succeeded()
            with self._probe_lock:
                self._last_probe[p.name] = event
            self.metrics.record(event)
            return event

        if not targets:
            return []
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            return list(pool.map(one, targets))

    def start_probing(self) -> None:
        """Probe every provider in the background every `[health] probe_interval` seconds."""
        interval = self.config.policy.health.probe_interval
        if interval <= 0 or self._prober is not None:
            return

        def loop() -> None:
            while True:  # probe at once, then on the interval
                try:
                    self.probe()
                except Exception:  # noqa: BLE001 — a probe bug must not kill the prober
                    log.exception("probe failed")
                if self._stop.wait(interval):
                    return

        self._prober = threading.Thread(target=loop, name="understudy-prober", daemon=True)
        self._prober.start()

    def status(self, *, probe: bool = True) -> list[ProviderStatus]:
        """Each entry's configuration, breaker and health (passive from traffic, active from probes)."""
        if probe:
            self.probe()
        summary = self.metrics.summary(self.config.policy.metrics.window)["providers"]
        with self._probe_lock:
            probes = dict(self._last_probe)
        rows = []
        for p in self.providers:
            e, b = p.entry, self.breakers[p.name]
            key = e.api_key.masked() if e.api_key else ("missing" if p.info.needs_key else "not needed")
            last = probes.get(p.name)
            rate = summary.get(p.name, {}).get("success_rate")
            if p.info.needs_key and e.api_key is None:
                health, detail = "no key", f"set {e.api_key_env or ' or '.join(p.info.key_envs)}"
            elif b.state == OPEN:
                health, detail = "down", f"breaker open, trial call in {b.retry_in():.0f}s"
            elif last is not None and not last.ok:
                health, detail = "down" if rate is None else "degraded", f"probe failed: {last.error_kind}"
            elif rate is not None and rate < 0.8:
                health, detail = "degraded", f"{rate:.0%} of recent calls succeeded"
            elif last is not None or rate is not None:
                health, detail = "ok", ""
            else:
                health, detail = "unknown", "no traffic or probe yet"
            rows.append(ProviderStatus(p.name, p.kind, p.model, redact(e.endpoint), key, health, b.state,
                                       round(b.retry_in(), 1), detail, last.latency_ms if last else None, rate))
        return rows

    def close(self) -> None:
        self._stop.set()
        for p in self.providers:
            p.close()
        self.followups.close()


@dataclass
class _Live:
    """One attempt in flight."""

    id: int
    provider: Provider
    hedge: bool
    start: float
    permit: Permit  # the breaker's leave for this call; its outcome is reported with it
    scope: cancel.CancelScope = field(default_factory=cancel.CancelScope)
    first_at: float | None = None
    last_at: float = 0.0
    pieces: list[str] = field(default_factory=list)
    hedged: bool = False  # a hedge was started against it already
    stream: Iterator | None = None  # the provider's stream, once its thread has handed it over
    handed_over: bool = False

    @property
    def name(self) -> str:
        return self.provider.name


_HANDOFF = object()  # "the stream is yours now": the attempt thread stops, the router thread reads on


def _work(live: _Live, request: ChatRequest, out: queue.SimpleQueue) -> None:
    """An attempt's thread: pull the provider's stream and hand each item to the router, until
    the first text. Then it hands the stream itself over: once a leader is answering, the router's
    thread reads it directly, so the per-chunk path has no thread hop at all (the idle deadline is
    then the SDK's read timeout)."""
    with cancel.scope(live.scope):
        try:
            live.stream = stream = live.provider.stream(request)
            for item in stream:
                if live.scope.cancelled:
                    stream.close()  # closes the SDK stream and its connection
                    return
                out.put((live.id, item))
                if isinstance(item, TextDelta):
                    out.put((live.id, _HANDOFF))
                    return
        except ProviderError as e:
            out.put((live.id, e))
        except Exception as e:  # noqa: BLE001 — an adapter bug still ends the attempt cleanly
            log.exception("adapter %s raised outside the taxonomy", live.name)
            out.put((live.id, ProviderError(ErrorKind.SERVER, f"internal error ({type(e).__name__})",
                                            provider=live.name)))


class _Run:
    """The state of one request while it is being answered (used by one thread only)."""

    def __init__(self, router: Router, request: ChatRequest, *, fresh: bool = False) -> None:
        self.fresh = fresh
        self.r = router
        self.request = request
        policy = router.config.policy
        self.retries = policy.retries
        self.hedging = policy.hedging
        self.clock = router.clock
        self.start = self.clock()
        self.deadline = self.start + policy.timeouts.request
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.ids = itertools.count()
        self.active: dict[int, _Live] = {}
        self._handed: dict[int, _Live] = {}  # cancelled attempts whose hand-over may still arrive
        self.leader: _Live | None = None
        self.next_index = 0
        self.tries: Counter = Counter()
        self.retry_at: list[tuple[float, Provider]] = []
        self.attempts: list[Attempt] = []
        self.out: list[Event] = []
        self.shown_from: str | None = None  # whose partial text the caller holds right now
        self.pending_restart: tuple[str, str] | None = None
        self.hedges = 0
        self.hedge_won = False
        self.restarted = False
        self.waited_for_trial = False
        self.result: Result | None = None
        self.key = cache_key(request) if router.cache.enabled else None
        self.flight: Flight | None = None

    # -- the event loop -------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        try:
            yield from self._answer()
        except Exception:  # noqa: BLE001 — the router never raises to its caller
            log.exception("router failure")
            self.out.clear()
            if self.result is None:
                self._degrade("internal error")
            yield from self._flush()
        assert self.result is not None
        self.r.metrics.record(RequestEvent(
            self.r.wall(), self.result.tier, self.result.provider, self.result.elapsed_ms, self.result.ttft_ms,
            self.result.complete, len([a for a in self.result.attempts if a.outcome != "skipped"]),
            max(0, len({a.provider for a in self.result.attempts if a.outcome != "skipped"}) - 1),
            self.hedges, self.hedge_won, self.restarted))
        self._land()  # followers get the result now, not when our caller gets round to closing us
        yield Done(self.result)

    def _answer(self) -> Iterator[Event]:
        if self.key is not None and not self.fresh:
            hit = self.r.cache.get(self.key)
            if hit is not None and hit[1]:
                self._finish(tier="cache", text=hit[0].text, provider=hit[0].provider, model=hit[0].model,
                             complete=True, finish_reason="stop", notice="Served from the answer cache.", ttft=0.0)
                yield Delta(hit[0].text)
                return
            flight, leader = self.r.cache.join(self.key)
            if not leader:
                yield from self._follow(flight)
                if self.result is not None:
                    return
                # The identical request was stopped before it finished: answer this one ourselves.
            else:
                self.flight = flight
                flight.alive(self.deadline)
        self._failover()
        while self.result is None:
            now = self.clock()
            items = []
            try:
                items.append(self.q.get(timeout=max(0.0, self._next_wake(now) - now)))
                while True:
                    items.append(self.q.get_nowait())
            except queue.Empty:
                pass
            for live_id, item in items:
                if item is _HANDOFF:
                    live = self.active.get(live_id)
                    if live is None:  # cancelled meanwhile: its thread has stopped, so close it here
                        live = self._handed[live_id]
                        live.stream.close()
                        continue
                    live.handed_over = True
                    yield from self._read(live)
                else:
                    self._handle(live_id, item)
                yield from self._flush()
                if self.result is not None:
                    return
            self._timers(self.clock())
            yield from self._flush()

    def _follow(self, flight: Flight) -> Iterator[Event]:
        """An identical request is being answered right now: wait for it rather than ask again, as
        long as it is alive (until our deadline, and beyond while its answer is still streaming)."""
        shared = flight.wait(self.deadline - self.clock())
        if shared is None:
            # It was stopped, or went quiet: no provider was asked for this request yet, so it asks
            # on its own, with the whole deadline for its chain.
            self.deadline = self.clock() + self.r.config.policy.timeouts.request
            return
        if shared.tier == "provider" and shared.complete:
            self._finish(tier="cache", text=shared.text, provider=shared.provider, model=shared.model, complete=True,
                         finish_reason="stop", notice="Shared with an identical request answered at the same time.",
                         ttft=_ms(self.clock() - self.start))
        else:
            self.result = replace(shared, attempts=(), elapsed_ms=_ms(self.clock() - self.start))
        if self.result.text:
            yield Delta(self.result.text)

    def _read(self, live: _Live) -> Iterator[Event]:
        """Read the leader's stream in this thread, item by item, under its cancel scope."""
        stream = live.stream
        while live.id in self.active and self.result is None:
            previous = cancel.enter(live.scope)
            try:
                item = next(stream)
            except StopIteration:  # pragma: no cover — stream() ends with StreamEnd or raises
                item = ProviderError(ErrorKind.STREAM_BROKEN, "the stream ended early", provider=live.name)
            except ProviderError as e:
                item = e
            except Exception as e:  # noqa: BLE001 — an adapter bug still ends the attempt cleanly
                log.exception("adapter %s raised outside the taxonomy", live.name)
                item = ProviderError(ErrorKind.SERVER, f"internal error ({type(e).__name__})", provider=live.name)
            finally:
                cancel.leave(previous)
            self._handle(live.id, item)
            yield from self._flush()

    def _flush(self) -> Iterator[Event]:
        out, self.out = self.out, []
        yield from out

    def close(self) -> None:
        for live in list(self.active.values()):
            self._cancel(live, "request ended")
        self._land()

    def _land(self) -> None:
        if self.flight is not None:
            flight, self.flight = self.flight, None
            self.r.cache.land(self.key, flight, self.result)

    # -- timing ----------------------------------------------------------------------------------
    def _ttft_limit(self, live: _Live) -> float:
        return live.provider.entry.first_token_timeout

    def _hedge_delay(self, live: _Live) -> float:
        h = self.hedging
        p = self.r.metrics.ttft_quantile(live.name, h.quantile, h.min_samples)
        delay = h.default_delay if p is None else p / 1000
        return min(h.cap, max(h.floor, delay))

    def _can_hedge(self, live: _Live) -> bool:
        return (self.hedging.enabled and self.leader is None and len(self.active) == 1 and not live.hedged
                and live.first_at is None and self.next_index < len(self.r.providers))

    def _next_wake(self, now: float) -> float:
        wake = self.deadline if self.leader is None else now + 3600
        for live in self.active.values():
            if live.first_at is None:
                wake = min(wake, live.start + self._ttft_limit(live))
                if self._can_hedge(live):
                    wake = min(wake, live.start + self._hedge_delay(live))
            elif live is self.leader:
                wake = min(wake, live.last_at + live.provider.entry.idle_timeout)
        for at, _ in self.retry_at:
            wake = min(wake, at)
        return wake

    def _timers(self, now: float) -> None:
        if self.result is not None:
            return
        if self.leader is None and now >= self.deadline:
            for live in list(self.active.values()):
                self._cancel(live, "request deadline", record=False)
                self._failed(live, ProviderError(ErrorKind.TIMEOUT, "the request deadline passed before its first token",
                                                 provider=live.name), now)
            self.retry_at.clear()
            if self.result is None:
                self._degrade("request deadline reached")
            return
        for live in list(self.active.values()):
            if live.first_at is None and now >= live.start + self._ttft_limit(live):
                self._cancel(live, "", record=False)
                self._failed(live, ProviderError(
                    ErrorKind.TIMEOUT, f"no first token within {self._ttft_limit(live):g}s", provider=live.name), now)
            elif live is self.leader and now >= live.last_at + live.provider.entry.idle_timeout:
                self._cancel(live, "", record=False)
                self._failed(live, ProviderError(
                    ErrorKind.STREAM_BROKEN, f"the stream stalled for {live.provider.entry.idle_timeout:g}s",
                    provider=live.name), now)
            if self.result is not None:
                return
        if len(self.active) == 1:
            (live,) = self.active.values()
            if self._can_hedge(live) and now >= live.start + self._hedge_delay(live):
                live.hedged = True
                if self._launch_next(hedge=True):
                    self.hedges += 1
        due = [item for item in self.retry_at if item[0] <= now]
        for item in due:
            self.retry_at.remove(item)
            provider = item[1]
            if permit := self.r.breakers[provider.name].allow():
                self._launch(provider, permit, hedge=False)
            else:
                self._failover()

    # -- what happens to items -----------------------------------------------------------------------
    def _handle(self, live_id: int, item) -> None:
        live = self.active.get(live_id)
        if live is None:
            return  # from an attempt already cancelled or timed out
        now = self.clock()
        if isinstance(item, TextDelta):
            live.last_at = now
            if live.first_at is None:
                live.first_at = now
            live.pieces.append(item.text)
            if self.leader is None:
                self.leader = live
                if live.hedge:
                    self.hedge_won = True
                for other in list(self.active.values()):
                    if other is not live:
                        self._cancel(other, "lost the hedge race" if (other.hedge or live.hedge) else "not needed")
            if live is self.leader:
                if self.pending_restart is not None:
                    self.pending_restart = None
                self.shown_from = live.name
                self.out.append(Delta(item.text))
                self._alive(now + live.provider.entry.idle_timeout)
        elif isinstance(item, StreamEnd):
            del self.active[live.id]
            self._record(live, "ok", latency=now - live.start, usage=item.usage, model=item.model)
            self.r.breakers[live.name].success(live.permit)
            # An allow-list: only a normal ending is whole and cached; "length" is the caller's own
            # limit (Provider.stream raises for every other ending).
            complete = item.finish_reason == "stop"
            text = "".join(live.pieces)
            if complete and self.key is not None:
                self.r.cache.put(self.key, text, live.name, item.model, item.usage)
            self._finish(tier="provider", text=text, provider=live.name, model=item.model, usage=item.usage,
                         complete=complete, finish_reason=item.finish_reason,
                         notice="" if complete else "The answer stopped at the max-tokens limit.",
                         ttft=_ms(live.first_at - self.start) if live.first_at is not None else None)
        elif isinstance(item, ProviderError):
            del self.active[live.id]
            self._failed(live, item, now)

    def _failed(self, live: _Live, e: ProviderError, now: float) -> None:
        """An attempt ended in an error (it is no longer in `active`)."""
        outcome = "declined" if e.kind is ErrorKind.CONTENT_FILTERED else "error"
        self._record(live, outcome, latency=now - live.start, error=e)
        breaker = self.r.breakers[live.name]
        long_wait = e.retry_after is not None and e.retry_after > self.retries.max_retry_wait
        if e.kind.health:
            breaker.failure(f"{e.kind.value}: {e.message[:120]}", retry_after=e.retry_after, permit=live.permit)
            if long_wait:
                breaker.hold_off(e.retry_after, f"asked to wait {e.retry_after:g}s", permit=live.permit)
        else:
            breaker.neutral(live.permit)
        if e.kind is ErrorKind.CONTENT_FILTERED:
            for other in list(self.active.values()):
                self._cancel(other, "request declined")
            self.retry_at.clear()
            if self.shown_from:
                self.out.append(Restart(self.shown_from, "", "declined"))
                self.shown_from = None
            self._finish(tier="declined", text=declined_text(live.name, e.message), provider=live.name,
                         model=live.provider.model, complete=False, finish_reason="content_filter", notice=e.message)
            return
        if live is self.leader:
            # Mid-answer: the next provider restarts the answer; the caller is told to replace it.
            self.leader = None
            self.restarted = True
            self.pending_restart = (live.name, e.kind.value)
            self._failover()
            return
        tries = self.tries[live.name]
        if e.kind.retry and not long_wait and tries < self.retries.max_attempts and not self.active:
            if e.retry_after is not None:
                wait = e.retry_after
            else:
                wait = self.r.rng.uniform(0, min(self.retries.backoff_max, self.retries.backoff_base * 2 ** tries))
            if now + wait < self.deadline:
                self.retry_at.append((now + wait, live.provider))
                return
        self._failover()

    def _failover(self) -> None:
        if self.active or self.retry_at or self.result is not None:
            return  # another attempt (a hedge, a scheduled retry) carries on
        if not self._launch_next() and not self._wait_for_trial():
            self._degrade("no provider could answer")

    def _wait_for_trial(self) -> bool:
        """Every breaker is open: rather than give up at once (litellm #3646), wait for the first
        one whose cooldown ends soon, once per request, and make its trial call."""
        if self.waited_for_trial:
            return False
        self.waited_for_trial = True
        now = self.clock()
        limit = min(self.r.config.policy.breaker.max_trial_wait, self.deadline - now)
        soonest = min(((b.retry_in(), p) for p in self.r.providers
                       if (b := self.r.breakers[p.name]).state == OPEN), key=lambda x: x[0], default=None)
        if soonest is None or soonest[0] > limit:
            return False
        self.retry_at.append((now + soonest[0], soonest[1]))
        return True

    def _launch_next(self, *, hedge: bool = False) -> bool:
        providers = self.r.providers
        while self.next_index < len(providers):
            p = providers[self.next_index]
            self.next_index += 1
            breaker = self.r.breakers[p.name]
            if self.clock() >= self.deadline:
                self.attempts.append(Attempt(p.name, p.model, "skipped", detail="request deadline reached"))
                continue
            permit = breaker.allow()
            if permit is None:
                detail = (f"breaker open, trial call in {breaker.retry_in():.0f}s" if breaker.state == OPEN
                          else "breaker half-open, its trial call is in flight")
                self.attempts.append(Attempt(p.name, p.model, "skipped", detail=detail))
                self.r.metrics.record(AttemptEvent(self.r.wall(), p.name, p.model, "skipped", None, 0.0, None))
                continue
            self._launch(p, permit, hedge=hedge)
            return True
        return False

    def _launch(self, provider: Provider, permit: Permit, *, hedge: bool) -> None:
        self.tries[provider.name] += 1
        live = _Live(next(self.ids), provider, hedge, self.clock(), permit)
        self.active[live.id] = live
        self._alive(live.start + provider.entry.first_token_timeout)
        if self.pending_restart is not None and self.shown_from is not None:
            failed, reason = self.pending_restart
            self.out.append(Restart(failed, provider.name, reason))
            self.shown_from = None
        threading.Thread(target=_work, args=(live, self.request, self.q), name=f"attempt-{provider.name}",
                         daemon=True).start()

    def _cancel(self, live: _Live, why: str, *, record: bool = True) -> None:
        self.active.pop(live.id, None)
        live.scope.cancel()
        if live.handed_over:
            live.stream.close()  # this thread owns it now
        else:
            self._handed[live.id] = live  # if its hand-over is still on the way, it is closed on arrival
        if record:
            self._record(live, "cancelled", latency=self.clock() - live.start, detail=why)
            self.r.breakers[live.name].neutral(live.permit)  # gives back its own trial slot, no other

    def _alive(self, until: float) -> None:
        """Tell requests waiting on this one when it will next have news at the latest."""
        if self.flight is not None:
            self.flight.alive(until)

    # -- endings ---------------------------------------------------------------------------------
    def _degrade(self, reason: str) -> None:
        if self.shown_from:
            self.out.append(Restart(self.shown_from, "", reason))
            self.shown_from = None
        question = self.request.last_user_text()
        hit = self.r.cache.get(self.key) if self.key is not None else None
        if hit is not None:
            answer = hit[0]
            age = _age(self.clock() - answer.stored_at)
            self._finish(tier="stale_cache", text=answer.text, provider=answer.provider, model=answer.model,
                         complete=True, finish_reason="stop",
                         notice=f"No provider could answer just now; this is a saved answer from {age} ago.")
            return
        match = self.r.faq.match(question) if self.r.faq is not None else None
        if match is not None:
            entry, score = match
            self._finish(tier="offline", text=entry.answer, complete=True, finish_reason="stop",
                         notice=f"No provider could answer just now; this is an offline answer to "
                                f"“{entry.question}” ({score:.0%} match).")
            return
        kept = self.r.followups.add(question, why=reason)
        self._finish(tier="unavailable", text=unavailable_text(question, kept=kept), complete=False,
                     notice=f"No provider could answer ({reason}); " + (
                         "the question was kept for follow-up." if kept
                         else "the question could NOT be kept for follow-up (the store is failing)."))

    def _finish(self, *, tier: str, text: str, complete: bool, provider: str | None = None, model: str | None = None,
                usage: Usage | None = None, finish_reason: str | None = None, notice: str = "",
                ttft: float | None = None) -> None:
        self.result = Result(text=text, complete=complete, tier=tier, provider=provider, model=model, usage=usage,
                             attempts=tuple(self.attempts), elapsed_ms=_ms(self.clock() - self.start),
                             finish_reason=finish_reason, notice=notice, ttft_ms=ttft)

    def _record(self, live: _Live, outcome: str, *, latency: float, error: ProviderError | None = None,
                usage: Usage | None = None, model: str | None = None, detail: str = "") -> None:
        ttft = _ms(live.first_at - live.start) if live.first_at is not None else None
        kind = error.kind.value if error else None
        detail = detail or (error.message[:300] if error else "")
        attempt = Attempt(live.name, model or live.provider.model, outcome, kind, _ms(latency), ttft, detail, live.hedge)
        self.attempts.append(attempt)
        self.r.metrics.record(AttemptEvent(
            self.r.wall(), attempt.provider, attempt.model, outcome, kind, attempt.latency_ms, ttft, live.hedge,
            usage.input_tokens if usage else None, usage.output_tokens if usage else None))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
