"""The Chaos page through AppTest, against simulated providers: what the cards, the scenario panel
and the load generator show, and what they remember."""

from __future__ import annotations

import pytest

from core.loadgen import current
from core.simulator import Fault
from tests.clock import wait_until
from tests.test_app import app  # noqa: F401 — the fixture: the whole app on simulated providers


@pytest.fixture
def chaos_page(app):
    """chaos_page("anthropic", "openai") -> (AppTest on the Chaos page, [servers], the router)."""

    def make(*kinds):
        at, servers = app(*kinds)
        at.switch_page("pages/chaos.py").run()
        assert not at.exception, at.exception
        from pages.shared import router
        return at, servers, router()

    return make


def card_lines(at) -> list[str]:
    """Each provider card's status line, in chain order."""
    return [m.value for m in at.markdown if m.value.startswith(("🔴", "🟢"))]


def run(at):
    at.run()
    assert not at.exception, at.exception
    return at


def test_each_card_shows_the_fault_injected_and_its_controls_say_the_same(chaos_page):
    at, _, router = chaos_page("anthropic", "openai")
    # Set elsewhere (another tab, another replica): this page has never seen these controls.
    router.chaos.set("openai-1", Fault("reset"))
    router.chaos.set("anthropic-0", Fault.http(429, retry_after=30, hint="text"), probability=0.5, flap=(3, 4))
    run(at)
    assert card_lines(at) == ["🔴 **failing:** HTTP 429 (rate_limit), “try again in” (text only) 30s, 50% of requests, "
                              "flapping 3s down / 4s up",
                              "🔴 **failing:** connection reset"]
    assert at.selectbox(key="fault_1").value == "Connection reset"
    assert at.selectbox(key="fault_0").value == "HTTP error"
    assert at.selectbox(key="status_0").value == "429 rate limited"
    assert at.number_input(key="retry_after_0").value == 30 and at.selectbox(key="hint_0").value == "only in the message text"
    assert at.slider(key="rate_0").value == 50 and at.toggle(key="flap_0").value
    assert (at.number_input(key="down_0").value, at.number_input(key="up_0").value) == (3, 4)
    assert not any("not what is injected" in c.value for c in at.caption)
    at.selectbox(key="fault_1").set_value("Added latency")
    run(at)  # changed, not applied: the card still says what is injected, and that these differ
    assert card_lines(at)[1] == "🔴 **failing:** connection reset"
    assert any("not what is injected" in c.value for c in at.caption)
    at.button(key="apply_1").click()
    run(at)
    assert card_lines(at)[1] == "🔴 **failing:** +2s latency"
    assert not any("not what is injected" in c.value for c in at.caption)


def test_a_scenarios_faults_are_named_as_the_scenarios_and_heal_spares_one(chaos_page):
    at, _, router = chaos_page("anthropic", "openai")
    at.selectbox(key="scenario").set_value("everything_down")
    at.button(key="play").click()
    run(at)
    assert card_lines(at) == ["🔴 **failing:** HTTP 503 (unavailable) — from the scenario *Everything down*"] * 2
    assert any(p.proto.text.startswith("▶ Everything down:") for p in at.get("progress"))
    at.button(key="clear_0").click()
    run(at)
    assert card_lines(at)[0] == "🟢 healthy (no fault)" and card_lines(at)[1].startswith("🔴")
    assert router.chaos.strike("anthropic-0") is None and router.chaos.strike("openai-1") is not None
    at.button(key="stop_scenario").click()
    run(at)
    assert card_lines(at) == ["🟢 healthy (no fault)"] * 2
    assert any(c.value == "No scenario playing." for c in at.caption)
    assert not any("Simulated outage" in w.value for w in at.warning)
    assert at.button(key="stop_scenario").disabled


def test_the_controls_the_scenario_choice_and_the_tab_survive_a_visit_to_another_page(chaos_page):
    at, _, router = chaos_page("anthropic", "openai")
    at.selectbox(key="scenario").set_value("cascade")
    at.selectbox(key="fault_0").set_value("Added latency")
    run(at)
    at.number_input(key="seconds_latency_0").set_value(7.5)
    at.number_input(key="load_n").set_value(12)
    run(at)
    at.switch_page("pages/chat.py")
    run(at)
    at.switch_page("pages/chaos.py")
    run(at)
    assert at.selectbox(key="scenario").value == "cascade"
    assert at.selectbox(key="fault_0").value == "Added latency"
    assert at.number_input(key="seconds_latency_0").value == 7.5
    assert at.number_input(key="load_n").value == 12
    assert router.chaos.state() == {"providers": {}, "scenario": None}  # remembering applied nothing


def test_the_load_generator_summarises_and_cancels(chaos_page):
    at, (first, second), router = chaos_page("anthropic", "openai")
    first.chunk_delay = 0.2  # an answer takes about 10 s: Cancel comes first
    at.number_input(key="load_n").set_value(30)
    at.number_input(key="load_c").set_value(2)
    at.button(key="load_go").click()
    run(at)
    assert at.button(key="load_go").disabled and not at.button(key="load_cancel").disabled
    wait_until(lambda: len(first.chat_requests()) == 2, "two questions being answered")
    at.button(key="load_cancel").click()
    run(at)
    load = current(router)
    assert load.wait(30) and load.cancelled
    run(at)
    assert any(s.value.startswith("2 questions in ") and s.value.endswith("(cancelled)") for s in at.success)
    assert len(first.chat_requests()) == 2  # nothing asked after the cancel
    assert not at.button(key="load_go").disabled and at.button(key="load_cancel").disabled
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Not answered"] == "0" and set(metrics) >= {"p50 latency", "p95 latency", "Failed attempts"}
    assert any("**stopped** 2" in c.value for c in at.caption)


def test_a_finished_run_shows_its_figures(chaos_page):
    at, (first, second), router = chaos_page("anthropic", "openai")
    router.chaos.set("anthropic-0", Fault.http(529))
    at.number_input(key="load_n").set_value(4)
    at.button(key="load_go").click()
    run(at)
    assert current(router).wait(60)
    run(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["p50 latency"].endswith(" s") and metrics["Not answered"] == "0"
    assert int(metrics["Failed attempts"]) >= 1
    assert any("**served by** openai-1: 4" in c.value and "**Tiers** provider: 4" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table["#"]) == [4, 3, 2, 1] and table["latency"].dtype.kind == "f"


def test_a_fault_set_elsewhere_that_the_controls_cannot_show_is_named_not_a_crash(chaos_page):
    at, _, router = chaos_page("anthropic", "openai")
    router.chaos.set("anthropic-0", Fault.http(502), flap=(600, 0.5))  # no 502 in the list; up for under 1 s
    router.chaos.set("openai-1", Fault("stall", after=5000, seconds=900))
    run(at)
    assert card_lines(at) == ["🔴 **failing:** HTTP 502 (server), flapping 600s down / 0.5s up",
                              "🔴 **failing:** stream stalls 900s after 5000 chunks"]
    assert at.number_input(key="after_1").value == 1000 and at.number_input(key="seconds_stall_1").value == 120
    assert sum("not what is injected" in c.value for c in at.caption) == 2
