"""Conversations: the store's contract (the same tests on SQLite and on a real PostgreSQL), the JSON
export read back strictly, the background saver through a real database outage, and who owns what."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.clock import wait_until
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from core.browser import COOKIE, BrowserCookie, browser_owner, owner_for
from core.saving import ConversationSaver, Moved
from core.store import StoreError
from core.store.conversations import (BadConversationId, Conversation, Saved, SqlConversationStore,
                                      conversations_table, label_for, new_id, parse_id, title_for)
from core.transcript import MAX_IMPORT_BYTES, BadImport, parse_export, to_json, to_markdown
from tests.conftest import as_text, unescaped_punctuation
from tests.netcut import NetCut

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADA, BOB = "user:ada@example.com", "browser:" + "b" * 32

META = {"tier": "provider", "complete": True, "provider": "anthropic-0", "model": "claude-test",
        "usage": {"input_tokens": 10, "output_tokens": 3}, "elapsed_ms": 812.5, "finish_reason": "stop",
        "notice": "", "ttft_ms": 120.0, "switches": [{"failed": "openai-1", "provider": "anthropic-0",
                                                       "reason": "stream broke"}],
        "attempts": [{"provider": "openai-1", "model": "gpt-test", "outcome": "error", "error_kind": "overloaded",
                      "latency_ms": 40.0, "ttft_ms": None, "detail": "529", "hedge": False, "stall": False, "status": None},
                     {"provider": "anthropic-0", "model": "claude-test", "outcome": "ok", "error_kind": None,
                      "latency_ms": 700.0, "ttft_ms": 120.0, "detail": "", "hedge": True, "stall": False, "status": None}]}


def conversation(owner=ADA, *, at=100.0, question="Which moon of Saturn has methane lakes? 100% _serious_",
                 **kw) -> Conversation:
    messages = [{"role": "user", "content": question, "at": at},
                {"role": "assistant", "content": "Titan — ünïcode ✓\nsecond line", "meta": META, "at": at + 1}]
    fields = dict(id=new_id(), owner=owner, created_at=at, updated_at=at + 1, messages=messages,
                  settings={"system": "Answer like a pirate.", "temperature": 0.2, "max_tokens": 256})
    fields.update(kw)
    return Conversation(**fields)


# -- the contract, against every backend ----------------------------------------------------------
@pytest.fixture
def store(store_url):
    s = SqlConversationStore(store_url)
    yield s
    s.close()


def test_contract_save_then_load_gives_back_exactly_what_was_saved(store):
    c = conversation(writer="tab-1")
    assert store.save(c) is Saved.SAVED
    back = store.load(c.id)
    assert back == c.with_(title=title_for(c.messages), version=1)
    assert back.messages[1]["meta"] == META  # badges and the "How it got here" timeline, whole
    assert back.title == "Which moon of Saturn has methane lakes? 100% _serious_"
    assert store.load(new_id()) is None


def ask(c: Conversation, question: str, **kw) -> Conversation:
    return c.with_(messages=c.messages + [{"role": "user", "content": question}], **kw)


def test_contract_a_save_builds_on_the_stored_version_or_on_its_own_writers_last_save(store):
    c = conversation(writer="tab-1")
    assert store.save(c) is Saved.SAVED  # version 1
    longer = ask(c, "and Enceladus?", settings={**c.settings, "temperature": 1.3})
    assert store.save(longer) is Saved.SAVED  # the same tab again, still built on version 0: its own
    assert store.load(c.id) == longer.with_(title=title_for(c.messages), version=2)
    loaded = store.load(c.id)
    assert store.save(ask(loaded, "Mimas?", writer="tab-2")) is Saved.SAVED  # another tab, on version 2
    assert store.save(ask(longer, "Titan again?")) is Saved.CONFLICT  # tab 1 never saw Mimas
    assert store.save(ask(c, "stale", writer="")) is Saved.CONFLICT  # no writer: only its version counts
    assert store.save(longer.with_(owner=BOB, version=3, messages=[])) is Saved.NOT_YOURS
    back = store.load(c.id)
    assert [m["content"] for m in back.messages][-2:] == ["and Enceladus?", "Mimas?"]
    assert (back.owner, back.version, back.writer) == (ADA, 3, "tab-2")


def test_contract_two_tabs_lose_no_turn(store):
    """Two tabs open the same conversation; each adds a turn. The second save can't write over the
    first one's turn: it is refused as a conflict, and both versions of what was typed still exist."""
    start = conversation()
    store.save(start)
    one, two = store.load(start.id).with_(writer="tab-1"), store.load(start.id).with_(writer="tab-2")
    assert store.save(ask(one, "from tab one")) is Saved.SAVED
    assert store.save(ask(two, "from tab two")) is Saved.CONFLICT
    assert store.load(start.id).messages[-1]["content"] == "from tab one"


def test_contract_clocks_never_decide(store):
    """A replica whose clock is behind still saves a snapshot built on the stored version."""
    c = conversation(at=5000.0, writer="replica-a")
    store.save(c)
    behind = ask(store.load(c.id), "written by a replica whose clock is an hour slow", writer="replica-b",
                 updated_at=c.updated_at - 3600)
    assert store.save(behind) is Saved.SAVED
    assert store.load(c.id).messages[-1]["content"].startswith("written by a replica")


def test_contract_list_is_the_owners_newest_first(store):
    old = conversation(at=100.0, question="old question")
    new = conversation(at=300.0, question="new question")
    mid = conversation(at=200.0, question="middle question")
    bobs = conversation(BOB, at=400.0, question="Bob's question")
    for c in (old, new, mid, bobs):
        store.save(c)
    mine = store.list(ADA)
    assert [s.id for s in mine] == [new.id, mid.id, old.id]
    assert (mine[0].title, mine[0].message_count, mine[0].updated_at) == ("new question", 2, 301.0)
    assert [s.id for s in store.list(ADA, limit=2)] == [new.id, mid.id]
    assert [s.id for s in store.list(BOB)] == [bobs.id]
    assert store.list("user:nobody@example.com") == []


def test_contract_search_is_case_insensitive_literal_and_reads_the_messages(store):
    moon = conversation(at=100.0)
    other = conversation(at=200.0, question="What is a circuit breaker?")
    quoted = conversation(at=300.0, question='She said "hello" \\ back')
    for c in (moon, other, quoted):
        store.save(c)
    assert [s.id for s in store.list(ADA, search="METHANE")] == [moon.id]  # the title
    assert [s.id for s in store.list(ADA, search="second line")] == [quoted.id, other.id, moon.id]  # answers
    assert [s.id for s in store.list(ADA, search="100%")] == [moon.id]  # % and _ are literal
    assert [s.id for s in store.list(ADA, search="_serious_")] == [moon.id]
    assert store.list(ADA, search="100%_") == []
    assert [s.id for s in store.list(ADA, search='"hello" \\')] == [quoted.id]  # JSON-escaped characters
    assert store.list(ADA, search="content") == [] and store.list(ADA, search="anthropic-0") == []  # not the JSON
    assert store.list(BOB, search="methane") == []
    assert [s.id for s in store.list(ADA, search="second line", limit=1)] == [quoted.id]


def test_contract_rename_sticks_and_only_for_the_owner(store):
    c = conversation()
    store.save(c)
    assert store.rename(c.id, owner=BOB, title="Bob was here") is False
    assert store.rename(c.id, owner=ADA, title="  Saturn\n moons ") is True
    assert store.rename(c.id, owner=ADA, title="   ") is False
    store.save(c.with_(updated_at=500.0))  # later saves keep the chosen title
    assert store.load(c.id).title == "Saturn moons" and store.list(ADA)[0].title == "Saturn moons"
    assert store.rename(new_id(), owner=ADA, title="x") is False


def test_contract_delete_only_for_the_owner_and_for_good(store):
    c, keep = conversation(writer="tab-1"), conversation(at=50.0)
    store.save(c), store.save(keep)
    assert store.delete(c.id, owner=BOB) is False and store.load(c.id) is not None
    assert store.delete(c.id, owner=ADA) is True
    assert store.load(c.id) is None and [s.id for s in store.list(ADA)] == [keep.id]
    assert [s.id for s in store.list(ADA, search="methane")] == [keep.id]  # search skips it too
    assert store.delete(c.id, owner=ADA) is False
    # A snapshot still on its way (another tab, another replica, this tab's own writer) can't bring it back.
    for late in (ask(c, "one more"), ask(c, "from elsewhere", writer="tab-2"), c.with_(version=1)):
        assert store.save(late) is Saved.DELETED
    assert store.load(c.id) is None and store.rename(c.id, owner=ADA, title="back?") is False
    # What is left is a tombstone: nothing of what was said.
    t = conversations_table
    with store.db.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == c.id)).one()
    assert (row.title, row.messages, row.settings, row.message_count) == ("", "[]", "{}", 0)
    assert row.deleted_at is not None


def test_contract_import_from_the_json_export(store):
    c = conversation()
    exported = to_json(c.messages, c.settings, id=c.id, title="Moons", created_at=c.created_at,
                       updated_at=c.updated_at, exported_at=999.0).encode()
    imported = store.import_json(exported, owner=BOB, now=1000.0)
    assert imported.id != c.id and parse_id(imported.id) == imported.id
    back = store.load(imported.id)
    assert (back.owner, back.title, back.created_at, back.settings) == (BOB, "Moons", 1000.0, c.settings)
    assert back.messages == c.messages
    with pytest.raises(BadImport):
        store.import_json(b"{}", owner=BOB, now=1.0)
    assert [s.id for s in store.list(BOB)] == [imported.id]


def test_contract_many_threads_and_two_store_instances(store, store_url):
    other = SqlConversationStore(store_url)  # another process, as far as the database can tell
    try:
        shared = conversation()
        store.save(shared)
        errors: list[BaseException] = []
        results: list[Saved] = []

        def work(n: int) -> None:
            try:
                for i in range(5):
                    store.save(conversation(at=float(n * 10 + i)))
                    # Each thread a writer, all on the version it last read: saves race on one row.
                    mine = (store if n % 2 else other).load(shared.id).with_(writer=f"tab-{n}")
                    results.append((store if n % 2 else other).save(ask(mine, f"{n}.{i}")))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(other.list(ADA, limit=100)) == 31
        assert set(results) <= {Saved.SAVED, Saved.CONFLICT} and len(results) == 30
        # Every save that said SAVED wrote exactly once, on top of the one before it: none was lost.
        back = other.load(shared.id)
        assert back.version == 1 + results.count(Saved.SAVED)
        assert len(back.messages) == 2 + results.count(Saved.SAVED)  # each added a question to the latest copy
    finally:
        other.close()


def test_contract_a_dead_database_is_one_store_error(tmp_path):
    cut = NetCut("127.0.0.1", 9)  # nothing listens on the discard port: every connection fails
    cut.cut()
    try:
        s = SqlConversationStore(f"postgresql+psycopg://postgres@127.0.0.1:{cut.port}/test")
        for call in (lambda: s.save(conversation()), lambda: s.load(new_id()), lambda: s.list(ADA)):
            with pytest.raises(StoreError) as e:
                call()
            assert "store at postgresql" in str(e.value) and "Saturn" not in str(e.value)
        s.close()
    finally:
        cut.close()


# -- ids ------------------------------------------------------------------------------------------
def test_ids_are_128_random_bits_and_links_are_checked_strictly():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    good = new_id()
    assert parse_id(good) == good
    for bad in ("", good[:-1], good + "0", good.upper(), good[:31] + "g", f" {good}", "../etc/passwd",
                "x" * 10_000, None, 42, [good]):
        with pytest.raises(BadConversationId) as e:
            parse_id(bad)
        assert "not valid" in str(e.value) and "passwd" not in str(e.value)


def test_title_is_the_first_question_on_one_line():
    assert title_for([{"role": "assistant", "content": "hi"}, {"role": "user", "content": " a\n\n b "}]) == "a b"
    long = title_for([{"role": "user", "content": "word " * 50}])
    assert len(long) == 80 and long.endswith("…")
    assert title_for([]) == ""


# -- the export, read back ------------------------------------------------------------------------
def test_export_round_trip_and_the_markdown_names_the_conversation():
    c = conversation()
    text = to_json(c.messages, c.settings, id=c.id, title="Moons", created_at=1.0, updated_at=2.0, exported_at=3.0)
    doc = json.loads(text)
    assert (doc["id"], doc["created_at"], doc["updated_at"], doc["exported_at"]) == (c.id, 1.0, 2.0, 3.0)
    assert doc["messages"][0]["at"] == 100.0
    parsed = parse_export(text.encode())
    assert parsed.messages == c.messages and parsed.settings == c.settings and parsed.title == "Moons"
    md = to_markdown(c.messages, c.settings, id=c.id, title="Moons")
    assert md.startswith("# Moons") and c.id in md
    assert "**Assistant (anthropic-0, claude-test)** · 1970-01-01 00:01:41 UTC" in as_text(md)


def test_both_exports_give_each_message_its_time():
    c = conversation(at=1_796_648_592.0)  # 2026-12-07 13:03:12 UTC
    doc = json.loads(to_json(c.messages, c.settings))
    assert [(m["at"], m["time"]) for m in doc["messages"]] == [(1_796_648_592.0, "2026-12-07T13:03:12Z"),
                                                               (1_796_648_593.0, "2026-12-07T13:03:13Z")]
    md = to_markdown(c.messages, c.settings, tz=ZoneInfo("Europe/Berlin"))  # the reader's zone, named
    assert "**You** · 2026-12-07 14:03:12 CET" in md and "· 2026-12-07 14:03:13 CET" in md
    assert "**You** · 2026-12-07 13:03:12 UTC" in to_markdown(c.messages, c.settings)
    assert parse_export(to_json(c.messages, c.settings).encode()).messages == c.messages  # `time` is not kept twice
    by_time = {"messages": [{"role": "user", "content": "q", "time": "2026-12-07T13:03:12Z"}]}
    assert parse_export(json.dumps(by_time).encode()).messages[0]["at"] == 1_796_648_592.0


def test_an_attached_file_goes_into_both_exports_and_comes_back():
    log = "10:00 ERROR *not italic*\n```\n![](http://evil.example/x.png)\n"
    c = conversation()
    c.messages[0]["attachments"] = [{"name": "server.log", "size": 58, "text": log}]
    doc = json.loads(to_json(c.messages, c.settings))
    assert doc["messages"][0]["attachments"] == [{"name": "server.log", "size": 58, "text": log}]
    assert parse_export(json.dumps(doc).encode()).messages == c.messages
    md = to_markdown(c.messages, c.settings)
    assert "📎 server\\.log · 58 bytes\n\n````\n10:00 ERROR *not italic*\n```\n!\\[](http" in md  # fenced: no image
    assert "![" not in md
    too_big = {"messages": [{"role": "user", "content": "q", "attachments": [{"name": "a", "text": "x" * 200_001}]}]}
    with pytest.raises(BadImport, match=r"messages\[0\]: Your message and its files come to 200,0"):
        parse_export(json.dumps(too_big).encode())


def test_the_markdown_export_of_a_crafted_import_embeds_no_image_and_no_link_from_its_badges():
    evil = "[support](http://evil.example/phish) ![](http://evil.example/p.png)"
    crafted = {"title": "![t](http://evil.example/t.png)", "system": "Be ![s](http://evil.example/s.png) brief.",
               "messages": [{"role": "user", "content": "hi ![a][r]\n\n[r]: http://evil.example/r.png"},
                            {"role": "assistant", "content": "**hello** ![](http://evil.example/x.png)",
                             "meta": {"provider": evil, "model": "m`\n# injected"}}]}
    parsed = parse_export(json.dumps(crafted).encode())
    md = to_markdown(parsed.messages, parsed.settings, id="0" * 32, title=parsed.title)
    assert "![" not in md  # no image at all (a message's `!\[` shows as text)
    [badge] = [line for line in md.splitlines() if line.startswith("**Assistant")]
    assert unescaped_punctuation(badge) == list("**(,)**")  # only our own bold and brackets: nothing from the file
    assert "\n# injected" not in md and "**hello**" in md  # the badge stays on its line; messages keep Markdown
    assert unescaped_punctuation(md.splitlines()[0]) == ["#"]  # the title is a heading of text
    assert f"**Assistant ({evil}, m` # injected)**" in as_text(md)  # the badge reads as it was


def test_an_export_from_before_ids_still_imports():
    old = {"system": "Be brief.", "temperature": 0.7, "max_tokens": 1024,
           "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    parsed = parse_export(json.dumps(old).encode("utf-8-sig"))
    assert parsed.settings == {"system": "Be brief.", "temperature": 0.7, "max_tokens": 1024}
    assert parsed.messages == old["messages"]



@pytest.mark.parametrize("at", [1e20, 253402300800, -1.0, 1e12])
def test_a_time_no_calendar_can_show_is_dropped_on_import_and_both_exports_still_work(at):
    # A hand-edited export once saved a conversation whose every page run then raised OverflowError.
    parsed = parse_export(json.dumps({"messages": [{"role": "user", "content": "hi", "at": at},
                                                   {"role": "assistant", "content": "hello", "at": 1_700_000_000}]}
                                     ).encode())
    assert "at" not in parsed.messages[0] and parsed.messages[1]["at"] == 1_700_000_000
    assert "hi" in to_markdown(parsed.messages, {}) and "2023-11-14" in to_markdown(parsed.messages, {})
    assert json.loads(to_json(parsed.messages, {}))


def test_an_attachment_size_no_file_could_have_is_recomputed_from_its_text():
    export = (b'{"messages":[{"role":"user","content":"hi","attachments":[{"name":"a.log","text":"xyz","size":1'
              + b"0" * 400 + b"}]}]}")
    parsed = parse_export(export)
    assert parsed.messages[0]["attachments"][0]["size"] == 3
    assert "3 bytes" in to_markdown(parsed.messages, {})

BAD_FILES = {
    "empty": (b"", "empty"),
    "huge": (b" " * (MAX_IMPORT_BYTES + 1), "limit"),
    "not UTF-8": (b'{"messages": ["\xff\xfe"]}', "not UTF-8"),
    "not JSON": (b"# Understudy conversation\n", "not valid JSON"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "nesting past the limit": (b'{"messages": [], "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested too deeply"),
    "NaN": (b'{"messages": [], "temperature": NaN}', "NaN"),
    "Infinity": (b'{"messages": [], "temperature": -Infinity}', "Infinity"),
    "a list": (b"[]", "\"messages\" list"),
    "no messages": (b'{"system": "x"}', "\"messages\" list"),
    "messages not a list": (b'{"messages": {"role": "user"}}', "\"messages\" list"),
    "a message not an object": (b'{"messages": ["hi"]}', "messages[0] must be an object"),
    "a bad role": (b'{"messages": [{"role": "system", "content": "x"}]}', "messages[0].role"),
    "content not text": (b'{"messages": [{"role": "user", "content": {"a": 1}}]}', "messages[0].content"),
    "temperature out of range": (b'{"messages": [], "temperature": 5}', "temperature"),
    "max_tokens a boolean": (b'{"messages": [], "max_tokens": true}', "max_tokens"),
    "max_tokens too big": (b'{"messages": [], "max_tokens": 10000000}', "max_tokens"),
    "system not text": (b'{"messages": [], "system": 3}', "system"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_are_refused_with_a_reason(name):
    data, why = BAD_FILES[name]
    with pytest.raises(BadImport) as e:
        parse_export(data)
    assert why in str(e.value)


def test_hand_edited_badges_are_rebuilt_from_known_fields():
    doc = {"messages": [{"role": "user", "content": "q\ud800\x00"},
                        {"role": "assistant", "content": "a", "at": "yesterday",
                         "meta": {"tier": "bogus", "elapsed_ms": "fast", "attempts": [
                             {"outcome": "exploded", "latency_ms": -1, "provider": 7}, "junk"],
                             "switches": "none", "script": "<script>"}}]}
    parsed = parse_export(json.dumps(doc).encode())
    assert parsed.messages[0] == {"role": "user", "content": "q\ufffd"}
    meta = parsed.messages[1]["meta"]
    assert "at" not in parsed.messages[1] and "script" not in meta
    assert (meta["tier"], meta["elapsed_ms"], meta["switches"]) == ("provider", None, [])
    assert meta["attempts"] == [{"provider": "", "model": "", "outcome": "error", "error_kind": None,
                                 "latency_ms": 0.0, "ttft_ms": None, "detail": "", "hedge": False, "stall": False, "status": None}]


# -- the saver: writes off the request thread, through a real outage ---------------------------------
@pytest.fixture
def sqlite_saver(tmp_path):
    """(store, saver) on a new SQLite file, as the app's embedded default has them."""
    store = SqlConversationStore(f"sqlite:///{tmp_path}/db/understudy.db")
    saver = ConversationSaver(store)
    yield store, saver
    saver.close()
    store.close()


def test_the_saver_writes_in_the_background_latest_snapshot_wins(sqlite_saver):
    store, saver = sqlite_saver
    c = conversation()
    for i in range(20):
        saver.submit(c.with_(updated_at=200.0 + i, messages=c.messages[:1] * (i + 1)))
    # The clock stepped back (NTP): a writer's snapshots still count in the order it made them.
    saver.submit(c.with_(updated_at=150.0, messages=c.messages[:1] * 21))
    assert saver.wait_saved(c.id, timeout=10)
    assert store.load(c.id).updated_at == 150.0 and len(store.load(c.id).messages) == 21
    assert saver.pending(c.id) is None and saver.failing(c.id) is None
    assert saver.health()["status"] == "ok"


def test_the_saver_from_many_threads_at_once(sqlite_saver):
    store, saver = sqlite_saver
    own = [conversation(at=float(n), writer=f"tab-{n}") for n in range(8)]
    shared = conversation(at=1000.0)  # open in all eight tabs at once

    def final(n: int) -> list[dict]:
        return shared.messages + [{"role": "user", "content": f"tab {n}, turn 19"}]

    def session(n: int) -> None:  # each browser session is a thread, and a writer
        for i in range(20):
            saver.submit(own[n].with_(updated_at=100.0 + i, messages=own[n].messages[:1] * (i + 1)))
            saver.submit(shared.with_(updated_at=2000.0 + i, writer=f"tab-{n}",
                                      messages=shared.messages + [{"role": "user", "content": f"tab {n}, turn {i}"}]))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert saver.settle(timeout=10)
    for c in own + [shared]:
        assert saver.wait_saved(c.id, timeout=10)
    assert all(len(store.load(c.id).messages) == 20 for c in own)
    # One tab's turns went into the conversation; every other tab's are kept as its own copy.
    moves = {n: saver.moved(shared.id, f"tab-{n}") for n in range(8)}
    kept_here = [n for n, m in moves.items() if m is None]
    assert len(kept_here) == 1 and store.load(shared.id).messages == final(kept_here[0])
    for n, m in moves.items():
        if m is not None:
            assert saver.wait_saved(m.to, timeout=10)
            assert m.kind == "forked" and store.load(m.to).messages == final(n)
            assert store.load(m.to).title == "Copy · " + title_for(shared.messages)
    assert len(store.list(ADA, limit=100)) == 8 + 8


def test_the_saver_keeps_a_second_tabs_turns_as_a_new_conversation(sqlite_saver):
    store, saver = sqlite_saver
    c = conversation()
    store.save(c)
    opened = store.load(c.id)
    saver.submit(ask(opened, "from tab one", writer="tab-1"))
    assert saver.wait_saved(c.id, timeout=10)
    saver.submit(ask(opened, "from tab two", writer="tab-2", updated_at=9999.0))
    assert saver.settle(timeout=10)
    assert saver.moved(c.id, "tab-1") is None
    moved = saver.moved(c.id, "tab-2")
    assert moved.kind == "forked" and moved.to != c.id and saver.moved(c.id, "tab-2") is None  # told once
    assert saver.wait_saved(moved.to, timeout=10)
    assert store.load(c.id).messages[-1]["content"] == "from tab one"
    fork = store.load(moved.to)
    assert fork.messages[-1]["content"] == "from tab two" and fork.owner == ADA
    assert fork.title == moved.title == "Copy · " + title_for(c.messages)
    # The fork is that tab's to carry on: its next snapshot (on version 0, its own writer) is saved.
    saver.submit(ask(fork.with_(version=0), "and on", writer="tab-2", updated_at=10000.0))
    assert saver.wait_saved(moved.to, timeout=10) and saver.moved(moved.to, "tab-2") is None
    assert store.load(moved.to).messages[-1]["content"] == "and on"
    assert saver.health()["saved"] == 4 - 1  # the conflicting snapshot wrote nothing itself


def test_after_a_fork_the_original_reopened_is_the_original(sqlite_saver):
    """Tab two forked; whether or not its page has heard yet, a snapshot built on the original as
    it is now (reopened from the list) goes to the original, never over the fork."""
    store, saver = sqlite_saver
    forks: set[str] = set()
    for told in (True, False):
        c = conversation()
        store.save(c)
        opened = store.load(c.id)
        store.save(ask(opened, "from tab one", writer="tab-1"))
        saver.submit(ask(opened, "from tab two", writer="tab-2"))
        assert saver.settle(timeout=10) and saver.waiting_for(c.id, "tab-2") == "moved"
        if told:
            assert saver.moved(c.id, "tab-2").kind == "forked"  # its page moved on, then came back
        assert saver.settle(timeout=10)
        fork_id, = {s.id for s in store.list(ADA, limit=100) if s.title.startswith("Copy · ")} - forks
        forks.add(fork_id)
        reopened = store.load(c.id).with_(writer="tab-2")  # tab two clicks the original in its list
        saver.submit(ask(reopened, "carry on in the original"))
        assert saver.wait_saved(c.id, timeout=10) and saver.settle(timeout=10)
        questions = lambda cid: [m["content"] for m in store.load(cid).messages if m["role"] == "user"][1:]
        assert questions(c.id) == ["from tab one", "carry on in the original"]
        assert questions(fork_id) == ["from tab two"]


def test_a_conversation_the_database_refuses_is_reported_not_retried_for_ever(latin1_database):
    """A PostgreSQL database in LATIN1 can't hold Japanese: the store says so in a StoreError (no
    traceback), and the saver tells the page instead of showing "not saved yet" for ever."""
    store = SqlConversationStore(latin1_database)
    saver = ConversationSaver(store, backoff=(3600.0,))
    try:
        latin = conversation(writer="tab-1").with_(messages=[{"role": "user", "content": "Où est la gare ?"}])
        assert store.save(latin) is Saved.SAVED
        with pytest.raises(StoreError):
            store.list(ADA, search="日本")
        c = conversation(question="日本の首都は？", writer="tab-1")
        saver.submit(c)
        assert saver.settle(timeout=10)
        assert saver.pending(c.id) is None and saver.failing(c.id) is None
        moved = saver.moved(c.id, "tab-1")
        assert moved.kind == "refused" and "日本" not in moved.why and "LATIN1" in moved.why
        assert store.load(c.id) is None and store.load(latin.id).messages == latin.messages
    finally:
        saver.close()
        store.close()


def test_deleting_a_conversation_deletes_the_questions_kept_from_it(store):
    from core.store import SqlFollowUpStore

    kept = SqlFollowUpStore(store.db)
    c, other = conversation(), conversation()
    store.save(c), store.save(other)
    kept.add("Where is my parcel?", asked_at=1.0, conversation_id=c.id)
    kept.add("Unrelated", asked_at=2.0, conversation_id=other.id)
    assert store.delete(c.id, owner=BOB) is False and len(kept.list()) == 2  # not Bob's to delete
    assert store.delete(c.id, owner=ADA)
    assert [f.question for f in kept.list()] == ["Unrelated"]


def test_the_saver_never_brings_back_a_deleted_conversation(sqlite_saver):
    store, saver = sqlite_saver
    c = conversation(writer="tab-2")
    store.save(c)
    assert store.delete(c.id, owner=ADA)  # in tab one, or on another replica
    saver.submit(ask(c, "typed in tab two after the delete"))
    assert saver.settle(timeout=10) and saver.pending(c.id) is None
    assert saver.moved(c.id, "tab-2") == Moved("deleted")
    assert store.load(c.id) is None and store.list(ADA) == []


def test_a_database_from_before_versions_is_migrated_and_its_conversations_carry_on(tmp_path):
    """A data directory written by the release before versioned saves (schema 4): the columns are
    added on start, and its conversations load and save as before."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    old = sa.MetaData()
    sa.Table("understudy_migrations", old, sa.Column("version", sa.Integer, primary_key=True),
             sa.Column("applied_at", sa.Float, nullable=False))
    sa.Table("conversations", old, *[sa.Column(col.name, col.type, primary_key=col.primary_key)
                                     for col in conversations_table.c
                                     if col.name not in ("version", "writer", "deleted_at")])
    old.create_all(engine)
    c = conversation()
    with engine.begin() as conn:
        conn.execute(old.tables["understudy_migrations"].insert(), [{"version": 2, "applied_at": 1.0}])
        conn.execute(old.tables["conversations"].insert().values(
            id=c.id, owner=c.owner, title="Moons", created_at=c.created_at, updated_at=c.updated_at,
            settings=json.dumps(c.settings), messages=json.dumps(c.messages), message_count=2))
    engine.dispose()
    store = SqlConversationStore(url)
    try:
        assert store.db.schema_version() == 5
        back = store.load(c.id)
        assert (back.version, back.writer, back.messages, back.title) == (0, "", c.messages, "Moons")
        assert store.save(ask(back, "still here?", writer="tab-1")) is Saved.SAVED
        assert store.load(c.id).version == 1
        assert store.delete(c.id, owner=ADA) and store.load(c.id) is None
    finally:
        store.close()


def test_the_saver_keeps_what_it_could_not_write_and_writes_it_when_the_database_is_back(pg_schema):
    url = sa.make_url(pg_schema)
    cut = NetCut("127.0.0.1", url.port)
    proxied = SqlConversationStore(url.set(port=cut.port).render_as_string(hide_password=False))
    direct = SqlConversationStore(pg_schema)
    saver = ConversationSaver(proxied, backoff=(3600.0,))  # only a nudge retries: the test says when
    try:
        proxied.migrate()
        first = conversation()
        saver.submit(first)
        assert saver.wait_saved(first.id, timeout=10)
        cut.cut()  # PostgreSQL becomes unreachable
        c = conversation(at=500.0)
        saver.submit(c)
        assert saver.settle(timeout=10)
        assert isinstance(saver.failing(c.id), StoreError) and saver.pending(c.id) == c
        assert saver.health()["status"] == "failing" and "Saturn" not in saver.health()["last_error"]
        assert direct.load(c.id) is None
        saver.nudge()  # still down: still kept
        assert saver.settle(timeout=10) and saver.pending(c.id) == c
        cut.restore()
        saver.nudge()
        assert saver.wait_saved(c.id, timeout=10)
        assert direct.load(c.id) == c.with_(title=title_for(c.messages), version=1)
        assert saver.failing(c.id) is None and saver.health()["status"] == "ok"
    finally:
        saver.close(timeout=1)
        proxied.close(), direct.close()
        cut.close()


def test_the_saver_retries_on_its_own_with_backoff(pg_schema):
    url = sa.make_url(pg_schema)
    cut = NetCut("127.0.0.1", url.port)
    proxied = SqlConversationStore(url.set(port=cut.port).render_as_string(hide_password=False))
    saver = ConversationSaver(proxied, backoff=(0.05,))
    try:
        cut.cut()
        c = conversation()
        saver.submit(c)
        assert saver.settle(timeout=10) and saver.pending(c.id) == c
        cut.restore()  # no nudge: the writer's own retry finds the database back
        assert saver.wait_saved(c.id, timeout=10)
        assert SqlConversationStore(pg_schema).load(c.id).messages == c.messages
    finally:
        saver.close(timeout=1)
        proxied.close()
        cut.close()


# -- who owns a conversation ---------------------------------------------------------------------
def test_the_owner_is_the_logged_in_user_else_the_browser_token():
    token = "0123456789abcdef" * 2
    assert owner_for({"is_logged_in": True, "email": "ada@example.com", "sub": "x"}, token) == (
        "user:ada@example.com", "ada@example.com")
    assert owner_for({"is_logged_in": True, "sub": "google|42"}, None) == ("user:google|42", "google|42")
    assert owner_for({"is_logged_in": False, "email": "ada@example.com"}, token) == (browser_owner(token),) * 2
    assert owner_for({"email": "test@example.com"}, token)[0] == browser_owner(token)  # no login configured
    assert token not in browser_owner(token)  # the database never holds the cookie itself
    assert owner_for({}, None) is None and owner_for({}, "not-a-token") is None and owner_for({}, token.upper()) is None


def test_a_label_names_a_conversation_without_revealing_its_id():
    # "c-" and the first 8 hex of the id's SHA-256: a hash, not a piece of the id
    assert label_for("3f0c9a1be27d4c58a6b0e9d1c2f47a83") == "c-bf9b0947"
    assert label_for("0" * 32) == "c-84e0c0ea"
    a = new_id()
    assert re.fullmatch(r"c-[0-9a-f]{8}", label_for(a)) and label_for(a) == label_for(a)
    assert label_for("") == ""  # a question asked outside any conversation (the CLI)


def test_the_cookie_middleware_gives_a_browser_one_token_on_the_page_load():
    async def page(request):
        return HTMLResponse("<html></html>")

    async def api(request):
        return JSONResponse({"cookie": request.cookies.get(COOKIE)})

    app = Starlette(routes=[Route("/", page), Route("/api", api)], middleware=[Middleware(BrowserCookie)])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert "set-cookie" not in client.get("/api").headers  # only an HTML page sets it
        first = client.get("/")
        header = first.headers["set-cookie"]
        assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header and "Secure" not in header
        token = client.cookies[COOKIE]
        assert owner_for({}, token) is not None
        assert "set-cookie" not in client.get("/").headers  # kept, not renewed
        assert client.get("/api").json() == {"cookie": token}
        client.cookies.clear()
        client.cookies.set(COOKIE, "forged")
        assert client.get("/").headers["set-cookie"] != header  # an invalid token is replaced
    with TestClient(app, base_url="https://127.0.0.1") as client:
        assert "Secure" in client.get("/").headers["set-cookie"]


def page_load_cookie(scope: dict) -> str:
    """The Set-Cookie the middleware adds to an HTML page served for this ASGI scope (no cookie sent)."""
    async def html(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"<html></html>"})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(BrowserCookie(html)({"type": "http", "method": "GET", "path": "/", **scope}, receive, send))
    [cookie] = [v.decode("latin-1") for k, v in sent[0]["headers"] if k == b"set-cookie"]
    return cookie


@pytest.mark.parametrize("scheme, forwarded, secure", [
    ("https", None, True),  # TLS ends at the app
    ("http", None, False),  # plain http, no proxy: a Secure cookie would never come back
    ("http", b"https", True),  # TLS ends at the proxy (deploy/nginx.conf)
    ("http", b"HTTPS", True),
    ("http", b"https, http", True),  # a chain of proxies: the first is the browser's side
    ("http", b" https ,http", True),
    ("http", b"http, https", False),
    ("http", b"http", False),
    ("http", b"httpsx", False),
    ("http", b"", False),
])
def test_the_cookie_is_secure_when_the_browser_is_on_tls(scheme, forwarded, secure):
    headers = [(b"host", b"chat.example.com")] + ([(b"x-forwarded-proto", forwarded)] if forwarded is not None else [])
    cookie = page_load_cookie({"scheme": scheme, "headers": headers})
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert cookie.endswith("; Secure") is secure and cookie.count("Secure") == int(secure)


def test_a_proxys_header_is_read_whatever_its_case():
    # ASGI servers lower-case header names, but a middleware in front may not.
    assert page_load_cookie({"scheme": "http", "headers": [(b"X-Forwarded-Proto", b"https")]}).endswith("; Secure")


def test_a_silent_database_never_holds_a_page_longer_than_its_bound(pg_schema):
    """A PostgreSQL that stops answering without closing anything (frozen, packets dropped): the
    pages' store calls give up with the store's own error, and work again once it answers."""
    from core.store import StoreError
    from core.store.bounded import Bounded
    from tests.netcut import NetCut

    url = sa.make_url(pg_schema)
    proxy = NetCut("127.0.0.1", url.port or 5432)
    raw = SqlConversationStore(url.set(port=proxy.port).render_as_string(hide_password=False))
    store = Bounded(raw, timeout=0.5, workers=2)
    try:
        c = conversation()
        raw.save(c)
        before = set(threading.enumerate())
        proxy.freeze()
        for _ in range(4):  # more calls than workers: the later ones fail at once, nothing queues
            with pytest.raises(StoreError):
                store.list(ADA)
        stuck = [t for t in set(threading.enumerate()) - before if t.name == "understudy-store-list"]
        assert len(stuck) == 2 and all(t.daemon for t in stuck)  # they never hold up the app's exit
        proxy.restore()
        wait_until(lambda: _lists(store, c.id), "the page's calls to work again")
    finally:
        store.close()
        proxy.close()
        raw.close()


def _lists(store, cid) -> bool:
    from core.store import StoreError

    try:
        return [s.id for s in store.list(ADA)] == [cid]
    except StoreError:
        return False
