"""The Status page through AppTest: the tiles recover after a reset and a probe, the Failovers tile
counts breaker skips, and the uptime bars and the incident log read the history."""

from __future__ import annotations

from core.simulator import Fault
from tests.test_app import app, chat  # noqa: F401 — `app` is the AppTest fixture


def status(at):
    at.switch_page("pages/status.py").run()
    assert not at.exception, at.exception
    return at


def primary_broken(app, asks: int = 3):
    """Two providers, the primary failing every call; `asks` questions asked, then the Status page."""
    at, (first, second) = app("anthropic", "openai")
    first.set_default(Fault.http(500))
    for i in range(asks):
        chat(at, f"question {i}")
    return status(at), first


def tiles(at) -> str:
    return " ".join(m.value for m in at.markdown if "Health:" in m.value)


def test_tiles_recover_after_a_reset_and_a_good_probe(app):
    at, first = primary_broken(app)
    assert "Health: **down**" in tiles(at)
    first.set_default(Fault())  # the outage is over
    at.button(key="reset_breakers").click().run()
    at.button(key="probe").click().run()
    assert not at.exception
    assert tiles(at).count("Health: **ok**") == 2 and "degraded" not in tiles(at)
    assert [b.value for b in at.success] == ["**All systems answering**"]


def test_the_failovers_tile_counts_answers_from_the_fallback_breaker_skips_included(app):
    at, _ = primary_broken(app, asks=5)  # the first ones fail on the primary; then its breaker skips it
    assert next(m for m in at.metric if m.label == "Failovers").value == "5"


def test_uptime_bars_and_the_incident_log(app):
    at, _ = primary_broken(app)
    bars = " ".join(h.value for h in at.get("html"))
    assert 'data-testid="uptime-anthropic-0"' in bars and 'data-testid="uptime-openai-1"' in bars
    primary, fallback = bars.split('uptime-openai-1')
    assert "#e8a33d" in primary or "#d64545" in primary  # the primary's last minute: calls failed
    assert "#e8a33d" not in fallback and "#d64545" not in fallback and "#2e9e5b" in fallback
    (log,) = [d.value for d in at.dataframe if "cause" in d.value.columns]
    assert list(log["provider"]) == ["anthropic-0"] and "failures in a row" in log["cause"][0]
    assert log["lasted"][0].endswith("(ongoing)") and log["requests failed over"][0] >= 1
    at.button(key="reset_breakers").click().run()
    (log,) = [d.value for d in at.dataframe if "cause" in d.value.columns]
    assert log["ended by"][0] == "reset by operator"
