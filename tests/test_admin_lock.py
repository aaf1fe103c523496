"""The admin lock: every control that changes what all users share (breakers, cache, probes, chaos)
needs UNDERSTUDY_ADMIN_PASSWORD when it is set; unset, everything is open (the README's default)."""

from __future__ import annotations

from core.simulator import Fault
from streamlit.testing.v1 import AppTest

from tests.test_app import APP, app, chat  # noqa: F401 — `app` is the AppTest fixture

PASSWORD = "open sesame"
SHARED = ("probe", "reset_breakers", "clear_cache")


def status_page(at):
    at.switch_page("pages/status.py").run()
    assert not at.exception, at.exception
    return at


def unlock(at, password):
    at.text_input(key="admin_password").set_value(password)
    next(b for b in at.button if b.label == "Unlock").click().run()
    assert not at.exception, at.exception
    return at


def forge_click(at, key):
    """What a hand-made websocket message could do: click a button the browser shows disabled."""
    button = at.button(key=key)
    button.proto.disabled = False  # AppTest refuses to click disabled widgets; a forged client would not
    return button.click().run()


def ask_again_from_a_new_chat(at, text):
    """The same conversation as before (so the same cache key): a new chat, then the question."""
    at.switch_page("pages/chat.py").run()
    at.button(key="new_chat").click().run()
    return chat(at, text)


def breaker_open(at) -> bool:
    return any("Breaker: **open" in m.value for m in at.markdown)


def tripped(app):
    """The app with a password set and the primary's breaker open (two questions, 500 each time)."""
    at, (first, second) = app("anthropic", "openai", env={"UNDERSTUDY_ADMIN_PASSWORD": PASSWORD})
    first.set_default(Fault.http(500))
    for i in range(2):
        chat(at, f"q{i}")
    return at, first, second


def test_the_status_page_shared_controls_are_locked_without_the_password(app):
    at, first, second = tripped(app)
    status_page(at)
    assert any("locked" in w.value for w in at.warning)
    assert all(at.button(key=k).disabled for k in SHARED)
    assert breaker_open(at)
    # A disabled button is only a hint to the browser: a forged click must change nothing either.
    forge_click(at, "reset_breakers")
    assert breaker_open(at)
    answered = len(second.chat_requests())
    forge_click(at, "clear_cache")
    ask_again_from_a_new_chat(at, "q0")  # still answered from the cache: it was not cleared
    assert len(second.chat_requests()) == answered


def test_a_wrong_password_does_not_unlock(app):
    at, first, second = tripped(app)
    unlock(status_page(at), "open sesam")
    assert any("not right" in e.value for e in at.error)
    assert all(at.button(key=k).disabled for k in SHARED)
    forge_click(at, "reset_breakers")
    assert breaker_open(at)


def test_the_right_password_unlocks_every_shared_control_for_this_session(app):
    at, first, second = tripped(app)
    unlock(status_page(at), PASSWORD)
    assert PASSWORD not in at.session_state.to_dict().values()  # remembered as a flag, not as the password
    assert not any("locked" in w.value for w in at.warning)
    assert not any(at.button(key=k).disabled for k in SHARED)
    at.button(key="reset_breakers").click().run()
    assert not breaker_open(at)
    answered = len(second.chat_requests())
    at.button(key="clear_cache").click().run()
    ask_again_from_a_new_chat(at, "q0")  # cleared: the providers are asked again
    assert len(second.chat_requests()) == answered + 1
    # One unlock per session: the Chaos page does not ask again.
    at.switch_page("pages/chaos.py").run()
    assert [b for b in at.button if b.key == "apply_0"]


def test_a_new_session_is_locked_again(app):
    at, _ = app("anthropic", env={"UNDERSTUDY_ADMIN_PASSWORD": PASSWORD})
    unlock(status_page(at), PASSWORD)
    assert not at.button(key="reset_breakers").disabled
    other = AppTest.from_file(APP, default_timeout=30)
    other.run()
    status_page(other)
    assert other.button(key="reset_breakers").disabled


def test_without_a_password_every_control_is_open(app):
    at, _ = app("anthropic")
    status_page(at)
    assert not any("locked" in w.value for w in at.warning)
    assert not any(at.button(key=k).disabled for k in SHARED)
    assert not [t for t in at.text_input if t.key == "admin_password"]
