"""PostgreSQL becomes unreachable under a running chat (a loopback proxy in front of the real
server is cut): answers keep coming, the conversation stays in the tab, the page says history is
not being saved, and once the network is back the conversation is saved."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.store.conversations import SqlConversationStore
from tests.conftest import ROOT, app_on_one_provider, typed
from tests.netcut import NetCut

NOT_SAVED = "History is temporarily not being saved"
ADA = {"is_logged_in": True, "email": "ada@example.com"}


@pytest.fixture
def through_proxy(tmp_path, monkeypatch, sims, pg_schema):
    """The app on one simulated provider, its database a fresh PostgreSQL schema reached through a
    proxy we can cut. Yields (open_session, proxy, a store that goes to PostgreSQL directly)."""
    proxy = NetCut("127.0.0.1", 5432)
    direct = SqlConversationStore(pg_schema)
    app_on_one_provider(sims, tmp_path, monkeypatch)
    monkeypatch.setenv("UNDERSTUDY_DATABASE_URL", sa.make_url(pg_schema).set(port=proxy.port).render_as_string())

    def open_session(c=None):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.user = dict(ADA)
        if c:
            at.query_params["c"] = c
        at.run()
        assert not at.exception, at.exception
        return at

    try:
        yield open_session, proxy, direct
    finally:
        proxy.restore()
        st.cache_resource.clear()
        direct.close()
        proxy.close()


def saver():
    from pages.shared import runtime
    return runtime().saver


def chat(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception


def texts(at):
    """Each message's text: a user's is drawn as typed (escaped HTML), an answer as Markdown."""
    return [typed(m) if m.name == "user" else m.markdown[0].value for m in at.chat_message]


def notices(at):
    return [w.value for w in at.warning if NOT_SAVED in w.value]


def test_the_chat_keeps_answering_and_saves_once_postgresql_is_back(through_proxy):
    open_session, proxy, direct = through_proxy
    at = open_session()
    chat(at, "First, while the database is up")
    cid = at.query_params["c"]
    assert saver().settle(timeout=10)
    assert len(direct.load(cid).messages) == 2 and proxy.accepted > 0

    proxy.cut()  # PostgreSQL is now unreachable from the app
    chat(at, "Second, while it is down")
    assert len(at.chat_message) == 4 and "openai-test" in texts(at)[3]  # answered all the same
    assert saver().settle(timeout=10)  # the writer has tried, and failed
    at.run()
    assert notices(at) == ["History is temporarily not being saved — your messages are kept in this tab and will "
                           "be saved when the database is back."]
    assert [m["content"] for m in at.session_state["messages"]][2] == "Second, while it is down"
    assert len(direct.load(cid).messages) == 2  # really not saved
    reloaded = open_session(c=cid)  # F5 meanwhile: this server still has every message
    assert texts(reloaded) == texts(at) and notices(reloaded)
    assert any("can't be listed right now" in c.value for c in reloaded.sidebar.caption)

    proxy.restore()
    at.run()  # the next rerun retries
    assert saver().settle(timeout=10)
    stored = direct.load(cid)
    assert [m["content"] for m in stored.messages][::2] == ["First, while the database is up",
                                                            "Second, while it is down"]
    at.run()
    assert notices(at) == [] and texts(at) == texts(reloaded)


def test_the_follow_ups_page_says_so_when_postgresql_is_silent_and_recovers(through_proxy):
    """A PostgreSQL that stops answering without closing anything: the Follow-ups page gives up on it
    within its bound and says why, instead of freezing this browser session; then it recovers."""
    open_session, proxy, _ = through_proxy
    from pages.shared import runtime

    at = open_session()
    assert runtime().router.followups.add("Where is my parcel?", why="every provider failed", who="ada@example.com")
    at.switch_page("pages/followups.py").run()
    assert not at.exception and "Where is my parcel?" in at.dataframe[0].value["question"].tolist()
    proxy.freeze()
    at.run()
    assert not at.exception
    assert any("Can't read the kept questions" in e.value and "did not answer within" in e.value for e in at.error)
    proxy.restore()
    at.run()
    assert not at.error and "Where is my parcel?" in at.dataframe[0].value["question"].tolist()


def test_a_tab_opened_while_a_save_waits_never_writes_over_the_first_tab(through_proxy):
    """The database is down; tab one has an unwritten turn, and the same link is opened in tab two,
    which shows that turn. Both carry on. Once the database is back, no turn of either is lost."""
    open_session, proxy, direct = through_proxy
    one = open_session()
    chat(one, "First, while the database is up")
    cid = one.query_params["c"]
    assert saver().settle(timeout=10)
    proxy.cut()
    chat(one, "Tab one, while it is down")
    two = open_session(c=cid)
    assert "Tab one, while it is down" in texts(two)  # this server still has it
    assert two.session_state["writer"] != one.session_state["writer"]  # but it is tab one's to write
    chat(two, "Tab two, while it is down")
    chat(one, "Tab one again")
    proxy.restore()
    saver().nudge()
    assert saver().settle(timeout=10)
    one.run(), two.run()
    assert saver().settle(timeout=10)
    stored = {c: [m["content"] for m in direct.load(c).messages if m["role"] == "user"]
              for c in {one.query_params["c"], two.query_params["c"]}}
    assert stored[one.query_params["c"]] == ["First, while the database is up", "Tab one, while it is down",
                                             "Tab one again"]
    assert two.query_params["c"] != cid
    assert stored[two.query_params["c"]] == ["First, while the database is up", "Tab one, while it is down",
                                             "Tab two, while it is down"]
