"""The chat page keeps conversations: the id in the URL brings one back after a reload or a restart,
the sidebar lists, searches, renames and deletes them, JSON exports import back, and a bad link or
file is explained. Through Streamlit's AppTest against simulated providers and a real SQLite file."""

from __future__ import annotations

import json
import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.simulator import Fault
from core.store.conversations import label_for, new_id
from core.transcript import MAX_IMPORT_BYTES
from tests.conftest import ROOT, app_on_one_provider, as_text, rendered, typed, unescaped_punctuation

APP = str(ROOT / "app.py")
ADA = {"is_logged_in": True, "email": "ada@example.com"}
BOB = {"is_logged_in": True, "email": "bob@example.com"}


def rt():
    """The app's Runtime (one per process, as the sessions share it)."""
    from pages.shared import runtime
    return runtime()


@pytest.fixture
def session(sims, tmp_path, monkeypatch):
    """session(user=..., c=...) -> a new browser session (AppTest) after its first run, on one
    simulated provider; every session of a test shares the app's database, as one server's do."""
    server = app_on_one_provider(sims, tmp_path, monkeypatch)

    def open_session(*, user=None, c=None):
        at = AppTest.from_file(APP, default_timeout=30)
        if user is not None:
            at.user = dict(user)
        if c is not None:
            at.query_params["c"] = c
        at.run()
        assert not at.exception, at.exception
        return at

    open_session.server = server
    yield open_session
    st.cache_resource.clear()


def chat(at, text):
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def saved() -> None:
    """Wait for the background writer to have written what the pages handed it."""
    assert rt().saver.settle(timeout=10)


def shown(at) -> list[tuple[str, str, str, list[str]]]:
    """Every chat message as (role, text, badge, other markdown such as the timeline table)."""
    out = []
    for m in at.chat_message:
        texts = [md.value for md in m.markdown]
        if m.name == "user":  # drawn as typed: escaped HTML, not Markdown
            texts = [typed(m), *texts]
        out.append((m.name, texts[0], " ".join(c.value for c in m.caption), texts[1:]))
    return out


def listed(at) -> dict[str, str]:
    """The sidebar's conversations: id -> shown title."""
    return {b.key.removeprefix("open_"): as_text(b.label) for b in at.sidebar.button if (b.key or "").startswith("open_")}


def test_a_reload_or_a_restart_brings_the_conversation_back_exactly(session):
    at = session(user=ADA)
    at.text_area(key="system").set_value("Answer like a pirate.")
    at.slider(key="temperature").set_value(0.2)
    at.number_input(key="max_tokens").set_value(256)
    session.server.push(Fault.http(503))  # the first answer comes after a failed attempt: a timeline to keep
    chat(at, "What is an understudy?")
    chat(at, "And a stand-in?")
    cid = at.query_params["c"]
    before = shown(at)
    assert len(before) == 4 and "failed/skipped" in before[1][2] and any(t.startswith("| # |") for t in before[1][3])
    saved()

    again = session(user=ADA, c=cid)  # F5: a new session with the same URL
    assert shown(again) == before
    assert again.query_params["c"] == cid
    assert again.text_area(key="system").value == "Answer like a pirate."
    assert again.slider(key="temperature").value == 0.2 and again.number_input(key="max_tokens").value == 256

    st.cache_resource.clear()  # a restart: a new Router, a new store, only the database file remains
    restarted = session(user=ADA, c=cid)
    assert shown(restarted) == before
    assert not restarted.info or all("shared with you" not in i.value for i in restarted.info)
    chat(restarted, "One more?")  # it carries on, with the conversation as context
    body = session.server.chat_requests()[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Answer like a pirate." and body["temperature"] == 0.2
    assert restarted.query_params["c"] == cid


def test_the_users_message_is_saved_before_the_answer_starts(session):
    at = session(user=ADA)
    stored_when_answering = []

    def first_token_delay() -> float:
        # The provider's first token waits until the writer has nothing left to do, then looks at
        # the database: the question must be there already, alone.
        stored_when_answering.append(rt().saver.settle(timeout=5))
        stored_when_answering.append([s.message_count for s in rt().conversations.list("user:ada@example.com")])
        return 0.0

    session.server.first_delay = first_token_delay
    chat(at, "What is an understudy?")
    assert stored_when_answering == [True, [1]]
    assert "openai-test" in shown(at)[1][1]  # and the answer was not held up
    saved()
    assert [m["role"] for m in rt().conversations.load(at.query_params["c"]).messages] == ["user", "assistant"]


def test_the_list_search_rename_and_delete(session):
    at = session(user=ADA)
    chat(at, "Which moon of Saturn has methane lakes?")
    moons = at.query_params["c"]
    at.button(key="new_chat").click().run()
    assert "c" not in at.query_params and len(at.chat_message) == 0
    chat(at, "What is a circuit breaker?")
    breakers = at.query_params["c"]
    assert moons != breakers
    saved()
    at.run()
    assert list(listed(at).items()) == [(breakers, "What is a circuit breaker?"),
                                        (moons, "Which moon of Saturn has methane lakes?")]

    at.text_input(key="conv_search").set_value("METHANE").run()
    assert list(listed(at)) == [moons]
    at.text_input(key="conv_search").set_value("nothing like this").run()
    assert listed(at) == {} and any("No conversation matches" in c.value for c in at.sidebar.caption)
    at.text_input(key="conv_search").set_value("").run()

    at.button(key=f"open_{moons}").click().run()  # open the other one from the list
    assert at.query_params["c"] == moons and shown(at)[0][1] == "Which moon of Saturn has methane lakes?"

    at.text_input(key=f"title_{moons}").set_value("Saturn's lakes").run()
    at.button(key=f"rename_{moons}").click().run()
    assert listed(at)[moons] == "Saturn's lakes"
    assert rt().conversations.load(moons).title == "Saturn's lakes"

    at.button(key=f"delete_{breakers}").click().run()  # asks first
    assert any("Delete “What is a circuit breaker?”" in as_text(w.value) for w in at.sidebar.warning)
    at.button(key="confirm_delete_no").click().run()
    assert breakers in listed(at) and rt().conversations.load(breakers) is not None
    at.button(key=f"delete_{moons}").click().run()
    at.button(key="confirm_delete_yes").click().run()  # the open one: the page starts a new chat
    assert not at.exception
    assert list(listed(at)) == [breakers] and rt().conversations.load(moons) is None
    assert "c" not in at.query_params and len(at.chat_message) == 0

    gone = session(user=ADA, c=moons)  # its link no longer opens anything, and says so
    assert any("no conversation with that id" in e.value for e in gone.error) and len(gone.chat_message) == 0


def test_two_tabs_on_one_conversation_lose_no_turn(session):
    first = session(user=ADA)
    chat(first, "What is an understudy?")
    cid = first.query_params["c"]
    saved()
    second = session(user=ADA, c=cid)  # the same conversation open in a second tab
    chat(first, "Asked in the first tab")
    saved()
    chat(second, "Asked in the second tab")  # it never saw the first tab's new turn
    saved()
    second.run()  # its next run hears where its turns went
    assert not second.exception
    assert any("changed in another tab" in w.value and "Nothing is lost" in w.value for w in second.warning)
    fork = second.query_params["c"]
    assert fork != cid
    questions = lambda c: [m["content"] for m in rt().conversations.load(c).messages if m["role"] == "user"]
    assert questions(cid) == ["What is an understudy?", "Asked in the first tab"]
    assert questions(fork) == ["What is an understudy?", "Asked in the second tab"]
    chat(second, "And on from the copy")  # the second tab carries on in its copy, saved as usual
    saved()
    assert questions(fork)[-1] == "And on from the copy" and questions(cid)[-1] == "Asked in the first tab"
    first.run()
    assert set(listed(first)) == {cid, fork} and listed(first)[fork] == "Copy · What is an understudy?"
    assert not any("changed in another tab" in w.value for w in first.warning)


def test_a_conversation_deleted_in_another_tab_stays_deleted(session):
    first = session(user=ADA)
    chat(first, "Which moon of Saturn has methane lakes?")
    cid = first.query_params["c"]
    saved()
    second = session(user=ADA, c=cid)
    first.button(key=f"delete_{cid}").click().run()
    first.button(key="confirm_delete_yes").click().run()
    chat(second, "Typed in the second tab after the delete")
    saved()
    assert rt().conversations.load(cid) is None and rt().conversations.list("user:ada@example.com") == []
    second.run()
    assert any("deleted in another tab" in w.value for w in second.warning)
    assert "c" not in second.query_params
    assert [m[1] for m in shown(second)][-2] == "Typed in the second tab after the delete"  # still on screen
    chat(second, "Keep it, then")  # a message keeps what is on screen as a new conversation
    saved()
    kept = second.query_params["c"]
    assert kept != cid and [m["content"] for m in rt().conversations.load(kept).messages if m["role"] == "user"][-2:] == [
        "Typed in the second tab after the delete", "Keep it, then"]


def test_nobody_lists_another_owners_conversations_and_login_follows_the_user(session):
    ada = session(user=ADA)
    chat(ada, "Ada's secret question")
    saved()
    bob = session(user=BOB)
    assert listed(bob) == {}
    bob.text_input(key="conv_search").set_value("secret").run()
    assert listed(bob) == {}
    elsewhere = session(user=ADA)  # Ada on another browser: her list follows her
    assert list(listed(elsewhere).values()) == ["Ada's secret question"]
    anonymous = session()  # no login and no cookie (AppTest sends none): a list of this tab's own
    assert listed(anonymous) == {}


def test_login_is_offered_when_it_is_configured(session):
    signed_out = session(user={"is_logged_in": False})  # what st.user is with [auth] set up, before login
    assert [b.label for b in signed_out.sidebar.button if b.key == "login"] == ["Log in"]
    signed_in = session(user=ADA)
    assert [b.key for b in signed_in.sidebar.button if b.key in ("login", "logout")] == ["logout"]
    assert any("ada@example.com" in c.value for c in signed_in.sidebar.caption)
    assert not [b for b in session().sidebar.button if b.key in ("login", "logout")]  # no login configured


def test_a_link_opened_by_someone_else_is_read_as_is_and_continued_as_their_copy(session):
    ada = session(user=ADA)
    chat(ada, "How do lighthouses work?")
    cid = ada.query_params["c"]
    saved()
    bob = session(user=BOB, c=cid)  # the id is the capability: Bob can read it
    assert shown(bob)[0][1] == "How do lighthouses work?"
    assert any("shared with you" in i.value for i in bob.info)
    assert listed(bob) == {}  # but it is not in his list
    chat(bob, "And foghorns?")
    copy = bob.query_params["c"]
    assert copy != cid
    saved()
    assert len(rt().conversations.load(cid).messages) == 2  # Ada's conversation is untouched
    mine = rt().conversations.load(copy)
    assert mine.owner == "user:bob@example.com" and [m["content"] for m in mine.messages][::2] == [
        "How do lighthouses work?", "And foghorns?"]
    assert not any("shared with you" in i.value for i in bob.info)


@pytest.mark.parametrize("link", ["nonsense", "../../etc/passwd", "A" * 32, "0" * 31, "%00", "x" * 5000])
def test_a_malformed_link_is_explained_never_a_traceback(session, link):
    at = session(user=ADA, c=link)
    assert any("conversation id is not valid" in e.value for e in at.error)
    assert "c" not in at.query_params and len(at.chat_message) == 0
    chat(at, "still works?")  # and the page is usable
    assert len(at.chat_message) == 2 and at.query_params["c"] != link


def test_an_unknown_id_says_so(session):
    at = session(user=ADA, c=new_id())
    assert any("no conversation with that id" in e.value for e in at.error) and not at.exception


def test_export_then_import_gives_the_same_conversation_as_a_new_one(session, downloads):
    at = session(user=ADA)
    at.text_area(key="system").set_value("Be brief.")
    session.server.push(Fault.http(503))
    chat(at, "What is an understudy?")
    cid = at.query_params["c"]
    exported = downloads(at.download_button(key="dl_json"))
    doc = json.loads(exported)
    assert doc["id"] == cid and doc["title"] == "What is an understudy?" and doc["system"] == "Be brief."
    assert all(isinstance(m["at"], float) for m in doc["messages"]) and doc["created_at"] <= doc["exported_at"]
    markdown = downloads(at.download_button(key="dl_md")).decode()
    assert cid in markdown and "What is an understudy?" in markdown
    before = shown(at)

    other = session(user=BOB)
    other.file_uploader(key="import_file").set_value(("understudy.json", exported, "application/json")).run()
    assert not other.exception
    assert any("Imported “What is an understudy?”" in as_text(s.value) for s in other.sidebar.success)
    new = other.query_params["c"]
    assert new != cid and shown(other) == before
    assert other.text_area(key="system").value == "Be brief."
    saved()
    assert rt().conversations.load(new).owner == "user:bob@example.com"
    other.run()
    assert list(listed(other)) == [new]


BAD = {
    "empty.json": (b"", "The file is empty"),
    "huge.json": (b"{" + b" " * MAX_IMPORT_BYTES + b"}", "the limit is"),
    "latin1.json": ('{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"), "not UTF-8"),
    "deep.json": (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    "nan.json": (b'{"messages": [], "temperature": NaN}', "NaN"),
    "shape.json": (b'{"messages": [{"role": "wizard", "content": "x"}]}', "role"),
    "notes.json": (b"just some notes", "not valid JSON"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_import_file_is_explained_never_a_traceback(session, name):
    data, why = BAD[name]
    at = session(user=ADA)
    chat(at, "keep me")
    cid = at.query_params["c"]
    at.file_uploader(key="import_file").set_value((name, data, "application/json")).run()
    assert not at.exception
    problems = [as_text(e.value) for e in at.sidebar.error]
    assert any(f"“{name}” can't be imported" in p and why in p for p in problems), problems
    assert at.query_params["c"] == cid and shown(at)[0][1] == "keep me"  # what was open stays open


def test_a_question_nobody_answers_is_kept_with_its_conversation(session):
    at = session(user=ADA)
    assert not any("quote this to support" in c.value for c in at.sidebar.caption)  # no conversation yet
    session.server.set_default(Fault.http(503))
    chat(at, "Which moon of Saturn has methane lakes?")
    kept = rt().router.followups.list()
    assert kept and kept[0].conversation_id == at.query_params["c"] and kept[0].who == "ada@example.com"
    # The user can quote what the Follow-ups page shows for it (the id itself is not shown there).
    assert f"Conversation {label_for(kept[0].conversation_id)} — quote this to support" in [
        c.value for c in at.sidebar.caption]


EVIL = "http://evil.example"
CRAFTED = {  # an export edited by someone who wants a badge to phish and every view to load a pixel
    "title": f"![t]({EVIL}/title.png)",
    "messages": [
        {"role": "user", "content": f"hi ![]({EVIL}/user.png) and ![a][r]\n\n[r]: {EVIL}/ref.png"},
        {"role": "assistant", "content": f"**hello** ![x]({EVIL}/answer.png) ![r][]\n\n[r]: {EVIL}/r.png",
         "meta": {"tier": "provider", "provider": f"[support]({EVIL}/phish)", "model": f"m`![m]({EVIL}/m.png)",
                  "notice": f"<img src={EVIL}/n.png> ![n]({EVIL}/n.png)", "elapsed_ms": 10.0,
                  "attempts": [{"provider": f"p | ![p]({EVIL}/p.png)", "model": "m\n| forged | row |",
                                "outcome": "error", "error_kind": f"[why]({EVIL})", "latency_ms": 5.0,
                                "detail": f"line\n\n![d]({EVIL}/d.png) | cell"}],
                  "switches": [{"failed": f"![f]({EVIL}/f.png)", "provider": f"[to]({EVIL})",
                                "reason": f":red[alarm] ![s]({EVIL}/s.png)"}]}},
    ],
}


def test_an_imported_file_cannot_make_the_page_load_an_image_or_a_badge_link(session):
    at = session(user=ADA)
    data = json.dumps(CRAFTED).encode()
    at.file_uploader(key="import_file").set_value(("crafted.json", data, "application/json")).run()
    assert not at.exception, at.exception
    # No image anywhere: messages, badges, timeline, notices, the title in the list and the notice.
    # (The rename box holds the title as text; a copy button holds its message as data it only ever
    # puts on the clipboard: neither is Markdown.)
    assert b"![" not in rendered(at, skip=("text_input", "html", "bidi_component"))
    # The user's message is drawn as escaped HTML, never Markdown: its `![` is two characters of
    # text there, and no tag can start in it.
    html_drawn = rendered(at, skip=tuple(t for t in {n.type for n in at._tree} if t != "html"))
    assert b"<img" not in html_drawn and b"src=" not in html_drawn
    [user, reply] = at.chat_message
    assert typed(user) == CRAFTED["messages"][0]["content"]  # shown as text
    assert "**hello**" in reply.markdown[0].value  # messages keep their Markdown
    badge, *notes = [c.value for c in reply.caption]
    # Drawn from the file, every value is text: no link, image, code or table syntax of its own.
    model = f"``m`!\\[m]({EVIL}/m.png)``"  # a code span its backtick can't close, and no image in it
    assert model in badge and f"[support]({EVIL}/phish)" in as_text(badge)
    provider = badge.split(" · ")[0]
    assert unescaped_punctuation(provider) == list("****") and as_text(provider) == f"**[support]({EVIL}/phish)**"
    assert len(notes) == 2 and f":red[alarm] ![s]({EVIL}/s.png)" in as_text(notes[0])  # the switch, the notice
    for note in notes:  # no link, image, HTML or code can start: those characters come only escaped
        assert not set(unescaped_punctuation(note)) & set("[]<>!`:")
    table = next(m.value for m in reply.markdown if m.value.startswith("| # |"))
    [header, rule, row] = table.splitlines()  # the attempt's newlines made no row of their own
    cells = re.split(r"(?<!\\)\|", row)[1:-1]
    assert len(cells) == 9 and [as_text(c.strip()) for c in cells][2:6] == [
        f"p | ![p]({EVIL}/p.png)", "m | forged | row |", "error", f"[why]({EVIL})"]
    assert unescaped_punctuation(row) == ["|"] * 10  # only the table's own pipes
