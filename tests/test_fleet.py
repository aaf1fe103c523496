"""The fleet behaves as one: two replica processes (tests/replica.py, built as the app builds its
router) on one real Redis and one real PostgreSQL share chaos, breakers (one half-open trial for
the whole fleet), the answer cache, the dashboard's traffic and probing. The simulated providers
run here, in the test process: the upstream both replicas call, as a real provider would be."""

from __future__ import annotations

import threading

import pytest

from core.faults import Fault
from tests.clock import wait_until
from tests.conftest import KEY, toml_for
from tests.replica import Replica

PRIMARY, FALLBACK = "anthropic-0", "openai-1"
HTTP_503 = {"kind": "status", "status": 503, "flavour": "unavailable"}


@pytest.fixture
def fleet(sims, fleet_env, tmp_path):
    """fleet(extra_toml) -> (A, B, [primary server, fallback server])."""
    started: list[Replica] = []

    def start(extra: str = "[hedging]\nenabled = false\n", *, primary_first_token: float | None = None):
        servers = [sims("anthropic"), sims("openai")]
        text = toml_for(servers, extra)
        if primary_first_token is not None:
            text = text.replace("first_token_timeout = 0.8", f"first_token_timeout = {primary_first_token}", 1)
        config = tmp_path / f"fleet-{len(started)}.toml"
        config.write_text(text, encoding="utf-8")
        env = {**fleet_env, "SIM_KEY": KEY, "UNDERSTUDY_DATA_DIR": str(tmp_path / "data")}
        pair = [Replica(config, name=name, env=env, wait=False) for name in ("A", "B")]
        started.extend(pair)
        for replica in pair:  # both processes start up at once, as a fleet does
            replica.ready()
        return pair[0], pair[1], servers

    yield start
    for replica in started:
        replica.stop()  # all shut down at once; then each is waited for
    for replica in started:
        replica.close()


def test_chaos_set_on_one_replica_applies_to_the_next_request_on_the_other(fleet):
    a, b, (primary, fallback) = fleet()
    a("chaos_set", provider=PRIMARY, fault=HTTP_503)
    # B's banner reads chaos.state(): once B's copy has it, B shows it (pages/shared.py banners()).
    wait_until(lambda: PRIMARY in b("chaos_state")["providers"], "B to see the chaos A set")
    before = len(primary.chat_requests())
    answer = b("ask", q="a question after chaos")
    assert answer["provider"] == FALLBACK and answer["complete"]
    assert [x["error_kind"] for x in answer["attempts"] if x["provider"] == PRIMARY][:1] == ["overloaded"]
    assert len(primary.chat_requests()) == before  # injected under B's SDK: the real primary never saw it
    a("chaos_reset")
    wait_until(lambda: not b("chaos_state")["providers"], "B to see the reset")
    assert b("ask", q="a question after the reset")["provider"] == PRIMARY


def test_a_breaker_opened_by_failures_on_one_replica_is_open_on_the_other(fleet):
    a, b, (primary, fallback) = fleet()
    primary.set_default(Fault.http(503))
    for i in range(3):  # fail_max 3: each request tries the primary twice (max_attempts 2)
        assert a("ask", q=f"opening question {i}")["provider"] == FALLBACK
        if a("breaker", name=PRIMARY)["state"] == "open":
            break
    assert a("breaker", name=PRIMARY)["state"] == "open"
    assert b("wait_breaker", name=PRIMARY, state="open", timeout=10)["seen"]
    calls = len(primary.chat_requests())
    answer = b("ask", q="a question on B")
    assert answer["provider"] == FALLBACK
    assert [x["outcome"] for x in answer["attempts"] if x["provider"] == PRIMARY] == ["skipped"]
    assert len(primary.chat_requests()) == calls  # B never called the provider A found broken


def test_the_fleet_sends_exactly_one_half_open_trial(fleet):
    # The trial's first token is held until the other nine questions have been answered by the
    # fallback (state the test waits on), so it is in flight the whole time both replicas ask.
    a, b, (primary, fallback) = fleet("[hedging]\nenabled = false\n[breaker]\nreset_timeout = 1.0\n",
                                      primary_first_token=60.0)
    primary.set_default(Fault.http(503))
    for i in range(3):
        a("ask", q=f"opening question {i}")
    assert b("wait_breaker", name=PRIMARY, state="open", timeout=10)["seen"]
    held = threading.Event()

    def hold_the_first_token() -> float:
        held.wait(60)
        return 0.0

    primary.first_delay = hold_the_first_token
    primary.set_default(Fault())
    wait_until(lambda: a("breaker", name=PRIMARY)["retry_in"] == 0 and b("breaker", name=PRIMARY)["retry_in"] == 0,
               "the cooldown to end on both replicas")
    calls, answered = len(primary.chat_requests()), len(fallback.chat_requests())

    answers: dict[str, list] = {}
    workers = [threading.Thread(target=lambda r=r: answers.__setitem__(r.name, r("ask_many", qs=[
        f"{r.name} asks {i}" for i in range(5)])["results"])) for r in (a, b)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: len(fallback.chat_requests()) - answered >= 9, "nine questions to reach the fallback",
                   timeout=60)
    finally:
        held.set()  # now the trial may answer
    for w in workers:
        w.join(60)
    results = answers["A"] + answers["B"]
    assert len(results) == 10 and all(r["complete"] for r in results)
    by_primary = [r for r in results if r["provider"] == PRIMARY]
    assert len(by_primary) == 1, [r["provider"] for r in results]  # the one trial answered
    skipped = [x["detail"] for r in results for x in r["attempts"] if x["provider"] == PRIMARY and x["outcome"] == "skipped"]
    assert len(skipped) == 9 and all("half-open" in d for d in skipped), skipped
    assert len(primary.chat_requests()) - calls == 1  # one trial call reached the provider, fleet-wide
    assert len(fallback.chat_requests()) - answered == 9


def test_an_answer_cached_on_one_replica_is_a_cache_hit_on_the_other(fleet):
    a, b, (primary, fallback) = fleet()
    first = a("ask", q="What is a circuit breaker, in one line?")
    assert first["tier"] == "provider" and first["provider"] == PRIMARY
    calls = len(primary.chat_requests())
    again = b("ask", q="What is a circuit breaker, in one line?")
    assert again["tier"] == "cache" and again["text"] == first["text"] and again["provider"] == PRIMARY
    assert len(primary.chat_requests()) == calls


def test_every_replica_dashboard_shows_the_whole_fleet_traffic(fleet):
    a, b, _ = fleet()
    a("ask", q="asked on A")
    b("ask", q="asked on B")
    for replica in (a, b):
        wait_until(lambda r=replica: r("fleet")["requests_by_replica"] == {"A": 1, "B": 1},
                   f"{replica.name} to see one request from each")
        assert replica("fleet")["requests"] == 2


def test_only_one_replica_probes_a_provider_per_interval(fleet):
    # A long interval: each replica's prober runs one round at start, and only the first to take a
    # provider's lease probes it. The other's round finds the leases taken and shows that probe.
    a, b, servers = fleet("[hedging]\nenabled = false\n[health]\nprobe_interval = 3600\n")
    for replica in (a, b):
        wait_until(lambda r=replica: r("probes")["rounds"] >= 1, f"{replica.name}'s first probe round")
    for server in servers:
        assert len([r for r in server.requests if r.method == "GET"]) == 1  # one list-models call, fleet-wide
    for replica in (a, b):
        assert all(ms is not None for ms in replica("probes")["probe_ms"].values())  # both show it
