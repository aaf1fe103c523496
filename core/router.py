"""The router: runs a request down the priority chain and always ends with a `Result`.

`stream()` yields `Delta` text as it arrives, `Restart` when a provider failed after its text was
shown (the caller replaces that text with what follows), and one final `Done`. It never raises.

What happens to a request, in order:
1. A fresh cached answer is served before any provider is called; identical requests in flight
   together are computed once.
2. Providers are tried in priority order, each attempt in its own thread (core/attempt.py) so the
   router can keep the time: a first-token deadline and an idle deadline per provider, one overall
   deadline for the chain (retries never multiply waits). An open breaker skips its provider.
3. Transient errors are retried with full-jitter backoff, honouring a short Retry-After; a long
   one fails over at once and keeps the provider out for that long. Silent and stalled providers,
   request errors and context-length errors are never resent to the same provider.
4. If the first token is late (past the provider's observed p95), the next provider is started in
   parallel; the first to produce text wins and the other is cancelled, its connection closed.
5. A stream that breaks, stalls or errors after text was shown moves to the next provider, which
   answers from scratch (`Restart`): no assistant prefill, no duplicated text. A stream silent for
   much longer than its provider's normal gap between chunks is *stalling*: the next provider starts
   in parallel, and whichever goes on first keeps the answer (stall hedging; `idle_timeout` stays the
   hard limit).
6. When no provider can answer: the degraded tiers (core/tiers.py). A content-policy decline is
   reported, never routed around.

This module schedules; the rules it asks (retry? after how long? hedge when? fail over?) live in
core/policies.py, and the health of the chain in core/health.py.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

from . import cancel
from .answer import Delta, Done, Event, Restart, Result
from .attempt import HANDOFF, Attempt, LiveAttempt, Outcome
from .breaker import OPEN, Breaker, Permit
from .cache import AnswerCache, Flight, cache_key
from .chaos import Chaos, transport_for
from .config import Config, ConfigError
from .errors import ErrorKind, ProviderError
from .failover import passed_over
from .health import Health, ProviderStatus
from .messages import ChatRequest, StreamEnd, TextDelta, Usage
from .metrics import AttemptEvent, Metrics, ProbeEvent, RequestEvent
from .offline import Faq, FollowUps
from .policies import FailoverPolicy, HedgePolicy, RetryPolicy, StallPolicy
from .providers import build
from .providers.base import Provider
from .store.answers import StaleAnswers
from .store.history import History
from .store.stores import Stores, open_stores
from .tiers import Origin, Tier, declined_text, degraded_answer
from .watchdog import Watchdog

__all__ = ["Attempt", "Delta", "Done", "Event", "Origin", "ProviderStatus", "Restart", "Result", "Router"]  # re-exported

log = logging.getLogger("understudy")
STOP = object()  # on a run's queue: the caller stopped it (from another thread)
_STALL_RECHECK = 0.05  # seconds: how often the watchdog looks at a stall backup's race


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
        stores: Stores | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        policy = config.policy
        # Where state lives: this process and a SQLite file by default; Redis and PostgreSQL for a
        # fleet (core/store/stores.py), as the settings or `env` (default: os.environ) say.
        self.stores = stores or open_stores(policy.store, env=env, clock=clock, wall=wall)
        self.database = self.stores.database
        self.config = config
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.retry = RetryPolicy(policy.retries)
        self.hedge = HedgePolicy(policy.hedging)
        self.stalls = StallPolicy(policy.stalls)
        self.watchdog = Watchdog()  # notices a stalling answer while its reader waits on the socket
        self.failover = FailoverPolicy()
        self.chaos = chaos or Chaos(clock)
        self.stores.share_chaos(self.chaos)
        if providers is None:
            providers = [build(e, transport=transport_for(e.kind, e.name, self.chaos)) for e in config.providers]
        self.providers = list(providers)
        self.metrics = Metrics(max_events=policy.metrics.max_events, wall=wall, replica=self.stores.replica)
        # What the Status page shows: the whole fleet's traffic (this process's alone when there is
        # no fleet). `metrics` stays this process's own: hedge delays learn from it.
        self.fleet_metrics = self.stores.share_metrics(self.metrics, max_events=policy.metrics.max_events)
        # Outlive the process: the metrics history (seeds the dashboard at start) and stale answers,
        # both written by a background thread, never by a request.
        self.history = History(self.stores.history, self.metrics, keep_days=policy.metrics.history_days,
                               window=policy.metrics.window, wall=wall)
        self.answers = StaleAnswers(self.stores.answers, stale_ttl=policy.cache.stale_ttl,
                                    max_rows=policy.cache.max_entries, wall=wall)
        b = policy.breaker
        self.breakers = {
            p.name: Breaker(p.name, fail_max=b.fail_max, reset_timeout=b.reset_timeout,
                            max_cooldown=b.max_cooldown, clock=clock, wall=wall,
                            on_transition=self.metrics.record, store=self.stores.breakers)
            for p in self.providers
        }
        c = policy.cache
        self.cache = AnswerCache(ttl=c.ttl, max_entries=c.max_entries, stale_ttl=c.stale_ttl, clock=clock,
                                 enabled=c.enabled, shared=self.stores.cached)
        o = policy.offline
        try:
            self.faq = Faq.load(o.faq_file or None, o.min_similarity) if o.enabled else None
        except ValueError as e:
            raise ConfigError(config.source, "offline.faq_file", str(e), "fix the FAQ file or point to another") from None
        self.followups = FollowUps(self.database, file=o.followup_file or None, wall=wall)
        self.health = Health(self.providers, self.breakers, self.metrics, interval=policy.health.probe_interval,
                             window=policy.metrics.window, wall=wall, leases=self.stores.leases, clock=clock,
                             outage_interval=policy.health.outage_probe_interval,
                             outage_max=policy.health.outage_probe_max,
                             probe_timeout=policy.health.probe_timeout)
        self.health.traffic = self.traffic  # a provider's health from the whole fleet's traffic

    # -- answering ------------------------------------------------------------------------------
    def ask(self, request: ChatRequest, *, fresh: bool = False, origin: Origin | None = None) -> Result:
        """The whole answer at once. Its `Result` has the final text, so the text's pieces are not
        passed up one by one as they arrive (`stream` does that)."""
        run = _Run(self, request, fresh=fresh, origin=origin, quiet=True)
        try:
            for event in run.events():
                pass
        finally:
            run.close()
        assert isinstance(event, Done)  # events() always ends with Done
        return event.result

    def stream(self, request: ChatRequest, *, fresh: bool = False, origin: Origin | None = None) -> Stream:
        """`fresh=True` skips the cached answer (a "regenerate"); the new answer still updates it.
        `origin` says who asked, in which conversation: kept with the question if nothing answers.
        The stream can be stopped from any thread at any moment (`Stream.stop`)."""
        return Stream(_Run(self, request, fresh=fresh, origin=origin))

    def traffic(self) -> Metrics:
        """Whose traffic the dashboard and passive health read: the whole fleet's while its Redis
        answers, else this process's own."""
        shared = self.stores.shared
        return self.fleet_metrics if shared is not None and shared.available else self.metrics

    # -- operations -----------------------------------------------------------------------------
    def reset_breakers(self) -> None:
        for b in self.breakers.values():
            b.reset()

    def clear_cache(self) -> None:
        self.cache.clear()
        self.answers.clear()

    def probe(self, names: Sequence[str] | None = None) -> list[ProbeEvent]:
        return self.health.probe(names)

    def start_probing(self) -> None:
        """Probe every provider in the background every `[health] probe_interval` seconds, and
        providers whose breaker is open every few (`[health] outage_probe_interval`, backing off)."""
        self.health.start()

    def status(self, *, probe: bool = True) -> list[ProviderStatus]:
        return self.health.status(probe=probe)

    def close(self) -> None:
        self.health.stop()
        self.watchdog.close()
        for p in self.providers:
            p.close()
        self.followups.close()
        self.history.close()
        self.answers.close()
        self.stores.close()


class Stream:
    """The events of one request, read by one thread; `stop()` may come from any other."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._events = self._generate()

    def _generate(self) -> Iterator[Event]:
        try:
            yield from self._run.events()
        finally:
            self._run.close()  # also when the caller stops reading early

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def stop(self) -> None:
        """Stop now, whatever the provider is doing — before its first token, mid-answer, or silent
        mid-stall: every attempt's socket is shut, the reader wakes, and the stream ends with a
        `Done` whose result is `stopped`, holding the text that had arrived. Thread-safe; a stop
        says nothing about the providers' health."""
        self._run.stop()

    @property
    def answering(self) -> tuple[str, str] | None:
        """(provider, model) whose text the reader holds right now, else None. Any thread may ask
        (a stopped answer says where its text came from)."""
        showing = self._run.showing
        return (showing.name, showing.provider.model) if showing is not None else None

    def close(self) -> None:
        """The reader is done with it (from the reading thread)."""
        self._events.close()


class _Run:
    """The state of one request while it is being answered: by its reading thread, under `_mutex`
    (released whenever it waits or yields), and by the stall watchdog's thread under the same lock.
    `stop` may come from any thread."""

    def __init__(self, router: Router, request: ChatRequest, *, fresh: bool = False,
                 origin: Origin | None = None, quiet: bool = False) -> None:
        self.fresh = fresh
        self.quiet = quiet  # the caller wants the result only: the leader's pieces are not yielded
        self.origin = origin or Origin()
        self.r = router
        self.request = request
        self.clock = router.clock
        self.start = self.clock()
        self.deadline = self.start + router.config.policy.timeouts.request
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.ids = itertools.count()
        self.active: dict[int, LiveAttempt] = {}
        self.leader: LiveAttempt | None = None
        self.next_index = 0
        # Providers cancelled only because another won the race (healthy, not failed): if the
        # winner breaks off mid-answer, they are next in line again, before the rest of the chain.
        self.spare: list[Provider] = []
        self.tries: Counter = Counter()
        self.retry_at: list[tuple[float, Provider]] = []
        self.attempts: list[Attempt] = []
        self.out: list[Event] = []
        self.showing: LiveAttempt | None = None  # whose partial text the caller holds right now
        self.pending_restart: tuple[str, str] | None = None
        self.hedges = 0
        self.hedge_won = False
        self.restarted = False
        self.stall_backup: LiveAttempt | None = None  # started because the leader is stalling
        self.switching: LiveAttempt | None = None  # a stalled leader whose backup went on first
        self.stall_hedges = 0
        self.stall_switched = False
        # The first attempt runs in the reader's own thread until its first text; meanwhile the
        # watchdog keeps the run's timers (first-token deadline, hedge start, request deadline).
        self.inline: LiveAttempt | None = None
        self._inline_ok = True
        self.waited_for_trial = False
        self.result: Result | None = None
        self.key = cache_key(request) if router.cache.enabled else None
        self.flight: Flight | None = None  # this request's, when others may follow it
        self.following: Flight | None = None  # an identical request's, while this one waits on it
        self.stopping = False  # set once, by `stop()` from any thread; read on every chunk, so a plain flag
        self._launched: list[LiveAttempt] = []  # every attempt started, for a stop from another thread
        self._launched_lock = threading.Lock()
        self._mutex = threading.Lock()

    def stop(self) -> None:
        """From any thread: shut every attempt's socket (a blocked read ends at once) and wake the
        run, which ends as stopped."""
        self.stopping = True
        with self._launched_lock:
            launched = list(self._launched)
        for live in launched:
            live.scope.cancel()
        if (following := self.following) is not None:
            following.wake()  # waiting on an identical request: that one goes on, this one ends
        self.q.put((-1, STOP))

    def _stopped(self) -> None:
        """End the run as the caller asked: what had arrived is the answer, marked stopped."""
        for live in list(self.active.values()):
            self._cancel(live, "stopped by the caller")  # neutral for its breaker: a stop is no failure
        self.retry_at.clear()
        shown = self.showing  # the text on the caller's screen, also after a mid-answer switch
        self._finish(tier=Tier.PROVIDER, text="".join(shown.pieces) if shown else "", complete=False,
                     provider=shown.name if shown else None, model=shown.provider.model if shown else None,
                     notice="Stopped by the caller.", stopped=True,
                     ttft=_ms(shown.first_at - self.start) if shown and shown.first_at is not None else None)

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
        tried = [a for a in self.result.attempts if a.outcome is not Outcome.SKIPPED]
        self.r.metrics.record(RequestEvent(
            self.r.wall(), self.result.tier.value, self.result.provider, self.result.elapsed_ms, self.result.ttft_ms,
            self.result.complete, len(tried), passed_over(self.result.attempts),
            self.hedges, self.hedge_won, self.restarted, self.r.metrics.replica, stall_hedges=self.stall_hedges,
            stall_switched=self.stall_switched))
        self._land()  # followers get the result now, not when our caller gets round to closing us
        yield Done(self.result)

    def _answer(self) -> Iterator[Event]:
        if self.key is not None and not self.fresh:
            hit = self.r.cache.get(self.key)
            if hit is not None and hit[1]:
                self._finish(tier=Tier.CACHE, text=hit[0].text, provider=hit[0].provider, model=hit[0].model,
                             complete=True, finish_reason="stop", ttft=0.0,
                             notice=f"Served from the answer cache (answered {_ago(self.clock() - hit[0].stored_at)} "
                                    f"ago by {hit[0].provider}).")
                yield Delta(hit[0].text)
                return
            flight, leader = self.r.cache.join(self.key)
            if not leader:
                yield from self._follow(flight)
                if self.result is not None:
                    return
                if self.stopping:
                    with self._mutex:
                        self._stopped()
                    return
                # The identical request was stopped before it finished: answer this one ourselves.
            else:
                self.flight = flight
                flight.alive(self.deadline)
        with self._mutex:
            self._failover()
        while self.result is None:
            if self.stopping:
                with self._mutex:
                    self._stopped()
                return
            if self.inline is not None:
                self.inline.run_here(self.request, self.q)  # until its first text, an error or a cancel
                self.r.watchdog.unwatch(self)
                with self._mutex:
                    self.inline = None
                yield from self._flush()
                continue
            now = self.clock()
            with self._mutex:
                wake = self._next_wake(now)
            items = []
            try:
                items.append(self.q.get(timeout=max(0.0, wake - now)))
                while True:
                    items.append(self.q.get_nowait())
            except queue.Empty:
                pass
            for live_id, item in items:
                if self.stopping:
                    break  # what the stop's shut sockets produced says nothing about the providers
                if item is HANDOFF:
                    live = self.active.get(live_id)
                    if live is not None:  # else it was cancelled meanwhile, and its stream closed then
                        yield from self._read(live)
                else:
                    with self._mutex:
                        self._handle(live_id, item)
                yield from self._flush()
                if self.result is not None:
                    return
            if self.stopping:
                continue  # ends at the top of the loop, before any deadline acts
            with self._mutex:
                self._timers(self.clock())
            yield from self._flush()

    def _follow(self, flight: Flight) -> Iterator[Event]:
        """An identical request is being answered right now: wait for it rather than ask again, as
        long as it is alive (until our deadline, and beyond while its answer is still streaming)."""
        self.following = flight
        try:
            shared = flight.wait(self.deadline - self.clock(), lambda: self.stopping)
        finally:
            self.following = None
        if shared is None:
            # It was stopped, or went quiet: no provider was asked for this request yet, so it asks
            # on its own, with the whole deadline for its chain.
            self.deadline = self.clock() + self.r.config.policy.timeouts.request
            return
        if shared.tier is Tier.PROVIDER and shared.complete:
            self._finish(tier=Tier.CACHE, text=shared.text, provider=shared.provider, model=shared.model,
                         complete=True, finish_reason="stop",
                         notice="Shared with an identical request answered at the same time.",
                         ttft=_ms(self.clock() - self.start))
        else:
            self.result = replace(shared, attempts=(), elapsed_ms=_ms(self.clock() - self.start))
        if self.result.text:
            yield Delta(self.result.text)

    def _read(self, live: LiveAttempt) -> Iterator[Event]:
        """Read the leader's handed-over stream in this thread, item by item, while the watchdog
        looks out for a stall. The stream is read under the attempt's cancel scope; the caller's
        code, between the events yielded to it, runs outside it."""
        watched = live.stall_after is not None
        if watched:
            self.r.watchdog.watch(self, after=live.stall_after)
        clock, mutex, active, quiet = self.clock, self._mutex, self.active, self.quiet
        gaps, pieces, next_item = live.gaps, live.pieces, live.next_item
        local = cancel.local
        outside = getattr(local, "scope", None)
        local.scope = live.scope
        try:
            while live.id in active and self.result is None:
                # Silence is counted from here: time its reader waits, not time its caller takes.
                live.waiting_since = begun = clock()
                try:
                    item = next_item()
                except Exception as e:  # noqa: BLE001 — every way a stream ends is an item
                    item = live.failure(e)
                live.waiting_since = None
                if self.stopping:
                    return
                with mutex:
                    if (type(item) is TextDelta and self.stall_backup is None and self.showing is live
                            and live is self.leader):
                        # Nearly every item: more text of the answer on show, with no race on. This
                        # is what `_handle` does with it, inline: it is the per-chunk path.
                        gaps.append(clock() - begun)
                        pieces.append(item.text)
                        if self.flight is not None:
                            self._alive(clock() + live.provider.entry.idle_timeout)
                        if quiet:
                            continue  # read on, in this loop: the result will have it
                        out = None
                    else:
                        live.last_at = begun
                        local.scope = outside
                        if self.switching is live:
                            self._switched(live)  # what it sent meanwhile is dropped: the backup restarts the answer
                        else:
                            self._handle(live.id, item)
                        out, self.out = self.out, []
                local.scope = outside
                if out is None:
                    yield item
                else:
                    yield from out
                local.scope = live.scope
        finally:
            local.scope = outside
            if watched:
                self.r.watchdog.unwatch(self)

    def _flush(self) -> Iterator[Event]:
        with self._mutex:
            out, self.out = self.out, []
        yield from out

    def close(self) -> None:
        self.r.watchdog.unwatch(self)
        with self._mutex:
            for live in list(self.active.values()):
                self._cancel(live, "request ended")
        self._land()

    def _land(self) -> None:
        if self.flight is not None:
            flight, self.flight = self.flight, None
            # A stopped answer is its own caller's: whoever followed it never pressed Stop, and asks itself.
            stopped = self.result is not None and self.result.stopped
            self.r.cache.land(self.key, flight, None if stopped else self.result)

    # -- timing ----------------------------------------------------------------------------------
    def _deadlines(self) -> list[tuple[float, Callable[[float], None]]]:
        """Every deadline this run is waiting for, with what happens when it passes, in the order
        they are handled. The one statement of the rules: the wait (`_next_wake`) and the firing
        (`_timers`) both read it."""
        due: list[tuple[float, Callable[[float], None]]] = []
        if self.leader is None:
            due.append((self.deadline, self._request_deadline))
        for live in self.active.values():
            if live.first_at is None:
                due.append((live.start + live.provider.entry.first_token_timeout, lambda now, a=live: self._no_first_token(a, now)))
                if self._can_hedge(live):
                    due.append((live.start + self._hedge_delay(live), lambda now, a=live: self._start_hedge(a)))
            elif live is self.leader:
                due.append((live.last_at + live.provider.entry.idle_timeout, lambda now, a=live: self._stalled(a, now)))
        for item in self.retry_at:
            due.append((item[0], lambda now, it=item: self._retry(it)))
        return due

    def _next_wake(self, now: float) -> float:
        return min([now + 3600, *(at for at, _ in self._deadlines())])

    def _timers(self, now: float) -> None:
        for at, fire in self._deadlines():
            if self.result is not None:
                return
            if now >= at:
                fire(now)

    def _request_deadline(self, now: float) -> None:
        if self.leader is not None:
            return
        for live in list(self.active.values()):
            self._cancel(live, "request deadline", record=False)
            self._failed(live, ProviderError(ErrorKind.TIMEOUT, "the request deadline passed before its first token",
                                             provider=live.name), now)
        self.retry_at.clear()
        if self.result is None:
            self._degrade("request deadline reached")

    def _no_first_token(self, live: LiveAttempt, now: float) -> None:
        if live.id not in self.active or live.first_at is not None:
            return
        limit = live.provider.entry.first_token_timeout
        self._cancel(live, "", record=False)
        self._failed(live, ProviderError(ErrorKind.TIMEOUT, f"no first token within {limit:g}s", provider=live.name), now)

    def _stalled(self, live: LiveAttempt, now: float) -> None:
        if live is not self.leader or live.id not in self.active:
            return
        idle = live.provider.entry.idle_timeout
        self._cancel(live, "", record=False)
        self._failed(live, ProviderError(ErrorKind.STREAM_BROKEN, f"the stream stalled for {idle:g}s",
                                         provider=live.name, stalled=True), now)

    def _hedge_delay(self, live: LiveAttempt) -> float:
        return self.r.hedge.delay(live.name, self.r.metrics.ttft_quantile)

    def _can_hedge(self, live: LiveAttempt) -> bool:
        return (self.r.hedge.enabled and self.leader is None and len(self.active) == 1 and not live.backed_up
                and live.first_at is None and self._more_to_try())

    def _more_to_try(self) -> bool:
        return bool(self.spare) or self.next_index < len(self.r.providers)

    def _start_hedge(self, live: LiveAttempt) -> None:
        if live.id not in self.active or not self._can_hedge(live):
            return
        live.backed_up = True
        # Racing the attempt that runs in the reader's thread: whichever has text first cancels the other.
        if self._launch_next(hedge=True, claim=self._claim_first if self.inline is not None else None):
            self.hedges += 1

    # -- stalls ------------------------------------------------------------------------------------
    # Once the leader's text is showing, its reader is blocked on the socket: the watchdog's thread
    # asks `poll`. A leader silent past its stall threshold gets a backup, and keeps going:
    # whichever goes on first keeps the answer (`_claim` decides, under the lock). The leader first:
    # the backup is cancelled (`_resumed`). The backup first: the leader's socket is shut, and its
    # reader, woken, hands the answer over with a Restart (`_switched`). `idle_timeout` stays the
    # hard limit either way.

    def poll(self) -> float | None:
        """From the watchdog's thread: keep the timers while the reader runs the first attempt, and
        start a backup if the answer is stalling. Seconds until it wants to be asked again; None:
        not until it is watched again."""
        if not self._mutex.acquire(blocking=False):
            return _STALL_RECHECK  # its reader is busy handling something: not silent; the other runs can't wait
        try:
            if self.inline is not None:
                if self.result is not None or self.stopping:
                    return None
                now = self.clock()
                self._timers(now)  # what the reader's loop would do, were it not inside the attempt
                return None if self.result is not None else max(0.0, self._next_wake(now) - now)
            live = self.leader
            if (live is None or live.stall_after is None or live.id not in self.active or self.result is not None
                    or self.stopping or self.switching is not None):
                return None
            backup = self.stall_backup
            if backup is not None:
                if not backup.failed:
                    return _STALL_RECHECK  # racing
                self._backup_failed(backup)  # before its first text: recorded now, and the next one may start
            since = live.waiting_since
            if since is None:
                return live.stall_after  # its caller is busy, not the provider: that is no silence
            silent = self.clock() - since
            if silent < live.stall_after:
                return live.stall_after - silent
            if not self._more_to_try():
                return None
            self.stall_backup = backup = self._launch_next(hedge=True, claim=self._claim)
            if backup is None:
                return None
            backup.for_stall = True
            live.backed_up = True
            self.stall_hedges += 1
            backup.note = f"started when {live.name} went silent mid-answer for {silent:.1f}s"
            return _STALL_RECHECK
        finally:
            self._mutex.release()

    def _backup_failed(self, backup: LiveAttempt) -> None:
        """A stall backup failed before its first text: handled here, as its queued error would be
        (which is then ignored), since the reader is still blocked on the leader."""
        self.stall_backup = None
        if backup.id in self.active and backup.error is not None:
            self._handle(backup.id, backup.error)

    def _claim_first(self, hedge: LiveAttempt) -> bool:
        """From a first-token hedge's thread, at its first text, while the first attempt still runs
        in the reader's thread: the first to claim wins; a winning hedge cancels that attempt."""
        with self._mutex:
            if hedge.scope.cancelled or self.result is not None or hedge.id not in self.active:
                return False
            first = self.inline
            if first is not None and first.id in self.active:
                if first.claimed:
                    return False  # its text is on the way already
                self._cancel(first, "lost the hedge race")  # its reader wakes, and reads the hedge's text
                self.spare.append(first.provider)
            hedge.claimed = True
            return True

    def _claim_inline(self, live: LiveAttempt) -> bool:
        """From the reader's own thread, at the first attempt's first text: not if a hedge won."""
        with self._mutex:
            if live.scope.cancelled or live.id not in self.active or self.result is not None:
                return False
            live.claimed = True
            return True

    def _claim(self, backup: LiveAttempt) -> bool:
        """From a stall backup's thread, at its first text: may it take the answer over?"""
        with self._mutex:
            if backup.scope.cancelled or self.result is not None or backup.id not in self.active:
                return False
            leader = self.leader
            if leader is not None and self.stall_backup is backup and self.switching is None:
                self.switching = leader
                leader.scope.cancel()  # its reader's blocked read ends at once
            return True

    def _resumed(self, live: LiveAttempt, silent: float) -> None:
        """The stalling leader went on before its backup produced text: the backup is cancelled."""
        backup = self.stall_backup
        live.backed_up = False
        live.note = f"went on after {silent:.1f}s of silence; its stall backup was cancelled"
        if backup.failed:
            self._backup_failed(backup)
        else:
            self.stall_backup = None
            if backup.id in self.active:
                self._cancel(backup, f"{live.name} went on first")
                self.spare.append(backup.provider)  # healthy, only not needed: next in line again
        self.r.watchdog.watch(self, after=live.stall_after)  # its next stall threshold counts from now

    def _switched(self, live: LiveAttempt) -> None:
        """The stalled leader's backup went on first: the leader is done, and the backup answers
        from scratch (a Restart when its first text is shown)."""
        backup = self.stall_backup
        self.switching = self.stall_backup = None
        self.stall_switched = True
        now = self.clock()
        self._cancel(live, "", record=False)
        silent = now - live.last_at
        # A trial call after a stall that kept the provider out stalls again: that is no news of a slow pace.
        convincing = self.r.stalls.convincing(silent, live.gaps) or (live.permit is not None and live.permit.trial)
        self._failed(live, ProviderError(
            ErrorKind.STREAM_BROKEN, f"stalled mid-answer: silent {silent:.1f}s (its stall threshold "
            f"{live.stall_after:.1f}s); {backup.name if backup else 'its backup'} went on first"
            + ("" if convincing else "; not held against it: its answer had not yet shown a faster pace"),
            provider=live.name, stalled=True), now, against=convincing)

    def _retry(self, item: tuple[float, Provider]) -> None:
        if item not in self.retry_at:
            return
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
            if live.first_at is None:
                live.first_at = now
            else:
                live.gaps.append(now - live.last_at)
                if self.stall_backup is not None and live is self.leader and live is not self.stall_backup:
                    self._resumed(live, now - live.last_at)
            live.last_at = now
            live.pieces.append(item.text)
            if self.leader is None:
                self.leader = live
                live.stall_after = self.r.stalls.after(live.name, live.provider.entry.idle_timeout,
                                                       self.r.metrics.gap_quantile)
                if live.is_hedge and not live.for_stall:
                    self.hedge_won = True
                for other in list(self.active.values()):
                    if other is not live:
                        self._cancel(other, "lost the hedge race" if (other.is_hedge or live.is_hedge) else "not needed")
                        self.spare.append(other.provider)
            if live is self.leader:
                if self.pending_restart is not None:
                    failed, reason = self.pending_restart
                    self.pending_restart = None
                    if self.showing is not None:  # started before the failure: its text replaces what is shown
                        self.out.append(Restart(failed, live.name, reason))
                self.showing = live
                self.out.append(item)  # a Delta: the piece as the provider's stream gave it
                self._alive(now + live.provider.entry.idle_timeout)
        elif isinstance(item, StreamEnd):
            del self.active[live.id]
            live.finish()
            live.scope.release()
            self._record(live, Outcome.OK, latency=now - live.start, usage=item.usage, model=item.model)
            self.r.breakers[live.name].success(live.permit)
            # An allow-list: only a normal ending is whole and cached; "length" is the caller's own
            # limit (Provider.stream raises for every other ending).
            complete = item.finish_reason == "stop"
            text = "".join(live.pieces)
            if complete and self.key is not None:
                self.r.cache.put(self.key, text, live.name, item.model, item.usage)
                self.r.answers.put(self.key, text, live.name, item.model, item.usage)
            self._finish(tier=Tier.PROVIDER, text=text, provider=live.name, model=item.model, usage=item.usage,
                         complete=complete, finish_reason=item.finish_reason,
                         notice="" if complete else "The answer stopped at the max-tokens limit.",
                         ttft=_ms(live.first_at - self.start) if live.first_at is not None else None)
        elif isinstance(item, ProviderError):
            del self.active[live.id]
            live.finish()
            live.scope.release()
            self._failed(live, item, now)

    def _failed(self, live: LiveAttempt, e: ProviderError, now: float, *, against: bool = True) -> None:
        """An attempt ended in an error (it is no longer in `active`). `against`: the error counts
        against the provider's health, if its kind does."""
        fails_over = self.r.failover.fails_over(e)
        self._record(live, Outcome.ERROR if fails_over else Outcome.DECLINED, latency=now - live.start, error=e)
        breaker = self.r.breakers[live.name]
        hold_off = self.r.retry.hold_off(e)
        if against and self.r.failover.sick(e):
            breaker.failure(f"{e.kind.value}: {e.message[:120]}", retry_after=e.retry_after, permit=live.permit)
            if hold_off is not None:
                breaker.hold_off(hold_off, f"asked to wait {hold_off:g}s", permit=live.permit)
            if e.stalled:
                # A stall is strong evidence: the next user must not wait out another one. Out for
                # a whole cooldown at once, which no probe shortens (its list-models call would
                # pass: a stalling provider still answers those). Slow but steady is never held
                # against: a switch counts only once the answer had shown a faster pace
                # (StallPolicy.convincing), and the hard idle limit is far past any steady pace.
                breaker.hold_off(self.r.config.policy.breaker.reset_timeout, "stalled mid-answer", permit=live.permit)
        else:
            breaker.neutral(live.permit)
        if not fails_over:
            if self.leader is not None and live is not self.leader:
                return  # a backup's decline doesn't end the answer the leader is giving
            self._decline(live, e)
            return
        if live is self.leader:
            # Mid-answer: the next provider restarts the answer; the caller is told to replace it. A
            # stall backup already racing is that next provider now, no longer anyone's backup.
            self.leader = None
            self.stall_backup = self.switching = None
            self.restarted = True
            self.pending_restart = (live.name, "stalled" if e.stalled else e.kind.value)
            self._failover()
            return
        if not self.active:  # else another attempt (a hedge) carries on
            wait = self.r.retry.delay(e, self.tries[live.name], self.r.rng)
            if wait is not None and now + wait < self.deadline:
                self.retry_at.append((now + wait, live.provider))
                return
        self._failover()

    def _decline(self, live: LiveAttempt, e: ProviderError) -> None:
        """The request ends with the provider's decline: it is an answer, not an outage."""
        for other in list(self.active.values()):
            self._cancel(other, "request declined")
        self.retry_at.clear()
        if self.showing:
            self.out.append(Restart(self.showing.name, None, "declined"))
            self.showing = None
        self._finish(tier=Tier.DECLINED, text=declined_text(live.name, e.message), provider=live.name,
                     model=live.provider.model, complete=False, finish_reason="content_filter", notice=e.message)

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

    def _launch_next(self, *, hedge: bool = False, claim: Callable[[LiveAttempt], bool] | None = None
                     ) -> LiveAttempt | None:
        providers = self.r.providers
        while self._more_to_try():
            if self.spare:
                p = self.spare.pop(0)
            else:
                p = providers[self.next_index]
                self.next_index += 1
            breaker = self.r.breakers[p.name]
            if self.clock() >= self.deadline:
                self.attempts.append(Attempt(p.name, p.model, Outcome.SKIPPED, detail="request deadline reached"))
                continue
            permit = breaker.allow()
            if permit is None:
                detail = (f"breaker open, trial call in {breaker.retry_in():.0f}s" if breaker.state == OPEN
                          else "breaker half-open, its trial call is in flight")
                self.attempts.append(Attempt(p.name, p.model, Outcome.SKIPPED, detail=detail))
                self.r.metrics.record(AttemptEvent(self.r.wall(), p.name, p.model, Outcome.SKIPPED.value, None, 0.0,
                                                   None))
                continue
            return self._launch(p, permit, hedge=hedge, claim=claim)
        return None

    def _launch(self, provider: Provider, permit: Permit, *, hedge: bool,
                claim: Callable[[LiveAttempt], bool] | None = None) -> LiveAttempt:
        self.tries[provider.name] += 1
        live = LiveAttempt(next(self.ids), provider, hedge, self.clock(), permit, claim=claim)
        with self._launched_lock:
            self._launched.append(live)
        if self.stopping:
            live.scope.cancel()  # stopped a moment ago: it starts and ends at once
        self.active[live.id] = live
        self._alive(live.start + provider.entry.first_token_timeout)
        if self.pending_restart is not None and self.showing is not None:
            failed, reason = self.pending_restart
            self.out.append(Restart(failed, provider.name, reason))
            self.showing = None
        if self._inline_ok and not hedge and claim is None and len(self.active) == 1:
            # The request's first attempt: the reader's loop runs it (see `_answer`), the watchdog its timers.
            self._inline_ok = False
            self.inline, live.claim = live, self._claim_inline
            now = self.clock()
            self.r.watchdog.watch(self, after=max(0.0, self._next_wake(now) - now))
            return live
        live.run(self.request, self.q)
        return live

    def _cancel(self, live: LiveAttempt, why: str, *, record: bool = True) -> None:
        self.active.pop(live.id, None)
        live.cancel()
        if record:
            self._record(live, Outcome.CANCELLED, latency=self.clock() - live.start, detail=why)
            self.r.breakers[live.name].neutral(live.permit)  # gives back its own trial slot, no other

    def _alive(self, until: float) -> None:
        """Tell requests waiting on this one when it will next have news at the latest."""
        if self.flight is not None:
            self.flight.alive(until)

    # -- endings ---------------------------------------------------------------------------------
    def _degrade(self, reason: str) -> None:
        if self.showing:
            self.out.append(Restart(self.showing.name, None, reason))
            self.showing = None
        d = degraded_answer(self.request.last_user_text(), reason, cache=self.r.cache, key=self.key, faq=self.r.faq,
                            followups=self.r.followups, now=self.clock(), origin=self.origin, answers=self.r.answers)
        self._finish(tier=d.tier, text=d.text, complete=d.complete, provider=d.provider, model=d.model,
                     finish_reason=d.finish_reason, notice=d.notice)

    def _finish(self, *, tier: Tier, text: str, complete: bool, provider: str | None = None, model: str | None = None,
                usage: Usage | None = None, finish_reason: str | None = None, notice: str = "",
                ttft: float | None = None, stopped: bool = False) -> None:
        self.result = Result(text=text, complete=complete, tier=tier, provider=provider, model=model, usage=usage,
                             attempts=tuple(self.attempts), elapsed_ms=_ms(self.clock() - self.start),
                             finish_reason=finish_reason, notice=notice, ttft_ms=ttft, stopped=stopped)

    def _record(self, live: LiveAttempt, outcome: Outcome, *, latency: float, error: ProviderError | None = None,
                usage: Usage | None = None, model: str | None = None, detail: str = "") -> None:
        ttft = _ms(live.first_at - live.start) if live.first_at is not None else None
        kind = error.kind.value if error else None
        detail = detail or (error.message[:300] if error else "") or live.note
        if live.gaps:
            self.r.metrics.record_gaps(live.name, live.gaps)
        attempt = Attempt(live.name, model or live.provider.model, outcome, kind, _ms(latency), ttft, detail,
                          live.is_hedge, stall=live.for_stall, status=error.status if error else None)
        self.attempts.append(attempt)
        self.r.metrics.record(AttemptEvent(
            self.r.wall(), attempt.provider, attempt.model, outcome.value, kind, attempt.latency_ms, ttft, live.is_hedge,
            usage.input_tokens if usage else None, usage.output_tokens if usage else None, self.r.metrics.replica))


def _ago(seconds: float) -> str:
    """How long ago, the way people say it: "12 s", "4 min", "3 h", "2 days"."""
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds:.0f} s"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
