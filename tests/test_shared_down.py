"""The fleet's Redis fails, and the product survives it: a private redis-server (tests/redis_server.py)
is frozen (unreachable: every call would time out) or killed and started again empty. Requests keep
being answered on local state, only the first one meets the timeout, /healthz and the banner say
"degraded: shared state unavailable", and it all comes back by itself, with no traceback logged."""

from __future__ import annotations

import json
import logging
import shutil
import uuid

import pytest
import redis

from core.breaker import OPEN
from core.chaos import Chaos
from core.endpoints import healthz
from core.faults import Fault
from core.messages import ChatRequest
from core.store.fleet import SharedChaos
from core.store.shared import Shared
from tests.clock import wait_until
from tests.redis_server import RedisServer


@pytest.fixture
def private_redis(monkeypatch):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the Redis-failure tests start their own")
    server = RedisServer().start()
    monkeypatch.setenv("UNDERSTUDY_REDIS_URL", server.url)
    monkeypatch.setenv("UNDERSTUDY_REDIS_PREFIX", f"down-{uuid.uuid4().hex[:8]}")
    yield server
    server.close()


def shared_status(router) -> str:
    return router.stores.health()["shared"]["status"]


def no_tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


def test_unreachable_redis_costs_one_timeout_then_local_state_answers(private_redis, chain, caplog):
    caplog.set_level(logging.WARNING, logger="understudy")
    router, (primary, _) = chain("anthropic", "openai", cache__enabled=True, breaker__fail_max=1)
    assert router.stores.fleet and router.ask(ChatRequest.ask("before")).provider == "anthropic-0"
    assert healthz(router)[1]["problems"] == []

    private_redis.freeze()
    answers = [router.ask(ChatRequest.ask(f"while Redis is frozen {i}")) for i in range(6)]
    assert all(a.complete and a.provider == "anthropic-0" for a in answers)
    health = router.stores.health()["shared"]
    assert health["status"] == "unavailable" and health["failures"] == 1
    assert health["skipped"] >= 6  # every later cache lookup and store answered at once, without Redis
    code, body = healthz(router)
    assert code == 200 and body["status"] == "degraded" and body["problems"] == ["shared state unavailable"]
    assert body["shared_state"]["status"] == "unavailable" and "password" not in json.dumps(body)

    # Local state carries on: the breaker opens and skips here, a chaos setting is kept here.
    primary.set_default(Fault.http(503))
    assert router.ask(ChatRequest.ask("the primary fails")).provider == "openai-1"
    assert router.breakers["anthropic-0"].state == OPEN
    skipped = router.ask(ChatRequest.ask("the breaker skips it"))
    assert skipped.provider == "openai-1" and skipped.attempts[0].outcome.value == "skipped"
    router.chaos.set("anthropic-0", Fault.http(503))
    assert "anthropic-0" in router.chaos.state()["providers"]

    private_redis.thaw()
    wait_until(lambda: shared_status(router) == "ok", "the router to reconnect by itself")
    assert healthz(router)[1]["problems"] == []
    # The change made during the outage reached the fleet: a replica starting now gets it.
    late = Chaos()
    SharedChaos(late, Shared(private_redis.url, prefix=router.stores.shared.prefix), clock=late._clock,
                wall=router.wall)
    assert "anthropic-0" in late.state()["providers"]
    assert no_tracebacks(caplog) == []


def test_redis_restarted_empty_gets_the_open_breakers_back(private_redis, chain, caplog):
    caplog.set_level(logging.WARNING, logger="understudy")
    router, (primary, _) = chain("anthropic", "openai", breaker__fail_max=1, breaker__reset_timeout=600)
    primary.set_default(Fault.http(503))
    assert router.ask(ChatRequest.ask("opens the breaker")).provider == "openai-1"
    assert router.breakers["anthropic-0"].state == OPEN

    private_redis.kill()
    answer = router.ask(ChatRequest.ask("while Redis is gone"))
    assert answer.provider == "openai-1" and [a.outcome.value for a in answer.attempts][:1] == ["skipped"]
    wait_until(lambda: shared_status(router) == "unavailable", "the router to notice")

    private_redis.start()  # the same port, nothing in it
    wait_until(lambda: shared_status(router) == "ok", "the router to reconnect by itself")
    raw = redis.Redis.from_url(private_redis.url)
    key = f"{router.stores.shared.prefix}:breaker:anthropic-0"
    wait_until(lambda: raw.hget(key, "data") is not None, "the open breaker to be written back")
    assert json.loads(raw.hget(key, "data"))["state"] == OPEN and router.breakers["anthropic-0"].state == OPEN
    raw.close()
    assert no_tracebacks(caplog) == []


def test_reset_breakers_and_clear_cache_pressed_during_an_outage_reach_the_fleet(private_redis, chain):
    router, (primary, _) = chain("anthropic", "openai", breaker__fail_max=1, breaker__reset_timeout=600,
                                 cache__enabled=True)
    assert router.ask(ChatRequest.ask("a cached question")).provider == "anthropic-0"
    primary.set_default(Fault.http(503))
    router.ask(ChatRequest.ask("opens the breaker"))
    assert router.breakers["anthropic-0"].state == OPEN
    raw = redis.Redis.from_url(private_redis.url)
    prefix = router.stores.shared.prefix
    assert list(raw.scan_iter(match=f"{prefix}:answer:*"))

    private_redis.freeze()
    router.ask(ChatRequest.ask("meets the frozen Redis"))
    wait_until(lambda: shared_status(router) == "unavailable", "the router to notice")
    router.reset_breakers()  # an operator's buttons, pressed while Redis is unreachable
    router.clear_cache()
    private_redis.thaw()
    wait_until(lambda: shared_status(router) == "ok", "the router to reconnect by itself")
    key = f"{prefix}:breaker:anthropic-0"
    wait_until(lambda: json.loads(raw.hget(key, "data"))["state"] == "closed", "the reset to reach Redis")
    wait_until(lambda: not list(raw.scan_iter(match=f"{prefix}:answer:*")), "the cleared cache to reach Redis")
    assert router.breakers["anthropic-0"].state == "closed"  # not undone by the resync
    raw.close()


def test_a_redis_password_is_never_shown_even_when_redis_is_down(chain, monkeypatch, caplog):
    from tests.redis_server import free_port

    caplog.set_level(logging.INFO, logger="understudy")
    monkeypatch.setenv("UNDERSTUDY_REDIS_URL", f"redis://admin:s3cret-pw@127.0.0.1:{free_port()}/0")
    router, _ = chain("anthropic")
    assert router.ask(ChatRequest.ask("hello")).complete  # nobody listens there: local state answers
    code, body = healthz(router)
    assert body["problems"] == ["shared state unavailable"] and body["shared_state"]["where"].startswith("redis://***@")
    assert "s3cret-pw" not in json.dumps(body) and "s3cret-pw" not in caplog.text
