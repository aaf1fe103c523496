"""The incident log and the uptime bars, read from metrics events (core/incidents.py, core/uptime.py)."""

from __future__ import annotations

from core.incidents import incidents
from core.metrics import OPERATOR_RESET, AttemptEvent, ProbeEvent, TransitionEvent
from core.uptime import uptime


def t(at, provider, old, new, reason=""):
    return TransitionEvent(at, provider, old, new, reason)


def a(at, provider, outcome, kind=None):
    return AttemptEvent(at, provider, "m", outcome, kind, 10.0, 5.0)


def test_each_open_to_close_period_is_one_incident_with_its_cause_and_failovers():
    events = [
        a(99, "claude", "error", "overloaded"),
        t(100, "claude", "closed", "open", "3 failures in a row, last: overloaded"),
        a(101, "claude", "skipped"), a(102, "claude", "skipped"), a(102, "gpt", "ok"),
        t(115, "claude", "open", "half-open", "cooldown over: one trial call"),
        a(115.5, "claude", "error", "overloaded"),
        t(116, "claude", "half-open", "open", "trial call failed: overloaded"),  # the same incident goes on
        t(131, "claude", "open", "half-open"), t(132, "claude", "half-open", "closed", "trial call succeeded"),
        a(140, "claude", "skipped"),  # after it: not counted
        t(200, "gpt", "closed", "open", "a long Retry-After"),  # still open
        t(300, "gemini", "half-open", "closed", "trial call succeeded"),  # its opening is before the events
    ]
    gpt, claude = incidents(events)
    assert (claude.start, claude.end, claude.duration(1000)) == (100, 132, 32)
    assert claude.cause == "3 failures in a row, last: overloaded" and claude.resolved_by == "trial call succeeded"
    assert (claude.failed_over, claude.trials) == (3, 2)
    assert gpt.end is None and gpt.duration(260) == 60 and gpt.resolved_by == ""


def test_an_operator_reset_ends_an_incident():
    (i,) = incidents([t(10, "p", "closed", "open", "x"), t(20, "p", "open", "closed", OPERATOR_RESET),
                      t(30, "p", "closed", "closed", OPERATOR_RESET)])
    assert (i.end, i.resolved_by) == (20, OPERATOR_RESET)


def test_uptime_slices_say_ok_degraded_down_or_nothing_to_go_on():
    events = [
        t(-50, "claude", "closed", "open"),  # open before the period began
        t(15, "claude", "open", "closed"),  # the first slice (0-10) wholly open, the second half
        ProbeEvent(12, "claude", True, 3.0),
        a(21, "claude", "ok"), a(22, "claude", "error", "timeout"),  # third: mixed
        a(31, "claude", "error", "timeout"),  # fourth: all failed
        a(45, "claude", "skipped"), a(45, "claude", "cancelled"),  # fifth: says nothing
        a(51, "gpt", "ok"),
    ]
    bars = uptime(events, ["claude", "gpt"], since=0, until=60, slices=6)
    claude = bars["claude"]
    assert [s.status for s in claude.slices] == ["down", "down", "degraded", "down", "none", "none"]
    assert claude.slices[1].open_s == 5 and (claude.slices[2].ok, claude.slices[2].failed) == (1, 1)
    assert claude.share == 1 / 4
    assert [s.status for s in bars["gpt"].slices] == ["none"] * 5 + ["ok"] and bars["gpt"].share == 1.0
    assert uptime([], ["x"], since=0, until=60, slices=6)["x"].share is None


def test_buckets_fit_the_time_shown_and_lines_break_across_idle_gaps():
    from core.timeseries import bucket_seconds, breaks

    assert bucket_seconds(60) == 10 and bucket_seconds(900) == 30 and bucket_seconds(3600) == 120
    assert bucket_seconds(86400) == 3600 and bucket_seconds(10 ** 7) == 86400
    assert breaks([0, 1, 2, 3, 200, 201, 202]) == [4]  # three minutes of nothing between two bursts
    assert breaks([0, 10, 20, 30, 40]) == [] and breaks([5]) == []
    assert breaks([0, 1, 5], idle_s=2) == [2]
