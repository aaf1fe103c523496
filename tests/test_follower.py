"""A request waiting on an identical one in flight (issue 8, item 9): it is never told "all of
our AI providers are unavailable" while the other one is still answering. It waits while the
leader's text keeps coming, and asks on its own when the leader stops or goes quiet."""

from __future__ import annotations

import threading

from core.cache import Flight
from core.messages import ChatRequest
from core.router import Delta, Done
from tests.clock import inside, wait_until

Q = ChatRequest.ask("Why do identical questions share one answer?")
# The request deadline is short next to how long the leader streams (about 60 pieces, 50 ms
# apart, after its first one), so a follower's deadline always passes while the leader is answering.
REQUEST = 1.5


def follow(router):
    """Ask Q in a thread once the leader holds the flight; returns (thread, results)."""
    got = []
    follower = threading.Thread(target=lambda: got.append(router.ask(Q)))
    follower.start()
    wait_until(lambda: inside(follower, Flight.wait), "the follower to wait on the leader")
    return follower, got


def test_a_follower_waits_past_its_deadline_while_the_leader_is_still_streaming(chain):
    router, (server,) = chain("ollama", timeouts={"idle_timeout": 5.0}, server_kw={"chunk_delay": 0.05},
                              timeouts__request=REQUEST)
    leader = router.stream(Q)
    assert isinstance(next(leader), Delta)  # mid-answer, holding the flight
    follower, got = follow(router)
    evs = list(leader)  # the leader streams on, well past the follower's deadline
    follower.join(timeout=30)
    (done,) = [e for e in evs if isinstance(e, Done)]
    (result,) = got
    assert done.result.tier == "provider" and done.result.complete
    assert result.tier == "cache" and result.complete and result.text == done.result.text
    assert len(server.chat_requests()) == 1  # the follower asked no provider itself
    assert router.followups.list() == []  # and nothing was kept as if nobody could answer


def test_a_follower_gets_the_result_even_if_the_leaders_caller_never_closes_its_stream(chain):
    router, (server,) = chain("openai", server_kw={"chunk_delay": 0.05}, timeouts__request=REQUEST)
    leader = router.stream(Q)
    assert isinstance(next(leader), Delta)
    follower, got = follow(router)
    while not isinstance(event := next(leader), Done):  # takes Done, then leaves the stream open
        pass
    follower.join(timeout=30)
    (result,) = got
    assert result.tier == "cache" and result.complete and result.text == event.result.text
    assert len(server.chat_requests()) == 1 and router.followups.list() == []
    leader.close()


def test_a_follower_asks_on_its_own_when_the_leader_goes_quiet(chain):
    router, (server,) = chain("gemini", timeouts__request=REQUEST)
    leader = router.stream(Q)
    assert isinstance(next(leader), Delta)  # then its caller stops reading, without closing it
    follower, got = follow(router)
    follower.join(timeout=30)
    (result,) = got
    assert result.tier == "provider" and result.complete and result.provider == "gemini-0"
    assert len(server.chat_requests()) == 2 and router.followups.list() == []
    leader.close()
