"""Failover, defined once (core/failover.py): every answer that came from further down the chain,
whether the provider before it failed or its breaker turned the request away."""

from __future__ import annotations

from core.attempt import Attempt, Outcome
from core.endpoints import prometheus
from core.failover import passed_over
from core.messages import ChatRequest
from core.simulator import Fault


def test_passed_over_counts_failed_and_skipped_providers_that_did_not_answer():
    def a(provider, outcome):
        return Attempt(provider, "m", outcome)

    assert passed_over([a("claude", Outcome.OK)]) == 0
    assert passed_over([a("claude", Outcome.SKIPPED), a("gpt", Outcome.OK)]) == 1
    assert passed_over([a("claude", Outcome.ERROR), a("gpt", Outcome.SKIPPED), a("gemini", Outcome.OK)]) == 2
    assert passed_over([a("claude", Outcome.ERROR), a("claude", Outcome.OK)]) == 0  # a retry on the same one
    assert passed_over([a("claude", Outcome.CANCELLED), a("gpt", Outcome.OK)]) == 0  # a hedge race, lost
    assert passed_over([a("claude", Outcome.ERROR), a("gpt", Outcome.DECLINED)]) == 1


def test_every_answer_from_the_fallback_is_a_failover_breaker_skips_included(chain):
    router, (primary, fallback) = chain("anthropic", "openai", breaker__fail_max=2, hedging__enabled=False)
    primary.set_default(Fault.http(500))
    results = [router.ask(ChatRequest.ask(f"question {i}")) for i in range(5)]
    assert {r.provider for r in results} == {"openai-1"}
    # The first reached the primary and failed (its retry too); the breaker then opened and the rest skipped it.
    skipped = [r for r in results if any(a.outcome is Outcome.SKIPPED for a in r.attempts)]
    assert len(skipped) >= 3 and all(a.outcome is not Outcome.ERROR for r in skipped for a in r.attempts)
    router.ask(ChatRequest.ask("question 0"))  # a cache hit: no provider was passed over
    summary = router.metrics.summary(900)
    assert summary["requests"] == 6 and summary["failovers"] == 5
    assert router.metrics.totals()["failovers"] == 5
    assert "understudy_failovers_total 5\n" in prometheus(router)
