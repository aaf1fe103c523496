"""The one-line failover story, from real answers: the router's own results on simulated providers."""

from __future__ import annotations

from dataclasses import asdict

from core.answer import Answer
from core.messages import ChatRequest
from core.simulator import Fault
from core.story import story

Q = ChatRequest.ask("Explain the understudy pattern briefly.")


def meta_of(router, request=Q) -> dict:
    """What the chat keeps with an answer: the result's dict and its switches."""
    answer = Answer()
    for event in router.stream(request):
        answer.add(event)
    meta = answer.result.as_dict()
    meta["switches"] = [asdict(s) for s in answer.switches]
    return meta


def test_a_plain_answer_has_no_story(chain):
    router, _ = chain("anthropic", "openai")
    assert story(meta_of(router)) is None


def test_a_failover_reads_who_failed_how_and_who_answered(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(529))
    line = story(meta_of(router))
    assert line.startswith("anthropic-0 overloaded (529) → openai-1 answered · ")
    assert line.count("anthropic-0") == 1  # retried, told once


def test_a_mid_answer_break_reads_as_a_restart(chain):
    router, (first, second) = chain("anthropic", "gemini")
    first.push(Fault("cut", after=10))
    assert story(meta_of(router)).startswith("anthropic-0 broke off mid-answer → gemini-1 restarted the answer · ")


def test_a_breaker_skip_and_a_cache_hit_read_plainly(chain):
    router, (first, second) = chain("anthropic", "openai")
    meta_of(router)  # answered and cached
    assert story(meta_of(router)).startswith("Served from the cache · asked ")
    router.breakers["anthropic-0"].hold_off(60, "test: kept out")
    line = story(meta_of(router, ChatRequest.ask("a new question")))
    assert line.startswith("anthropic-0 skipped (breaker open) → openai-1 answered")


def test_stopped_and_unavailable_answers_say_so():
    assert story({"tier": "provider", "stopped": True, "provider": "claude"}) == \
        "Stopped by you · the words so far are claude's"
    assert story({"tier": "unavailable", "attempts": [
        {"provider": "claude", "outcome": "error", "error_kind": "timeout", "detail": "no first token"}]}) == \
        "claude timed out → no provider could answer; your question is kept"


def test_a_retry_on_the_same_provider_reads_as_one(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault.http(500))
    assert story(meta_of(router)).startswith("anthropic-0 had a server error (500) → retried, anthropic-0 answered · ")
