"""The in-order chain: the first provider that answers wins; failures are recorded in `attempts`."""

from __future__ import annotations

import pytest

from core.chat import ChatRequest
from core.config import Config, Policy
from core.router import Delta, Done, Restart, Router
from core.simulator import Fault
from tests.conftest import KINDS

Q = ChatRequest.ask("How do I reset my password?")


@pytest.fixture
def chain(sims, adapters):
    """chain("anthropic", "openai") -> (router, [servers])."""
    routers = []

    def make(*kinds, **policy):
        servers = [sims(k) for k in kinds]
        providers = [adapters(s, name=f"{s.kind}-{i}") for i, s in enumerate(servers)]
        values = {s: dict(v) for s, v in Policy.defaults().values.items()}
        for key, value in policy.items():
            section, setting = key.split("__")
            values[section][setting] = value
        router = Router(Config(providers=tuple(p.entry for p in providers), policy=Policy(values)),
                        providers=providers)
        routers.append(router)
        return router, servers

    yield make


def events(router, request=Q):
    return list(router.stream(request))


HEALTH_FAULTS = [Fault.http(529), Fault.http(503), Fault.http(500), Fault.http(429, retry_after=1), Fault("reset"),
                 Fault("silence", seconds=30), Fault("cut", after=3), Fault("no_end", after=3),
                 Fault("error_event", after=0)]


@pytest.mark.parametrize("fault", HEALTH_FAULTS, ids=lambda f: f"{f.kind}{f.status or ''}")
def test_second_answers_when_first_fails_with_a_health_error(fault, chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(fault)
    result = router.ask(Q)
    assert result.tier == "provider" and result.complete
    assert result.provider == "openai-1" and result.model == "openai-test"
    assert "How do I reset my password?" in result.text
    assert result.usage.output_tokens > 0
    failed, ok = result.attempts
    assert (failed.provider, failed.outcome) == ("anthropic-0", "error") and failed.error_kind
    assert (ok.provider, ok.outcome, ok.error_kind) == ("openai-1", "ok", None)
    assert ok.ttft_ms is not None and ok.latency_ms >= ok.ttft_ms


@pytest.mark.parametrize("first_kind", KINDS)
def test_every_kind_can_be_the_failing_primary(first_kind, chain):
    backup = "ollama" if first_kind != "ollama" else "gemini"
    router, (first, second) = chain(first_kind, backup)
    first.set_default(Fault.http(503))
    result = router.ask(Q)
    assert result.provider == f"{backup}-1" and result.complete
    assert [a.error_kind for a in result.attempts] == ["overloaded", None]


def test_healthy_primary_answers_and_backup_is_not_called(chain):
    router, (first, second) = chain("gemini", "anthropic")
    result = router.ask(Q)
    assert result.provider == "gemini-0" and len(result.attempts) == 1
    assert second.chat_requests() == []


def test_a_decline_is_not_routed_around(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.push(Fault("refusal", after=0))
    result = router.ask(Q)
    assert result.tier == "declined" and not result.complete
    assert "declined" in result.text and "anthropic-0" in result.text
    assert len(first.chat_requests()) == 1 and second.chat_requests() == []
    assert result.attempts[0].outcome == "declined"


def test_context_length_goes_to_the_next_provider_without_resending(chain):
    router, (first, second) = chain("openai", "gemini")
    first.set_default(Fault.http(flavour="context_length"))
    result = router.ask(Q)
    assert result.provider == "gemini-1" and result.complete
    assert len(first.chat_requests()) == 1
    assert result.attempts[0].error_kind == "context_length"


def test_a_stream_cut_mid_answer_restarts_on_the_next_provider(chain):
    router, (first, second) = chain("anthropic", "ollama")
    first.push(Fault("cut", after=20))
    evs = events(router)
    restart_at = next(i for i, e in enumerate(evs) if isinstance(e, Restart))
    before = "".join(e.text for e in evs[:restart_at] if isinstance(e, Delta))
    after = "".join(e.text for e in evs[restart_at:] if isinstance(e, Delta))
    assert before and "anthropic-test" in before  # the partial answer was shown ...
    assert evs[restart_at] == Restart("anthropic-0", "ollama-1", "stream_broken")  # ... then replaced
    result = evs[-1].result
    assert isinstance(evs[-1], Done) and result.complete and result.text == after
    assert "ollama-test" in after and after.rstrip().endswith("w49")


def test_when_nothing_answers_the_reply_is_honest_and_keeps_the_question(chain):
    router, servers = chain("openai", "gemini")
    for s in servers:
        s.set_default(Fault.http(503))
    result = router.ask(Q)
    assert result.tier == "unavailable" and not result.complete and result.provider is None
    assert "How do I reset my password?" in result.text
    assert [a.outcome for a in result.attempts] == ["error", "error"]


def test_partial_text_is_withdrawn_when_every_provider_breaks_mid_answer(chain):
    router, servers = chain("openai", "ollama")
    for s in servers:
        s.set_default(Fault("cut", after=5))
    evs = events(router)
    assert [type(e).__name__ for e in evs if not isinstance(e, Delta)] == ["Restart", "Restart", "Done"]
    assert evs[-1].result.tier == "unavailable" and not evs[-1].result.complete


def test_a_truncated_answer_is_never_complete(chain):
    router, (only,) = chain("gemini")
    only.push(Fault("no_end", after=40))
    result = router.ask(Q)
    assert not result.complete and result.tier == "unavailable"
    only.push(Fault("length"))
    result = router.ask(Q)
    assert result.tier == "provider" and not result.complete and result.finish_reason == "length"
    assert "max-tokens" in result.notice


def test_the_request_deadline_is_shared_by_the_whole_chain(chain):
    ticks = iter(range(0, 1000, 6))  # every look at the clock finds 6 s gone by
    router, (first, second) = chain("openai", "gemini", timeouts__request=10.0)
    router.clock = lambda: float(next(ticks))
    first.set_default(Fault.http(503))
    result = router.ask(Q)
    assert [a.outcome for a in result.attempts] == ["error", "skipped"]
    assert second.chat_requests() == []


def test_as_dict_has_the_documented_fields(chain):
    router, _ = chain("ollama")
    d = router.ask(Q).as_dict()
    assert {"text", "complete", "tier", "provider", "model", "usage", "attempts", "elapsed_ms"} <= set(d)
    assert set(d["usage"]) == {"input_tokens", "output_tokens"}
    assert {"provider", "model", "outcome", "error_kind", "latency_ms", "ttft_ms"} <= set(d["attempts"][0])


def test_status_probes_each_entry_and_masks_keys(chain):
    router, (first, second) = chain("anthropic", "gemini")
    second.set_default(Fault.http(503))
    rows = router.status()
    assert [(r.name, r.health) for r in rows] == [("anthropic-0", "ok"), ("gemini-1", "down")]
    assert all(r.key == "sk-…cdef" for r in rows)
    assert "overloaded" in rows[1].detail
