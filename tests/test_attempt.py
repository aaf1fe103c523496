"""An attempt's thread and the hand-over of its stream (core/attempt.py), through the router,
against simulated providers."""

from __future__ import annotations

import inspect
import threading

from core.answer import Restart
from core.config import Config
from core.messages import ChatRequest
from core.router import Router
from core.simulator import Fault
from tests.clock import wait_until

Q = ChatRequest.ask("Explain the understudy pattern briefly.")


class Watched:
    """The real adapter, keeping a handle on each stream it opens, to see whether it was closed."""

    def __init__(self, provider) -> None:
        self.provider = provider
        self.streams: list = []

    def __getattr__(self, name):
        return getattr(self.provider, name)

    def stream(self, request):
        opened = self.provider.stream(request)
        self.streams.append(opened)
        return opened


def test_a_stream_handed_over_after_the_caller_stopped_is_closed(sims, adapters):
    first, second = sims("anthropic"), sims("openai")
    first.push(Fault("cut", after=5))
    primary = adapters(first, name="anthropic-0")
    fallback = Watched(adapters(second, name="openai-1", first_token_timeout=5.0, idle_timeout=5.0))
    router = Router(Config(providers=(primary.entry, fallback.entry)), providers=[primary, fallback])
    try:
        stream = router.stream(Q)
        for event in stream:
            if isinstance(event, Restart):
                break  # the fallback has been started; the caller reads no further
        # Its thread hands its stream over at the first text, then ends; nobody reads the hand-over.
        wait_until(lambda: fallback.streams and not any(
            t.name == "attempt-openai-1" for t in threading.enumerate()), "the fallback's hand-over")
        (opened,) = fallback.streams
        assert inspect.getgeneratorstate(opened) == inspect.GEN_SUSPENDED  # handed over, still open
        stream.close()  # the caller stops: the Stop button, or leaving the page
        assert inspect.getgeneratorstate(opened) == inspect.GEN_CLOSED
    finally:
        router.close()
