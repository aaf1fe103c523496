"""The answer cache: keys, freshness on an injected clock, bounds, single flight."""

from __future__ import annotations

import threading

from core.cache import AnswerCache, cache_key
from core.messages import ChatRequest, Message


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_key_covers_conversation_system_and_settings_but_not_trailing_whitespace():
    base = ChatRequest.ask("What is  a hedge?", system="terse")
    assert cache_key(base) == cache_key(ChatRequest.ask("What is  a hedge? \n", system="terse "))
    assert cache_key(base) != cache_key(ChatRequest.ask("What is a hedge?", system="verbose"))
    assert cache_key(base) != cache_key(ChatRequest.ask("What is a hedge?", system="terse", temperature=0.1))
    assert cache_key(base) != cache_key(ChatRequest.ask("What is a hedge?", system="terse", max_tokens=5))
    longer = ChatRequest(messages=(Message("user", "hi"), Message("assistant", "hello"),
                                   Message("user", "What is  a hedge?")), system="terse")
    assert cache_key(base) != cache_key(longer)
    assert cache_key(ChatRequest.ask("Café")) == cache_key(ChatRequest.ask("Cafe\u0301"))  # NFC


def test_fresh_then_stale_then_gone():
    clock = Clock()
    cache = AnswerCache(ttl=10, max_entries=10, stale_ttl=100, clock=clock)
    cache.put("k", "answer", "p", "m", None)
    assert cache.get("k")[1] is True
    clock.now = 11
    answer, fresh = cache.get("k")
    assert answer.text == "answer" and fresh is False
    clock.now = 101
    assert cache.get("k") is None


def test_least_recently_used_is_dropped_at_the_bound():
    cache = AnswerCache(ttl=10, max_entries=2, stale_ttl=10, clock=Clock())
    cache.put("a", "1", "p", "m", None)
    cache.put("b", "2", "p", "m", None)
    cache.get("a")
    cache.put("c", "3", "p", "m", None)
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and len(cache) == 2


def test_disabled_cache_stores_nothing():
    cache = AnswerCache(ttl=10, max_entries=2, stale_ttl=10, clock=Clock(), enabled=False)
    cache.put("a", "1", "p", "m", None)
    assert cache.get("a") is None


def test_one_leader_per_key_and_followers_get_its_result():
    cache = AnswerCache(ttl=10, max_entries=10, stale_ttl=10, clock=Clock())
    roles, barrier = [], threading.Barrier(16)

    def join():
        barrier.wait()
        roles.append(cache.join("k"))

    threads = [threading.Thread(target=join) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leaders = [f for f, leader in roles if leader]
    assert len(leaders) == 1 and len({id(f) for f, _ in roles}) == 1
    cache.land("k", leaders[0], "the result")
    assert roles[0][0].wait(1) == "the result"
    assert cache.join("k")[1] is True  # landed: the next request leads a new flight


def test_concurrent_puts_and_gets_do_not_corrupt_the_store():
    cache = AnswerCache(ttl=10, max_entries=50, stale_ttl=10, clock=Clock())
    errors = []

    def hammer(n):
        try:
            for i in range(2000):
                cache.put(f"{n}-{i % 97}", "x", "p", "m", None)
                cache.get(f"{(n + 1) % 8}-{i % 89}")
        except Exception as e:  # noqa: BLE001 — asserted below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 50
