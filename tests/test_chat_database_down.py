"""PostgreSQL becomes unreachable under a running chat (a loopback proxy in front of the real
server is cut): answers keep coming, the conversation stays in the tab, the page says history is
not being saved, and once the network is back the conversation is saved."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.store.conversations import SqlConversationStore
from tests.conftest import KEY, ROOT, app_without_configuration, service_missing, toml_for
from tests.netcut import NetCut

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOT_SAVED = "History is temporarily not being saved"
ADA = {"is_logged_in": True, "email": "ada@example.com"}


@pytest.fixture
def through_proxy(tmp_path, monkeypatch, sims):
    """The app on one simulated provider, its database a fresh PostgreSQL schema reached through a
    proxy we can cut. Yields (open_session, proxy, a store that goes to PostgreSQL directly)."""
    admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    schema = f"conv_down_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        service_missing(f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(e.orig).__name__})")
    proxy = NetCut("127.0.0.1", 5432)
    direct = SqlConversationStore(f"{PG_URL}?options=-csearch_path%3D{schema}")
    app_without_configuration(monkeypatch, tmp_path)
    server = sims("openai")
    path = tmp_path / "chain.toml"
    path.write_text(toml_for([server], "[hedging]\nenabled = false\n"), encoding="utf-8")
    monkeypatch.setenv("UNDERSTUDY_CONFIG", str(path))
    monkeypatch.setenv("SIM_KEY", KEY)
    monkeypatch.setenv("UNDERSTUDY_DATABASE_URL",
                       f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}")
    st.cache_resource.clear()

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
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def saver():
    from pages.shared import runtime
    return runtime().saver


def chat(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception


def texts(at):
    return [m.markdown[0].value for m in at.chat_message]


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
