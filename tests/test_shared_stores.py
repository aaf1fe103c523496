"""The stores a fleet shares, each held to one contract on every backend: breakers (this process,
Redis), chaos (this process, Redis), the answer cache (this process, Redis); then what only a
shared store has to get right (two replicas' views, bounds), against the real Redis on 6379."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
import redis

from core.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerState, MemoryBreakerStore
from core.cache import AnswerCache
from core.chaos import Chaos
from core.faults import Fault
from core.messages import ChatRequest, Usage
from core.metrics import Metrics, ProbeEvent, RequestEvent
from core.store.breakers import RedisBreakerStore
from core.store.fleet import FleetEvents, ProbeLeases, SharedAnswers, SharedChaos
from core.store.shared import Shared
from tests.clock import ManualClock, wait_until
from tests.conftest import REDIS_URL


@pytest.fixture
def replicas(request, redis_prefix):
    """replicas() -> a new "replica": its own Redis client on the shared prefix, or, for the
    in-process backend, the same process (one store, seen twice)."""
    opened: list[Shared] = []

    def new() -> Shared:
        shared = Shared(REDIS_URL, prefix=redis_prefix, timeout=2.0)  # contracts, not timeouts, are tested here
        opened.append(shared)
        return shared

    yield new
    for shared in opened:
        shared.close()


BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
def breaker_stores(request, replicas):
    """breaker_stores(clock) -> (store on replica A, store on replica B)."""
    def make(clock):
        if request.param == "memory":
            store = MemoryBreakerStore()
            return store, store
        return (RedisBreakerStore(replicas(), clock=clock, wall=clock),
                RedisBreakerStore(replicas(), clock=clock, wall=clock))
    return make


# -- breakers --------------------------------------------------------------------------------------------
def test_an_unknown_breaker_is_closed_and_an_unchanged_record_is_not_written(breaker_stores):
    a, b = breaker_stores(ManualClock())
    assert a.read("p") == BreakerState()
    old, new = a.update("p", lambda s: s)
    assert new is old and b.read("p") == BreakerState()


def test_updates_are_atomic_across_threads_and_replicas(breaker_stores):
    a, b = breaker_stores(ManualClock())
    go = threading.Event()

    def bump(store) -> None:
        go.wait()
        for _ in range(25):
            store.update("p", lambda s: replace(s, failures=s.failures + 1))

    workers = [threading.Thread(target=bump, args=(store,)) for store in (a, b) * 4]
    for w in workers:
        w.start()
    go.set()
    for w in workers:
        w.join(30)
    # None lost to a concurrent writer; each replica's local copy catches up with the last write.
    wait_until(lambda: a.read("p").failures == b.read("p").failures == 200, "both copies to reach 200")
    assert a.read("p").failures == 200


def test_a_breaker_opened_on_one_replica_is_open_on_the_other(breaker_stores):
    clock = ManualClock()
    sa, sb = breaker_stores(clock)
    a = Breaker("p", fail_max=2, reset_timeout=30, clock=clock, wall=clock, store=sa)
    b = Breaker("p", fail_max=2, reset_timeout=30, clock=clock, wall=clock, store=sb)
    a.failure("503")
    b.failure("503")  # consecutive failures count fleet-wide: B's second one opens it
    assert b.state == OPEN
    wait_until(lambda: a.state == OPEN, "A to see the breaker B opened")
    assert a.allow() is None and a.retry_in() == pytest.approx(30, abs=0.01)  # the cooldown carried over


def test_a_wait_the_provider_asked_for_holds_on_every_replica_whatever_the_probes_say(breaker_stores):
    clock = ManualClock()
    sa, sb = breaker_stores(clock)
    a = Breaker("p", fail_max=1, reset_timeout=15, clock=clock, wall=clock, store=sa)
    b = Breaker("p", fail_max=1, reset_timeout=15, clock=clock, wall=clock, store=sb)
    a.failure("429", retry_after=60)  # A was told "come back in 60 s"
    wait_until(lambda: b.state == OPEN, "B to see the breaker A opened")
    b.probe_succeeded()  # B's probe gets through: it can't say the rate limit reset
    assert b.retry_in() == pytest.approx(60, abs=0.01) and a.retry_in() == pytest.approx(60, abs=0.01)
    clock.advance(60)
    assert b.allow() is not None


def test_exactly_one_trial_for_the_whole_fleet(breaker_stores):
    clock = ManualClock()
    sa, sb = breaker_stores(clock)
    breakers = [Breaker("p", fail_max=1, reset_timeout=5, clock=clock, wall=clock, store=s) for s in (sa, sb)]
    breakers[0].failure("503")
    wait_until(lambda: breakers[1].state == OPEN, "B to see it open")
    clock.advance(6)
    permits, go = [], threading.Event()

    def claim(breaker) -> None:
        go.wait()
        permits.append(breaker.allow())

    workers = [threading.Thread(target=claim, args=(b,)) for b in breakers * 8]
    for w in workers:
        w.start()
    go.set()
    for w in workers:
        w.join(30)
    granted = [p for p in permits if p is not None]
    assert len(permits) == 16 and len(granted) == 1 and granted[0].trial
    wait_until(lambda: all(b.state == HALF_OPEN for b in breakers), "both to see the trial in flight")
    breakers[1].success(granted[0])  # the permit names the trial, whichever replica reports it
    wait_until(lambda: all(b.state == CLOSED for b in breakers), "both to see the trial close it")


def test_a_replica_that_joins_later_sees_the_open_breaker(replicas):
    clock = ManualClock()
    a = Breaker("p", fail_max=1, clock=clock, wall=clock, store=RedisBreakerStore(replicas(), clock=clock, wall=clock))
    a.failure("503")
    late = Breaker("p", fail_max=1, clock=clock, wall=clock,
                   store=RedisBreakerStore(replicas(), clock=clock, wall=clock))
    assert late.state == OPEN


# -- chaos --------------------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def chaos_pair(request, replicas):
    """(chaos on replica A, chaos on replica B)."""
    clock = ManualClock()
    if request.param == "memory":
        c = Chaos(clock)
        return c, c
    pair = Chaos(clock), Chaos(clock)
    for c in pair:
        SharedChaos(c, replicas(), clock=clock, wall=clock)
    return pair


def test_chaos_set_on_one_replica_strikes_on_the_other_and_resets_everywhere(chaos_pair):
    a, b = chaos_pair
    a.set("claude", Fault.http(503))
    wait_until(lambda: b.injection("claude") is not None, "B to get the fault")
    assert b.strike("claude") == Fault.http(503) and b.state()["providers"] == a.state()["providers"]
    a.play("primary_outage", ["claude", "gpt"])
    wait_until(lambda: b.state()["scenario"] is not None, "B to see the scenario")
    assert b.state()["scenario"] == a.state()["scenario"]  # same clock on both: same elapsed
    b.reset()
    wait_until(lambda: a.state() == {"providers": {}, "scenario": None}, "A to see B's reset")


def test_a_replica_that_starts_later_starts_with_the_fleet_chaos(replicas):
    clock = ManualClock()
    a = Chaos(clock)
    SharedChaos(a, replicas(), clock=clock, wall=clock)
    a.set("gpt", Fault("reset"), probability=0.5)
    late = Chaos(clock)
    SharedChaos(late, replicas(), clock=clock, wall=clock)
    assert late.state() == a.state() and late.injection("gpt").probability == 0.5


def test_a_chaos_record_this_version_cannot_read_changes_nothing(replicas, redis_prefix):
    clock = ManualClock()
    a = Chaos(clock)
    SharedChaos(a, replicas(), clock=clock, wall=clock)
    a.set("gpt", Fault("reset"))
    raw = redis.Redis.from_url(REDIS_URL)
    raw.publish(f"{redis_prefix}:chaos", b"999\n{not json")
    raw.publish(f"{redis_prefix}:chaos", b'1000\n{"manual": {"x": {"fault": {"kind": "nope"}}}, "playing": null}')
    b = Chaos(clock)
    SharedChaos(b, replicas(), clock=clock, wall=clock)
    assert "gpt" in a.state()["providers"] and "gpt" in b.state()["providers"]
    raw.close()


# -- the answer cache ---------------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def cache_pair(request, replicas):
    clock = ManualClock()

    def make(**kw):
        if request.param == "memory":
            c = AnswerCache(ttl=60, max_entries=100, stale_ttl=600, clock=clock, **kw)
            return c, c
        return tuple(AnswerCache(ttl=60, max_entries=100, stale_ttl=600, clock=clock,
                                 shared=SharedAnswers(replicas(), clock=clock, wall=clock), **kw) for _ in "ab")
    return make, clock


def test_an_answer_cached_on_one_replica_is_fresh_then_stale_on_the_other(cache_pair):
    make, clock = cache_pair
    a, b = make()
    a.put("k", "the answer", "claude", "m", Usage(3, 4))
    answer, fresh = b.get("k")
    assert fresh and (answer.text, answer.provider, answer.model, answer.usage) == ("the answer", "claude", "m",
                                                                                    Usage(3, 4))
    clock.advance(61)
    answer, fresh = b.get("k")
    assert not fresh and answer.text == "the answer"  # past the TTL: a stale stand-in only
    a.clear()
    c, _ = make()
    assert c.get("k") is None and a.get("k") is None


def test_a_disabled_cache_keeps_nothing(cache_pair):
    make, _ = cache_pair
    a, b = make(enabled=False)
    a.put("k", "x", "p", "m", None)
    assert b.get("k") is None


# -- probe leases and the fleet's events ---------------------------------------------------------------------
def test_one_replica_probes_a_provider_per_interval(replicas):
    a, b = ProbeLeases(replicas(), "A"), ProbeLeases(replicas(), "B")
    assert a.take("claude", 60) and not b.take("claude", 60) and b.take("gpt", 60)
    a.share(ProbeEvent(1.0, "claude", True, 12.0))
    assert b.latest()["claude"].latency_ms == 12.0
    assert a.take("gemini", 0.05)
    wait_until(lambda: b.take("gemini", 60), "the short lease to run out")


def test_every_replica_sees_the_fleet_events_and_the_stream_stays_bounded(replicas, redis_prefix):
    wall = ManualClock()
    fleets = [FleetEvents(replicas(), max_events=100, wall=wall) for _ in "ab"]
    local = [Metrics(wall=wall, replica=name) for name in "AB"]
    for metrics, fleet in zip(local, fleets):
        metrics.add_sink(fleet.record)
    for i in range(150):
        for metrics in local:
            metrics.record(RequestEvent(wall(), "provider", "claude", 10.0, 5.0, True, 1, 0, 0, False, False))
    raw = redis.Redis.from_url(REDIS_URL)
    wait_until(lambda: sum(len(f._outbox) for f in fleets) == 0 and raw.xlen(f"{redis_prefix}:events") >= 100,
               "both to send their events")
    # bounded like every Metrics: each view holds the newest 100 of the fleet's 300, the same 100
    wait_until(lambda: [len(f.view.events()) for f in fleets] == [100, 100]
               and fleets[0].view.events() == fleets[1].view.events(), "both views to hold the same newest 100")
    for metrics in local:
        metrics.record(ProbeEvent(wall(), "gpt", True, 1.0))
    for fleet in fleets:
        wait_until(lambda f=fleet: {(e.replica, type(e)) for e in f.view.events()[-2:]} == {
            ("A", ProbeEvent), ("B", ProbeEvent)}, "each view to see the other replica's newest event")
    assert raw.xlen(f"{redis_prefix}:events") < 300 and raw.ttl(f"{redis_prefix}:events") > 0  # MAXLEN ~ and a TTL
    raw.close()
    for fleet in fleets:
        fleet.close()


# -- someone else's garbage in the fleet's Redis ------------------------------------------------------------
GARBAGE = {
    "breaker version not a number": lambda r, p: r.hset(f"{p}:breaker:anthropic-0", mapping={"v": "x", "data": "{}"}),
    "breaker record not JSON": lambda r, p: r.hset(f"{p}:breaker:anthropic-0", mapping={"v": 3, "data": "{nope"}),
    "breaker open_until a string": lambda r, p: r.hset(f"{p}:breaker:anthropic-0", mapping={"v": 3, "data": json.dumps(
        {"state": "open", "failures": 0, "open_until": "soon", "cooldown": 1, "reason": "", "trial": None})}),
    "breaker state unknown": lambda r, p: r.hset(f"{p}:breaker:anthropic-0", mapping={"v": 3, "data": json.dumps(
        {"state": "melted", "failures": 0, "open_until": 0, "cooldown": 0, "reason": "", "trial": "x"})}),
    "breaker key of another type": lambda r, p: r.set(f"{p}:breaker:anthropic-0", "hello"),
    "chaos version not a number": lambda r, p: r.hset(f"{p}:chaos", mapping={"v": "x", "data": "{}"}),
    "chaos key of another type": lambda r, p: r.rpush(f"{p}:chaos", "a"),
    "chaos setting unreadable": lambda r, p: r.hset(f"{p}:chaos", mapping={"v": 9, "data": '{"manual": 3}'}),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_replica_starts_and_answers_whatever_garbage_is_in_its_redis(case, chain, redis_prefix, monkeypatch, caplog):
    import logging

    raw = redis.Redis.from_url(REDIS_URL)
    GARBAGE[case](raw, redis_prefix)
    monkeypatch.setenv("UNDERSTUDY_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("UNDERSTUDY_REDIS_PREFIX", redis_prefix)
    caplog.set_level(logging.WARNING, logger="understudy")
    router, (primary, _) = chain("anthropic", "openai", breaker__fail_max=1)
    answer = router.ask(ChatRequest.ask("hello"))
    assert answer.tier.value == "provider" and answer.provider == "anthropic-0"
    assert router.breakers["anthropic-0"].state == CLOSED and router.chaos.state()["providers"] == {}
    assert router.stores.health()["shared"]["status"] == "ok"  # a bad key is not an outage
    primary.set_default(Fault.http(503))
    router.ask(ChatRequest.ask("opens it"))
    assert router.breakers["anthropic-0"].state == OPEN  # written over the garbage
    router.chaos.set("openai-1", Fault("reset"))
    fresh = Chaos()
    SharedChaos(fresh, router.stores.shared, clock=fresh._clock, wall=router.wall)
    assert "openai-1" in fresh.state()["providers"]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []  # no traceback logged
    raw.close()


@pytest.mark.parametrize("value", ["[1, 2]", '{"text": 5, "provider": "p", "model": "m", "stored_at": 1}',
                                   '{"text": "t", "provider": "p", "model": "m", "stored_at": "NaN"}', "\xff\xfe"])
def test_a_cached_answer_someone_else_wrote_is_a_miss(value, replicas, redis_prefix):
    clock = ManualClock()
    shared = replicas()
    cache = AnswerCache(ttl=60, max_entries=10, stale_ttl=60, clock=clock,
                        shared=SharedAnswers(shared, clock=clock, wall=clock))
    raw = redis.Redis.from_url(REDIS_URL)
    raw.set(f"{redis_prefix}:answer:k", value.encode("latin-1"))
    assert cache.get("k") is None
    raw.close()


def test_events_someone_else_wrote_into_the_stream_are_skipped(replicas, redis_prefix):
    wall = ManualClock()
    raw = redis.Redis.from_url(REDIS_URL)
    for junk in ("{nope", json.dumps({"type": "request", "at": "x"}), json.dumps([1])):
        raw.xadd(f"{redis_prefix}:events", {"e": junk})
    raw.xadd(f"{redis_prefix}:events", {"other": "field"})
    fleet = FleetEvents(replicas(), max_events=100, wall=wall)
    metrics = Metrics(wall=wall, replica="A")
    metrics.add_sink(fleet.record)
    metrics.record(RequestEvent(wall(), "provider", "claude", 10.0, 5.0, True, 1, 0, 0, False, False))
    wait_until(lambda: len(fleet.view.events()) == 1, "the good event to arrive")
    assert fleet.view.summary(900)["requests"] == 1
    fleet.close()
    raw.close()
