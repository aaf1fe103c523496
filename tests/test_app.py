"""Every page through Streamlit's AppTest, against simulated providers on 127.0.0.1."""

from __future__ import annotations

import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.local_model import bundled_model
from core.simulator import Fault
from tests.conftest import KEY, ROOT, app_without_configuration, as_text, toml_for, typed

APP = str(ROOT / "app.py")


@pytest.fixture
def app(sims, tmp_path, monkeypatch):
    """app("anthropic", "openai") -> (AppTest after its first run, [servers])."""
    app_without_configuration(monkeypatch, tmp_path)

    def make(*kinds, env=None, settings=""):
        servers = [sims(k) for k in kinds]
        if servers:
            path = tmp_path / "chain.toml"
            path.write_text(toml_for(servers, "[hedging]\nenabled = false\n" + settings), encoding="utf-8")
            monkeypatch.setenv("UNDERSTUDY_CONFIG", str(path))
            monkeypatch.setenv("SIM_KEY", KEY)
        else:
            monkeypatch.delenv("UNDERSTUDY_CONFIG", raising=False)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        st.cache_resource.clear()  # a fresh Router for this test's chain (the old one is closed)
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception, at.exception
        return at, servers

    yield make
    st.cache_resource.clear()


def chat(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def assistant(at, index=-1):
    return [m for m in at.chat_message if m.name == "assistant"][index]


def captions(block) -> str:
    """A message's captions (its badge, notices) as they read."""
    return as_text(" ".join(c.value for c in block.caption))


def test_chat_round_trip_with_badge(app):
    at, (first, second) = app("anthropic", "openai")
    chat(at, "What is an understudy?")
    user, reply = at.chat_message[0], assistant(at)
    assert user.name == "user" and typed(user) == "What is an understudy?" and not user.markdown
    assert "anthropic-test" in reply.markdown[0].value and reply.markdown[0].value.rstrip().endswith("w49")
    badge = captions(reply)
    assert "**anthropic-0**" in badge and "`anthropic-test`" in badge and "first token" in badge
    assert len(first.chat_requests()) == 1
    sent = first.chat_requests()[0].body
    assert sent["system"] == "You are a helpful, concise assistant."
    assert sent["messages"] == [{"role": "user", "content": "What is an understudy?"}]


def test_failover_shows_in_the_badge_and_timeline(app):
    at, (first, second) = app("anthropic", "openai")
    first.set_default(Fault.http(529))
    chat(at, "Who answers?")
    reply = assistant(at)
    assert "openai-test" in reply.markdown[0].value
    assert "**openai-1**" in captions(reply) and "failed/skipped" in captions(reply)
    assert as_text(reply.markdown[1].value).startswith("↪️ anthropic-0 overloaded (529) → openai-1 answered · ")
    table = next(m.value for m in reply.markdown if m.value.startswith("| # |"))
    rows = [[as_text(c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()[2:]]
    assert [r[2] for r in rows] == ["anthropic-0", "anthropic-0", "openai-1"]
    assert [r[5] for r in rows] == ["overloaded", "overloaded", ""]


def test_a_mid_stream_switch_is_marked(app):
    at, (first, second) = app("anthropic", "gemini")
    first.push(Fault("cut", after=10))
    chat(at, "Tell me more")
    reply = assistant(at)
    assert "gemini-test" in reply.markdown[0].value and "anthropic-test" not in reply.markdown[0].value
    assert "switched mid-answer" in captions(reply)
    assert "broke off mid-answer" in captions(reply) and "partial text was replaced" in captions(reply)
    assert as_text(reply.markdown[1].value).startswith("↪️ anthropic-0 broke off mid-answer → gemini-1 restarted the answer")


def test_a_stall_taken_over_by_its_backup_reads_as_such(app):
    # The primary's idle deadline is 0.8 s here: a stall threshold under it makes stall hedging act.
    at, (first, second) = app("anthropic", "openai", settings="[stalls]\ncold_start = 0.3\n")
    first.push(Fault("stall", after=10, seconds=60))
    second.set_default(Fault("ok"))
    chat(at, "Tell me more")
    reply = assistant(at)
    assert "openai-test" in reply.markdown[0].value and "anthropic-test" not in reply.markdown[0].value
    badge = captions(reply)
    assert "stalled, its backup took over" in badge and "hedge won" not in badge
    assert "broke off mid-answer (stalled)" in badge
    table = next(m.value for m in reply.markdown if m.value.startswith("| # |"))
    table = as_text(table)
    assert "stalled mid-answer" in table and "(hedge)" in table and "went silent mid-answer" in table


def test_a_users_message_shows_exactly_as_typed(app):
    at, (first,) = app("ollama")
    log = "2026-12-04 ERROR *exactly* this\n1. not a list\n<b>not bold</b> ![x](http://evil/x.png)"
    chat(at, log)
    user = at.chat_message[0]
    assert typed(user) == log and "<b>" not in user[0].value and "&lt;b&gt;" in user[0].value
    chat(at, "\n".join(f"line {i}" for i in range(200)))  # a pasted log: its start, then "show all"
    user = at.chat_message[2]
    assert typed(user).startswith("line 0\nline 1\n") and "line 24 …" in typed(user) and "line 25" not in typed(user)
    (more,) = user.expander
    assert more.label == "Show all — 200 lines, 1,689 characters"
    assert typed(more) == "\n".join(f"line {i}" for i in range(200))


def test_skip_the_cache_asks_the_providers_again(app):
    at, (first, second) = app("anthropic", "openai")
    chat(at, "What is an understudy?")
    at.button(key="new_chat").click().run()
    chat(at, "What is an understudy?")  # the same first question in a new chat: from the cache
    assert "cached" in captions(assistant(at)).lower() and len(first.chat_requests()) == 1
    assert as_text(assistant(at).markdown[1].value).startswith("↪️ Served from the cache · asked ")
    first.set_default(Fault.http(529))  # Claude breaks: a cached answer would hide it
    at.toggle(key="skip_cache").set_value(True).run()
    at.button(key="new_chat").click().run()
    chat(at, "What is an understudy?")
    reply = captions(assistant(at))
    assert "cached" not in reply.lower() and "**openai-1**" in reply and len(first.chat_requests()) > 2


def test_follow_up_turns_carry_the_conversation(app):
    at, (first,) = app("ollama")
    chat(at, "first")
    chat(at, "second")
    body = first.chat_requests()[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][-1]["content"] == "second"


def test_sidebar_settings_reach_the_provider(app):
    at, (first,) = app("openai")
    at.text_area(key="system").set_value("Answer like a pirate.")
    at.slider(key="temperature").set_value(0.2)
    at.number_input(key="max_tokens").set_value(256)
    chat(at, "Ahoy?")
    body = first.chat_requests()[0].body
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 256


def test_empty_input_is_ignored_and_long_input_is_kept_not_lost(app):
    at, (first,) = app("gemini")
    chat(at, "   ")
    assert len(at.chat_message) == 0 and first.chat_requests() == []
    huge = "x" * 200_001
    chat(at, huge)
    assert first.chat_requests() == [] and len(at.chat_message) == 0
    assert "limit is 200,000" in at.warning[0].value
    assert at.text_area(key="kept_input_box").value == huge


def test_nothing_typed_is_lost_when_every_provider_fails(app):
    at, (first, second) = app("anthropic", "openai")
    for s in (first, second):
        s.set_default(Fault.http(503))
    chat(at, "Which moon of Saturn has methane lakes?")
    user, reply = at.chat_message[0], assistant(at)
    assert typed(user) == "Which moon of Saturn has methane lakes?"
    assert "Which moon of Saturn has methane lakes?" in reply.markdown[0].value
    assert "unavailable" in captions(reply)


def test_declines_are_plain(app):
    at, (first, second) = app("anthropic", "openai")
    first.set_default(Fault("refusal"))
    chat(at, "something")
    reply = assistant(at)
    assert "declined" in reply.markdown[0].value and "declined" in captions(reply)
    assert second.chat_requests() == []


def test_regenerate_asks_again_bypassing_the_cache(app):
    at, (first,) = app("gemini")
    chat(at, "Same question")
    at.button(key="regenerate").click().run()
    assert not at.exception
    assert len([m for m in at.chat_message if m.name == "assistant"]) == 1
    assert len(first.chat_requests()) == 2


def test_new_chat_clears_the_history(app):
    at, _ = app("gemini")
    chat(at, "hello")
    at.button(key="new_chat").click().run()
    assert len(at.chat_message) == 0


def test_demo_mode_runs_with_no_configuration(app):
    at, _ = app()
    notice = next(i.value for i in at.info if "Demo mode" in i.value)
    # The notice tells a real on-device model from a simulated one (it is real once installed).
    assert ("small real on-device model" in notice) == (bundled_model() is not None)
    chat(at, "How do I reset my password?")
    reply = assistant(at)
    assert "[Simulated" in reply.markdown[0].value and "Forgot password?" in reply.markdown[0].value
    assert "**claude**" in captions(reply)


def test_a_bad_config_file_is_explained_and_the_app_still_runs(app, tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[providers]]\nname = "x"\nkind = "gpt"\nmodel = "m"\n', encoding="utf-8")
    at, _ = app(env={"UNDERSTUDY_CONFIG": str(bad)})
    assert any("Configuration problem" in e.value and "providers[0].kind" in e.value for e in at.error)
    chat(at, "still works?")
    assert "[Simulated" in assistant(at).markdown[0].value


def test_chaos_switches_change_what_chat_does(app):
    at, (first, second) = app("anthropic", "openai")
    at.switch_page("pages/chaos.py").run()
    assert not at.exception
    at.selectbox(key="status_0").set_value("503 unavailable")
    at.button(key="apply_0").click().run()
    assert any("forced to fail" in w.value and "anthropic-0" in w.value for w in at.warning)
    at.switch_page("pages/chat.py").run()
    chat(at, "who now?")
    assert "**openai-1**" in captions(assistant(at))
    assert first.chat_requests() == []  # the fault is injected under the SDK, before the network
    at.switch_page("pages/chaos.py").run()
    at.button(key="reset_all").click().run()
    at.switch_page("pages/chat.py").run()
    chat(at, "and now?")
    assert "**anthropic-0**" in captions(assistant(at))


def test_a_chaos_429_whose_wait_is_only_in_the_text_keeps_the_provider_out_that_long(app):
    at, (first, second) = app("anthropic", "openai")
    at.switch_page("pages/chaos.py").run()
    at.selectbox(key="status_0").set_value("429 rate limited")
    at.number_input(key="retry_after_0").set_value(120.0).run()
    at.selectbox(key="hint_0").set_value("only in the message text")
    at.button(key="apply_0").click().run()
    assert not at.exception
    assert any("(text only) 120s" in m.value for m in at.markdown)  # the panel says what is injected
    at.switch_page("pages/chat.py").run()
    chat(at, "who now?")
    assert "openai-1" in captions(assistant(at))
    from pages.shared import router
    assert router().breakers["anthropic-0"].state == "open"
    state = router().breakers["anthropic-0"]._store.read("anthropic-0")
    assert state.cooldown == 120  # the text's 2 minutes, not the default 15 s


def test_chaos_scenario_and_load_generator(app):
    at, (first, second) = app("anthropic", "openai")
    at.switch_page("pages/chaos.py").run()
    at.selectbox(key="scenario").set_value("primary_outage")
    at.button(key="play").click().run()
    assert any("Primary outage" in p.text for p in at.get("progress")) or any(
        "Primary outage" in w.value for w in at.warning)
    at.number_input(key="load_n").set_value(6)
    at.number_input(key="load_c").set_value(3)
    at.button(key="load_go").click().run()
    assert not at.exception
    from core.loadgen import current
    from pages.shared import router
    assert current(router()).wait(60)  # it asks on its own threads; the page polls it
    at.run()
    table = at.dataframe[-1].value
    assert len(table) == 6 and set(table["served by"]) == {"openai-1"} and all(table["complete"])
    assert table["latency"].dtype.kind == "f"  # numbers, so the column sorts as numbers
    assert any("6 questions" in s.value for s in at.success)


def test_status_page_empty_state_then_charts(app):
    at, _ = app("anthropic", "openai")
    at.switch_page("pages/status.py").run()
    assert not at.exception
    assert any("No traffic yet" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0
    assert [m.label for m in at.metric][:2] == ["Requests", "Cache hits"]
    at.switch_page("pages/chat.py").run()
    chat(at, "make some traffic")
    at.switch_page("pages/status.py").run()
    charts = at.get("plotly_chart")
    assert len(charts) == 7  # six of traffic, and the breakers' timeline
    assert at.metric[0].value == "1"
    assert any("anthropic-0" in m.value for m in at.markdown)


def test_status_buttons(app):
    at, (first, second) = app("anthropic", "openai")
    first.set_default(Fault.http(500))
    for i in range(2):
        chat(at, f"q{i}")
    at.switch_page("pages/status.py").run()
    assert any("Breaker: **open" in m.value for m in at.markdown)
    at.button(key="reset_breakers").click().run()
    assert not any("Breaker: **open" in m.value for m in at.markdown)
    at.button(key="probe").click().run()
    assert any("probe failed" in c.value for c in at.caption)
    at.button(key="clear_cache").click().run()
    assert not at.exception


def test_admin_password_locks_the_chaos_page(app):
    at, _ = app("anthropic", env={"UNDERSTUDY_ADMIN_PASSWORD": "open sesame"})
    at.switch_page("pages/chaos.py").run()
    assert any("locked" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "apply_0"]
    at.text_input(key="admin_password").set_value("wrong")
    at.button[0].click().run()
    assert any("not right" in e.value for e in at.error)
    at.text_input(key="admin_password").set_value("open sesame")
    at.button[0].click().run()
    assert [b for b in at.button if b.key == "apply_0"]


def test_without_a_password_the_chaos_page_is_open(app):
    at, _ = app("anthropic")
    at.switch_page("pages/chaos.py").run()
    assert [b for b in at.button if b.key == "apply_0"]


def test_status_page_shows_the_verdict_healthz_reports(app):
    from core.endpoints import healthz
    from pages.shared import router

    at, (first, _) = app("anthropic", "openai")
    at.switch_page("pages/status.py").run()
    assert [b.value for b in at.success] == ["**All systems answering**"]
    first.set_default(Fault.http(500))
    at.switch_page("pages/chat.py").run()
    for i in range(2):
        chat(at, f"q{i}")
    at.switch_page("pages/status.py").run()
    line = "Degraded: anthropic-0 down, openai-1 answering"  # one breaker open, one provider left
    assert [w.value for w in at.warning] == [f"**{line}**"]
    assert healthz(router())[1]["summary"] == line  # word for word what /healthz says
