"""One client's bad input is that client's problem. Requests are checked when they are built, with a
clear one-line message; and should a request an SDK can't send still reach an adapter, the SDK's
refusal (raised before a byte is sent) is the request's fault, `bad_request`, never the provider's
health: it must not open a breaker for everyone."""

from __future__ import annotations

import json

import pytest

from core.errors import ErrorKind, ProviderError
from core.messages import ChatRequest, InvalidRequest, Message
from core.simulator import Fault
from tests.conftest import KINDS
from tests.test_cli import config, run

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("settings,field", [
    ({"temperature": NAN}, "temperature"), ({"temperature": INF}, "temperature"),
    ({"temperature": -INF}, "temperature"), ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"), ({"temperature": True}, "temperature"),
    ({"temperature": "0.7"}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": -5}, "max_tokens"), ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": NAN}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 10**12}, "max_tokens"), ({"system": None}, "system"),
])
def test_bad_settings_are_refused_when_the_request_is_built(settings, field):
    with pytest.raises(InvalidRequest) as caught:
        ChatRequest.ask("hi", **settings)
    message = str(caught.value)
    assert message.startswith(field) and "\n" not in message
    assert isinstance(caught.value, ValueError)  # callers that handle ValueError keep working


def test_bad_messages_are_refused_when_the_request_is_built():
    with pytest.raises(InvalidRequest, match=r"messages\[1\]"):
        ChatRequest(messages=(Message("user", "hi"), Message("robot", "beep")))
    with pytest.raises(InvalidRequest, match=r"messages\[0\]"):
        ChatRequest(messages=({"role": "user", "content": "hi"},))


@pytest.mark.parametrize("settings", [{}, {"temperature": 0}, {"temperature": 2}, {"temperature": 0.7},
                                      {"temperature": 1}, {"max_tokens": 1}, {"max_tokens": 4096}])
def test_good_settings_are_kept_as_given(settings):
    request = ChatRequest.ask("hi", **settings)
    assert all(getattr(request, k) == v for k, v in settings.items())


def test_the_jsonl_cli_answers_a_nan_with_one_clear_line_and_carries_on(sims, tmp_path):
    server = sims("openai")
    lines = ('{"messages": [{"role": "user", "content": "hot"}], "temperature": NaN}\n'
             '{"messages": [{"role": "user", "content": "long"}], "max_tokens": 1e400}\n'
             'fine\n')
    proc = run(["ask", "--jsonl", "--config", config(tmp_path, [server])], tmp_path, stdin=lines)
    nan, huge, fine = (json.loads(line) for line in proc.stdout.splitlines())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert nan["line"] == 1 and "NaN" in nan["error"]
    assert huge["line"] == 2 and "1e400" in huge["error"], huge
    assert fine["complete"] and len(server.chat_requests()) == 1


def test_the_cli_refuses_an_absurd_max_tokens_in_one_line(sims, tmp_path):
    server = sims("openai")
    proc = run(["ask", "--max-tokens", "2000000", "--config", config(tmp_path, [server]), "hi"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "max_tokens" in proc.stderr
    assert server.chat_requests() == []


# -- past the edge: the adapters' own mapping ------------------------------------------------------------------

def unchecked(**settings) -> ChatRequest:
    """A request built without the edge's checks, as a caller that skips them would hand it over
    (every field set directly on a frozen ChatRequest): what the adapters must still survive."""
    request = object.__new__(ChatRequest)
    fields = {"messages": (Message("user", "What is a hedge?"),), "system": "", "temperature": None,
              "max_tokens": None, **settings}
    for name, value in fields.items():
        object.__setattr__(request, name, value)
    return request


@pytest.mark.parametrize("kind", KINDS)
def test_an_sdk_that_refuses_to_send_is_a_bad_request_not_a_sick_provider(kind, sims, adapters):
    # Each of the four SDKs raises on a NaN max_tokens before sending anything: httpx's strict
    # JSON encoder (ValueError) or google-genai's pydantic validation (ValidationError).
    server = sims(kind)
    with pytest.raises(ProviderError) as caught:
        list(adapters(server).stream(unchecked(max_tokens=NAN)))
    e = caught.value
    assert e.kind is ErrorKind.BAD_REQUEST and not e.kind.health, e
    assert "could not be sent" in e.message and "\n" not in e.message
    assert server.chat_requests() == []


@pytest.mark.parametrize("kind", KINDS)
def test_garbage_from_the_provider_before_its_first_event_is_still_its_fault(kind, sims, adapters):
    # The other side of the line: once the request is on the wire, a bad reply is the provider's.
    server = sims(kind)
    server.push(Fault("malformed", after=0), Fault("reset"))
    provider = adapters(server)
    with pytest.raises(ProviderError) as malformed:
        list(provider.stream(ChatRequest.ask("hi")))
    with pytest.raises(ProviderError) as reset:
        list(provider.stream(ChatRequest.ask("hi")))
    assert malformed.value.kind.health and malformed.value.kind is not ErrorKind.BAD_REQUEST, malformed.value
    assert reset.value.kind is ErrorKind.CONNECTION, reset.value


def test_nan_temperature_requests_never_open_a_breaker(chain):
    router, (first, second) = chain("openai", "ollama", breaker__fail_max=3)
    for _ in range(4):
        result = router.ask(unchecked(temperature=NAN))
        assert [a.error_kind for a in result.attempts] == ["bad_request", "bad_request"]
    assert {name: b.state for name, b in router.breakers.items()} == {"openai-0": "closed", "ollama-1": "closed"}
    assert first.chat_requests() == second.chat_requests() == []
    served = router.ask(ChatRequest.ask("And now a good one?"))
    assert served.tier == "provider" and served.provider == "openai-0" and served.complete


@pytest.mark.parametrize("where", ["question", "system"])
def test_a_lone_surrogate_is_refused_when_the_request_is_built(where):
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        if where == "question":
            ChatRequest.ask("half a pair: \ud800")
        else:
            ChatRequest.ask("fine", system="\udfff")
