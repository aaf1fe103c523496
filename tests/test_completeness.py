"""When is an answer whole? Each protocol's finish reason, through its real SDK against the simulated
server, decides: a normal ending is complete (and cached), the caller's own token limit is an
honest incomplete answer, a policy ending is a decline, and every other ending (including ones
never seen before) is a broken stream that fails over and is never cached or shown as whole."""

from __future__ import annotations

import warnings

import pytest

from core.errors import ErrorKind, ProviderError
from core.messages import ChatRequest, StreamEnd
from core.router import Delta, Done, Restart
from core.simulator import Fault
from tests.conftest import drain

NORMAL = {"anthropic": ("end_turn", "stop_sequence"), "openai": ("stop",), "gemini": ("STOP",), "ollama": ("stop",)}
LIMIT = {"anthropic": "max_tokens", "openai": "length", "gemini": "MAX_TOKENS", "ollama": "length"}
POLICY = {"anthropic": ("refusal",), "openai": ("content_filter",),
          "gemini": ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII")}
ABNORMAL = {
    "anthropic": ("pause_turn", "model_context_window_exceeded", "tool_use", "never_seen_before"),
    "openai": ("error", "abort", "tool_calls", "never_seen_before"),
    "gemini": ("OTHER", "MALFORMED_FUNCTION_CALL", "FINISH_REASON_UNSPECIFIED", "NEVER_SEEN_BEFORE"),
    "ollama": ("unload", "load", "never_seen_before"),
}


def cases(table):
    return [(kind, reason) for kind, reasons in table.items()
            for reason in ((reasons,) if isinstance(reasons, str) else reasons)]


def other_kind(kind: str) -> str:
    return "gemini" if kind == "openai" else "openai"


Q = ChatRequest.ask("Is this answer whole?")


# -- the adapters ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,reason", cases(NORMAL))
def test_a_normal_ending_is_complete(kind, reason, sims, adapters):
    server = sims(kind)
    server.push(Fault.finish(reason))
    text, end = drain(adapters(server), Q)
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop" and end.native_reason == reason
    assert text.endswith("w49")


@pytest.mark.parametrize("kind,reason", cases(LIMIT))
def test_the_callers_own_limit_is_an_honest_incomplete_answer(kind, reason, sims, adapters):
    server = sims(kind)
    server.push(Fault.finish(reason, after=3))
    text, end = drain(adapters(server), Q)
    assert end.finish_reason == "length" and text


@pytest.mark.parametrize("kind,reason", cases(POLICY))
def test_a_policy_ending_is_a_decline(kind, reason, sims, adapters):
    server = sims(kind)
    server.push(Fault.finish(reason, after=3))
    with pytest.raises(ProviderError) as caught:
        drain(adapters(server), Q)
    assert caught.value.kind is ErrorKind.CONTENT_FILTERED and reason in caught.value.message


@pytest.mark.parametrize("kind,reason", cases(ABNORMAL))
def test_any_other_ending_is_a_broken_stream(kind, reason, sims, adapters):
    server = sims(kind)
    server.push(Fault.finish(reason, after=3))
    with pytest.raises(ProviderError) as caught:
        drain(adapters(server), Q)
    assert caught.value.kind is ErrorKind.STREAM_BROKEN and reason in caught.value.message
    assert caught.value.kind.health and caught.value.kind.fails_over


# -- the router ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,reason", cases(ABNORMAL))
def test_an_abnormal_ending_fails_over_and_the_partial_text_is_never_shown_as_whole(kind, reason, chain):
    router, (first, second) = chain(kind, other_kind(kind))
    first.push(Fault.finish(reason, after=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        evs = list(router.stream(Q))
    result = evs[-1].result
    assert isinstance(evs[-1], Done)
    assert result.tier == "provider" and result.complete and result.provider == f"{second.kind}-1"
    assert result.attempts[0].error_kind == "stream_broken" and result.attempts[0].provider == f"{kind}-0"
    restarts = [e for e in evs if isinstance(e, Restart)]
    assert [(r.failed, r.provider) for r in restarts] == [(f"{kind}-0", f"{second.kind}-1")]
    after = evs.index(restarts[0])
    assert "".join(e.text for e in evs[after:] if isinstance(e, Delta)) == result.text
    assert f"from {second.kind}-test" in result.text and f"from {kind}-test" not in result.text


@pytest.mark.parametrize("kind,reason", cases(ABNORMAL))
def test_an_abnormal_ending_is_never_cached(kind, reason, chain):
    router, (only,) = chain(kind)
    only.push(Fault.finish(reason, after=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = router.ask(Q)
    assert not first.complete and first.tier not in ("provider", "cache")
    again = router.ask(Q)  # the server answers normally now
    assert again.tier == "provider" and again.complete and again.text.endswith("w49")
    assert len(only.chat_requests()) == 2


@pytest.mark.parametrize("kind,reason", cases(LIMIT))
def test_a_length_cut_is_reported_incomplete_and_never_cached(kind, reason, chain):
    router, (only,) = chain(kind)
    only.push(Fault.finish(reason, after=3))
    first = router.ask(Q)
    assert first.tier == "provider" and not first.complete and first.finish_reason == "length"
    assert "max-tokens" in first.notice
    again = router.ask(Q)
    assert again.tier == "provider" and again.complete and len(only.chat_requests()) == 2


@pytest.mark.parametrize("kind,reason", cases(POLICY))
def test_a_policy_ending_is_declined_not_routed_around_nor_cached(kind, reason, chain):
    router, (first, second) = chain(kind, other_kind(kind))
    first.push(Fault.finish(reason, after=3))
    declined = router.ask(Q)
    assert declined.tier == "declined" and not declined.complete and reason in declined.notice
    assert second.chat_requests() == []
    again = router.ask(Q)
    assert again.tier == "provider" and again.provider == f"{kind}-0" and again.complete


@pytest.mark.parametrize("kind,reason", cases(NORMAL))
def test_a_normal_ending_is_complete_and_cached(kind, reason, chain):
    router, (only,) = chain(kind)
    only.push(Fault.finish(reason))
    first = router.ask(Q)
    assert first.tier == "provider" and first.complete and first.finish_reason == "stop"
    again = router.ask(Q)
    assert again.tier == "cache" and again.text == first.text and len(only.chat_requests()) == 1
