"""The chat page's attached files, copy buttons and times, through Streamlit's AppTest against a
simulated provider and a real SQLite file: what is sent, what is shown, what is refused and how,
that nothing typed is lost, and that a reload and both downloads keep it all."""

from __future__ import annotations

import json

import pytest

from core.messages import MAX_INPUT_CHARS
from tests.conftest import as_text, typed
from tests.test_chat_history import ADA, chat, saved, session  # noqa: F401 (fixture)

LOG = b"2026-12-04 10:00:01 ERROR db *timeout*\n2026-12-04 10:00:02 INFO retry 1. ok\n"


def send(at, text, *attached):
    box = at.chat_input[0].set_value(text)
    for name, data in attached:
        box.upload(name, data, "text/plain")
    at.run()
    assert not at.exception, at.exception
    return at


def actions(block) -> list[dict]:
    """The data each message's copy-and-time row was given (what Copy copies, the time shown)."""
    return [json.loads(e.proto.json) for e in block if e.type == "bidi_component"]


def problems(at) -> str:
    return " ".join(as_text(e.value) for e in at.error)


def test_an_attached_file_is_sent_with_the_message_shown_collapsed_and_kept(session, downloads):
    at = session(user=ADA)
    send(at, "What failed here?", ("logs/server.log", LOG))
    sent = session.server.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent == ("What failed here?\n\nAttached file “server.log”:\n```\n" + LOG.decode().rstrip("\n") + "\n```")
    user = at.chat_message[0]
    assert typed(user) == "What failed here?"
    (box,) = user.expander
    assert as_text(box.label) == "📎 server.log · 76 bytes · 2 lines"
    assert box.code[0].value == LOG.decode().rstrip("\n")  # as it is, in a code block (with its own copy button)
    [mine] = actions(user)
    assert mine["text"] == "What failed here?" and isinstance(mine["at"], float)
    cid = at.query_params["c"]
    saved()

    again = session(user=ADA, c=cid)  # F5: it comes back, file and all
    (box,) = again.chat_message[0].expander
    assert box.code[0].value == LOG.decode().rstrip("\n") and actions(again.chat_message[0]) == [mine]
    doc = json.loads(downloads(again.download_button(key="dl_json")))
    assert doc["messages"][0]["attachments"] == [{"name": "server.log", "size": 76, "text": LOG.decode()}]
    assert all(m["time"].endswith("Z") for m in doc["messages"])
    markdown = downloads(again.download_button(key="dl_md")).decode()
    assert "📎 server\\.log · 76 bytes" in markdown and "10:00:01 ERROR db *timeout*" in markdown


def test_files_alone_make_a_message_and_its_title(session):
    at = session(user=ADA)
    send(at, "", ("a.log", b"alpha\n"), ("b.txt", "βeta ✓".encode()))
    sent = session.server.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent == "Attached file “a.log”:\n```\nalpha\n```\n\nAttached file “b.txt”:\n```\nβeta ✓\n```"
    user = at.chat_message[0]
    assert [as_text(e.label) for e in user.expander] == ["📎 a.log · 6 bytes · 1 line", "📎 b.txt · 9 bytes · 1 line"]
    assert not [e for e in user if e.type == "html"]  # nothing typed, nothing drawn for it
    assert actions(user)[0]["text"] == sent  # Copy takes the files' text when that is all there is
    assert "📎 a.log, 📎 b.txt" in [as_text(b.label) for b in at.sidebar.button]


@pytest.mark.parametrize("name, data, why", [
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "“photo.png” looks like a PNG image, not text"),
    ("dump.bin", b"\x00\x01\x02binary", "“dump.bin” is not a text file"),
    ("old.log", "caf\u00e9".encode("latin-1"), "“old.log” is not UTF-8 text (byte 3 is not valid)"),
    ("empty.txt", b"", "“empty.txt” is empty"),
    ("big.log", b"x" * (MAX_INPUT_CHARS + 1), "“big.log” is 200,001 characters; a message can hold at most 200,000"),
])
def test_a_bad_file_is_explained_nothing_is_sent_and_the_text_goes_back_in_the_box(session, name, data, why):
    at = session(user=ADA)
    send(at, "Please read the attached  file\nline two", ("fine.log", b"ok\n"), (name, data))
    assert why in problems(at) and "“fine.log”" in problems(at) and "Nothing was sent" in problems(at)
    assert not at.chat_message and session.server.chat_requests() == []
    assert at.chat_input[0].proto.value == "Please read the attached  file\nline two"  # exactly as typed
    at.run()  # the next run: the notice has been read, the box is left to the user
    assert not at.error and not at.exception


def test_the_limit_counts_what_was_typed_and_the_files_together(session):
    at = session(user=ADA)
    half = b"y" * (MAX_INPUT_CHARS // 2)
    send(at, "Compare these", ("one.log", half), ("two.log", half))
    assert "Your message and its files come to 200," in problems(at) and "at most 200,000" in problems(at)
    assert not at.chat_message and at.chat_input[0].proto.value == "Compare these"


def test_a_message_over_the_limit_says_its_files_were_not_sent_either(session):
    at = session(user=ADA)
    text = "z" * (MAX_INPUT_CHARS + 1)
    send(at, text, ("trace.log", b"boom\n"))
    assert at.text_area(key="kept_input_box").value == text  # the text is shown back whole
    assert "nor its files (trace.log)" in problems(at)  # and the files are not dropped silently
    assert not at.chat_message and session.server.chat_requests() == []


def test_every_message_has_its_time_and_what_copy_takes(session):
    at = session(user=ADA)
    chat(at, "**not bold** as typed")
    user, reply = at.chat_message
    [mine], [theirs] = actions(user), actions(reply)
    assert mine["text"] == "**not bold** as typed"  # what was typed, not what Markdown would make of it
    assert theirs["text"] == reply.markdown[0].value  # the answer's Markdown, as ChatGPT copies it
    assert 0 < mine["at"] <= theirs["at"]


def test_a_message_over_the_limit_is_shown_back_whole_each_time(session):
    at = session(user=ADA)
    for text in ("a" * (MAX_INPUT_CHARS + 1), "b" * (MAX_INPUT_CHARS + 2)):  # the second is shown, not the first
        chat(at, text)
        assert at.text_area(key="kept_input_box").value == text and f"{len(text):,} characters" in at.warning[0].value
    assert not at.chat_message
