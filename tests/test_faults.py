"""One way to play a fault (core/faults.py), whether a simulated server plays it or the chaos
transport does under the real SDK."""

from __future__ import annotations

import importlib

import pytest

from core.chaos import Chaos, transport_for
from core.errors import ErrorKind, ProviderError
from core.faults import Fault
from core.messages import ChatRequest
from core.providers import build, kinds
from tests.conftest import KEY, KINDS, drain, entry_for

Q = ChatRequest.ask("Short answer, please.")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("player", ["server", "chaos"])
@pytest.mark.parametrize("fault", ["cut", "error_event", "no_end"])
def test_a_fault_after_more_chunks_than_the_answer_has_strikes_before_the_end(fault, player, kind, sims):
    server = sims(kind, responder=lambda q, m: "three short words")
    chaos = Chaos()
    provider = build(entry_for(server), transport=transport_for(kind, kind, chaos))
    try:
        if player == "server":
            server.push(Fault(fault, after=10))
        else:
            chaos.set(kind, Fault(fault, after=10))
        with pytest.raises(ProviderError) as caught:
            drain(provider, Q)
        assert caught.value.kind is ErrorKind.STREAM_BROKEN
    finally:
        provider.close()


@pytest.mark.parametrize("kind", ["openai", "ollama"])  # one on each HTTP library
def test_with_no_fault_the_transport_hands_back_the_real_response(kind, sims):
    server = sims(kind)
    lib = importlib.import_module(kinds()[kind].http)
    path = {"openai": "/chat/completions", "ollama": "/api/chat"}[kind]
    request = lib.Request("POST", server.url + path, headers={"authorization": f"Bearer {KEY}"},
                          json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    chaos, plain = Chaos(), lib.HTTPTransport()
    transport = transport_for(kind, kind, chaos)
    try:
        real = plain.handle_request(request)
        passed = transport.handle_request(request)
        assert passed.status_code == real.status_code == 200
        assert type(passed.stream) is type(real.stream)  # not wrapped chunk by chunk
        chaos.set(kind, Fault("cut", after=3))
        assert type(transport.handle_request(request).stream) is not type(real.stream)
    finally:
        transport.close()
        plain.close()
