"""The load generator against simulated providers: numbers, a summary, and a cancel that stops it."""

from __future__ import annotations

import pytest

from core.loadgen import Busy, LoadRun, Row, current, summarise
from core.simulator import Fault
from tests.clock import wait_until


def test_a_run_reports_numbers_and_a_summary(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.set_default(Fault.http(529))
    run = LoadRun(router, 6, 3).start()
    assert run.wait(60)
    rows = run.rows()
    assert [r.n for r in rows] == [6, 5, 4, 3, 2, 1]
    assert {r.served_by for r in rows} == {"openai-1"} and all(r.answered for r in rows)
    assert all(isinstance(r.latency_s, float) and r.latency_s > 0 for r in rows)
    s = summarise(rows)
    assert (s.asked, s.answered, s.not_answered, s.stopped) == (6, 6, 0, 0)
    assert s.served_by == {"openai-1": 6} and s.tiers == {"provider": 6}
    assert s.failed_attempts >= 1  # the overloaded primary, until its breaker opened
    assert s.p50_s <= s.p95_s
    assert len(second.chat_requests()) == 6  # fresh: every question reached a provider


def test_cancel_stops_asking_and_stops_the_answers_in_flight(chain):
    router, (first, second) = chain("anthropic", "openai")
    first.chunk_delay = 0.2  # each answer would take about 10 s
    run = LoadRun(router, 40, 2).start()
    wait_until(lambda: len(first.chat_requests()) == 2, "two questions being answered")
    run.cancel()
    assert run.wait(30)
    rows = run.rows()
    assert len(rows) == 2 and all(r.stopped for r in rows)
    assert run.cancelled and len(first.chat_requests()) == 2  # nothing more was asked
    s = summarise(rows)
    assert (s.stopped, s.not_answered, s.answered) == (2, 0, 0)


def test_one_run_at_a_time_per_router_seen_by_every_session(chain):
    # A run outlives the tab that started it: a reload must find it (to cancel it), not stack another.
    router, (first, _) = chain("anthropic", "openai")
    first.chunk_delay = 0.2
    run = LoadRun(router, 40, 2).start()
    assert current(router) is run
    with pytest.raises(Busy, match="already going"):
        LoadRun(router, 5, 5).start()
    run.cancel()
    assert run.wait(30)
    again = LoadRun(router, 1, 1).start()  # once it has finished, the next one may start
    assert current(router) is again and again.wait(30)


def test_a_provider_wide_outage_counts_as_not_answered(chain):
    router, servers = chain("anthropic", "openai")
    for s in servers:
        s.set_default(Fault.http(503))
    run = LoadRun(router, 3, 3).start()
    assert run.wait(60)
    s = summarise(run.rows())
    assert s.not_answered == 3 and s.answered == 0 and "provider" not in s.tiers


def test_quantiles_of_the_finished_questions_only():
    rows = [Row(n, "p", "provider", True, False, float(n), 0.1, 1, 0) for n in range(1, 21)]
    rows.append(Row(21, "p", "provider", False, True, 500.0, None, 1, 0))  # stopped: not a latency
    s = summarise(rows)
    assert s.p50_s == pytest.approx(10.5) and s.p95_s == pytest.approx(19.05)
    assert s.first_token_p50_s == pytest.approx(0.1) and s.stopped == 1


@pytest.mark.parametrize("n, concurrency", [(0, 1), (1001, 5), (5, 0), (5, 51)])
def test_out_of_range_runs_are_refused(chain, n, concurrency):
    router, _ = chain("openai")
    with pytest.raises(ValueError):
        LoadRun(router, n, concurrency)
