"""Kept questions: the store's contract (SQLite and PostgreSQL alike), durability across restarts,
honesty when keeping fails, the CLI and the admin-locked Follow-ups page."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import Config, Policy
from core.endpoints import healthz
from core.messages import ChatRequest
from core.router import Router
from core.simulator import Fault
from core.store import SqlFollowUpStore, StoreError, database_url
from core.store.conversations import label_for
from tests.conftest import KEY, ROOT, app_without_configuration, rendered, toml_for

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
QUESTION = "Which moon of Saturn has methane lakes? 100% _serious_"
CONVERSATION = "3f0c9a1be27d4c58a6b0e9d1c2f47a83"  # whoever holds this can read the conversation


# -- the contract, against every backend ----------------------------------------------------------
@pytest.fixture
def store(store_url):
    s = SqlFollowUpStore(store_url)
    yield s
    s.close()


def test_contract_add_list_newest_first(store):
    first = store.add("first question", asked_at=100.0, why="no provider could answer", conversation_id="c-1",
                      who="ada")
    second = store.add("second — ünïcode ✓\nsecond line", asked_at=200.0)
    assert first != second
    items = store.list()
    assert [f.id for f in items] == [second, first]
    assert items[0].question == "second — ünïcode ✓\nsecond line" and items[0].why == "" and not items[0].answered
    old = items[1]
    assert (old.question, old.asked_at, old.why, old.conversation_id, old.who, old.answered_at) == (
        "first question", 100.0, "no provider could answer", "c-1", "ada", None)
    assert store.list(limit=1)[0].id == second


def test_contract_search_is_case_insensitive_and_literal(store):
    hit = store.add(QUESTION, asked_at=1.0)
    store.add("What is a circuit breaker?", asked_at=2.0)
    store.add("Which planet is largest?", asked_at=3.0)
    assert [f.id for f in store.list(search="METHANE")] == [hit]
    assert [f.id for f in store.list(search="100%")] == [hit]
    assert [f.id for f in store.list(search="_serious_")] == [hit]
    assert store.list(search="%") == [f for f in store.list() if "%" in f.question]
    assert len(store.list(search="  ")) == 3  # blank: no filter


def test_contract_mark_answered_filters_and_is_idempotent(store):
    a = store.add("a", asked_at=1.0)
    b = store.add("b", asked_at=2.0)
    assert store.mark_answered(a, at=50.0) is True
    assert store.mark_answered(a, at=99.0) is True  # again: still answered, the first time is kept
    assert store.mark_answered(a + b + 1000, at=1.0) is False
    assert [(f.id, f.answered_at) for f in store.list(answered=True)] == [(a, 50.0)]
    assert [f.id for f in store.list(answered=False)] == [b]
    assert {f.id for f in store.list()} == {a, b}


def test_contract_survives_a_restart_and_migrates_once(store_url):
    s = SqlFollowUpStore(store_url)
    kept = s.add(QUESTION, asked_at=5.0, why="request deadline reached")
    assert s.schema_version() == 5
    s.close()
    again = SqlFollowUpStore(store_url)
    try:
        assert again.schema_version() == 5
        assert [(f.id, f.question, f.why) for f in again.list()] == [(kept, QUESTION, "request deadline reached")]
    finally:
        again.close()


def test_contract_concurrent_writers_lose_nothing(store):
    start = threading.Barrier(8)
    ids: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        start.wait()
        for i in range(10):
            new = store.add(f"q{n}-{i}", asked_at=float(i))
            with lock:
                ids.append(new)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 80
    assert sorted(f.question for f in store.list()) == sorted(f"q{n}-{i}" for n in range(8) for i in range(10))


def test_contract_failures_raise_store_error_naming_the_store_not_the_data(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    s = SqlFollowUpStore(f"sqlite:///{blocker}/understudy.db")
    with pytest.raises(StoreError) as e:
        s.add(QUESTION, asked_at=1.0)
    assert str(blocker) in str(e.value) and "methane" not in str(e.value)
    unusable = SqlFollowUpStore("not a url")  # reported at every use, so its holder can show it
    for _ in range(2):
        with pytest.raises(StoreError, match="malformed"):
            unusable.list()


def test_a_database_password_is_never_shown(tmp_path):
    with pytest.raises(StoreError) as e:
        SqlFollowUpStore("postgresql+psycopg://u:hunter2secret@127.0.0.1:1/x?connect_timeout=2").list()
    assert "hunter2secret" not in str(e.value) and "***" in str(e.value)


def test_where_the_store_lives():
    env = {"UNDERSTUDY_DATA_DIR": "/srv/us"}
    assert database_url({"path": "/elsewhere"}, env) == "sqlite:////srv/us/understudy.db"  # the environment wins
    assert database_url({"path": "/elsewhere", "database_url": ""}, {}) == "sqlite:////elsewhere/understudy.db"
    assert database_url({}, {}) == "sqlite:///" + os.path.abspath("data/understudy.db")
    assert database_url({"database_url": PG_URL}, env) == PG_URL
    assert database_url({"database_url": PG_URL}, {"UNDERSTUDY_DATABASE_URL": "sqlite:///x.db"}) == "sqlite:///x.db"


# -- the router: keep, or say honestly that it could not ------------------------------------------
@pytest.fixture
def outage(sims, adapters):
    """outage(followup_file="") -> a Router whose only provider answers 503 to everything."""
    routers = []

    def make(**offline):
        server = sims("openai")
        server.set_default(Fault.http(503))
        provider = adapters(server, name="openai-0")
        policy = Policy.defaults().with_(**{f"offline__{key}": value for key, value in offline.items()})
        router = Router(Config(providers=(provider.entry,), policy=policy), providers=[provider])
        routers.append(router)
        return router

    yield make
    for r in routers:
        r.close()


def test_a_kept_question_is_durable_and_healthz_is_ok(outage):
    router = outage()
    result = router.ask(ChatRequest.ask(QUESTION))
    assert result.tier == "unavailable" and "We've kept your question" in result.text
    assert "kept for follow-up" in result.notice
    assert router.followups.health()["status"] == "ok"
    assert healthz(router)[1]["followups"]["status"] == "ok"
    router.close()
    restarted = SqlFollowUpStore(database_url())  # a new process would find it here
    try:
        [kept] = restarted.list()
        assert kept.question == QUESTION and kept.why == "no provider could answer" and not kept.answered
    finally:
        restarted.close()


@pytest.mark.parametrize("blocker", ["parent is a file", "database is a directory"])
def test_when_keeping_fails_the_reply_does_not_claim_it(outage, tmp_path, monkeypatch, caplog, blocker):
    data = tmp_path / "broken"
    if blocker == "parent is a file":
        data.write_text("a regular file where the data directory should be")
    else:
        (data / "understudy.db").mkdir(parents=True)
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(data))
    long_question = QUESTION + "\nand a second line " + "x" * 400
    caplog.set_level(logging.ERROR, logger="understudy")
    router = outage()
    result = router.ask(ChatRequest.ask(long_question))
    assert result.tier == "unavailable"
    assert "kept" not in result.text.lower() and "could not save your question" in result.text
    assert "could NOT be kept" in result.notice
    quoted = "\n".join(line.removeprefix("> ") for line in result.text.split("\n\n", 1)[1].splitlines())
    assert quoted == long_question  # quoted whole: nothing typed is lost
    health = router.followups.health()
    assert health["status"] == "failing" and health["failed"] == 1 and str(data) in health["last_error"]
    status, body = healthz(router)
    assert body["followups"]["status"] == "failing" and body["status"] in ("degraded", "down")
    logged = [r.getMessage() for r in caplog.records if r.name == "understudy"]
    assert any("could not be kept" in m for m in logged)
    assert not any("methane" in m.lower() for m in logged)  # the error is logged, never the question


def test_a_failing_store_shows_in_healthz_before_any_question_is_lost(sims, adapters, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(blocker / "data"))
    provider = adapters(sims("openai"), name="openai-0")
    router = Router(Config(providers=(provider.entry,)), providers=[provider])
    try:
        status, body = healthz(router)
        assert status == 200 and body["status"] == "degraded"  # the provider is fine; keeping is not
        assert body["followups"]["status"] == "failing" and body["followups"]["failed"] == 0
    finally:
        router.close()


def test_followup_file_on_a_full_disk_is_reported_not_swallowed(outage):
    # /dev/full fails every write with ENOSPC: the 64 KiB-disk case without a tiny disk.
    router = outage(followup_file="/dev/full")
    result = router.ask(ChatRequest.ask(QUESTION))
    assert "We've kept your question" in result.text  # the store has it
    assert [f.question for f in router.followups.list()] == [QUESTION]
    health = router.followups.health()
    assert health["status"] == "failing" and "/dev/full" in health["last_error"] and health["failed"] == 0


def test_followup_file_that_is_a_fifo_fails_at_once_instead_of_hanging(outage, tmp_path):
    fifo = tmp_path / "kept.fifo"
    os.mkfifo(fifo)  # nobody reads it: a blocking open would wait forever, holding the keeper's lock
    router = outage(followup_file=str(fifo))
    for question in (QUESTION, "second"):  # the second would queue behind a hung first
        assert "We've kept your question" in router.ask(ChatRequest.ask(question)).text  # the store has it
    health = router.followups.health()
    assert health["status"] == "failing" and str(fifo) in health["last_error"]


def test_followup_file_gets_whole_lines(outage, tmp_path):
    path = tmp_path / "kept.jsonl"
    router = outage(followup_file=str(path))
    router.ask(ChatRequest.ask(QUESTION))
    router.ask(ChatRequest.ask("second"))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(x["question"], x["why"]) for x in lines] == [(QUESTION, "no provider could answer"),
                                                           ("second", "no provider could answer")]
    assert router.followups.health()["status"] == "ok"


# -- the command line, across two processes -------------------------------------------------------
def cli(args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
        "OLLAMA_HOST", "UNDERSTUDY_CONFIG", "UNDERSTUDY_DATA_DIR", "UNDERSTUDY_DATABASE_URL")}
    env.update({"SIM_KEY": KEY, "PYTHONPATH": str(ROOT)}, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60)


def test_cli_keeps_across_processes_lists_and_marks_answered(sims, tmp_path):
    server = sims("anthropic")
    server.set_default(Fault.http(500))
    chain = tmp_path / "chain.toml"
    chain.write_text(toml_for([server]), encoding="utf-8")
    asked = cli(["ask", "--json", "--config", str(chain), QUESTION], tmp_path)  # zero setup: ./data
    assert asked.returncode == 1 and "We've kept your question" in json.loads(asked.stdout)["text"]
    assert (tmp_path / "data" / "understudy.db").is_file()

    listed = cli(["followups", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)
    assert item["question"] == QUESTION and item["answered"] is False and item["why"]
    table = cli(["followups"], tmp_path)
    assert f"#{item['id']}" in table.stdout and "methane lakes" in table.stdout and "open" in table.stdout

    done = cli(["followups", "--answer", str(item["id"])], tmp_path)
    assert done.returncode == 0 and "marked answered" in done.stdout
    assert json.loads(cli(["followups", "--json"], tmp_path).stdout) == []
    [after] = json.loads(cli(["followups", "--json", "--all"], tmp_path).stdout)
    assert after["id"] == item["id"] and after["answered"] is True

    missing = cli(["followups", "--answer", "999"], tmp_path)
    assert missing.returncode == 1 and "999" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_never_writes_a_kept_questions_escape_sequences_to_the_terminal(tmp_path):
    store = SqlFollowUpStore(f"sqlite:///{tmp_path}/data/understudy.db")
    store.add("hi \x1b]0;pwned\x07\x1b[2J and \x9b31m", asked_at=1_700_000_000.0, why="why \x1b[5m")
    store.close()
    table = cli(["followups"], tmp_path)
    assert table.returncode == 0, table.stderr
    assert "hi" in table.stdout and "pwned" in table.stdout  # shown, but inert
    assert not any(c in table.stdout for c in "\x1b\x07\x9b")


@pytest.mark.parametrize("bad_id", ["9223372036854775808", "0", "-3", "abc", "1e3"])
def test_cli_refuses_an_impossible_question_id_in_one_line(tmp_path, bad_id):
    proc = cli(["followups", "--answer", bad_id], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "question id" in proc.stderr


def test_cli_says_in_one_line_when_the_store_is_unusable(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = cli(["followups"], tmp_path, {"UNDERSTUDY_DATA_DIR": str(tmp_path / "file" / "data")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("understudy: can't open the store") and len(proc.stderr.splitlines()) == 1


# -- the Follow-ups page --------------------------------------------------------------------------
@pytest.fixture
def page(sims, tmp_path, monkeypatch):
    """page(password=None) -> AppTest on the Follow-ups page, with two kept questions."""
    app_without_configuration(monkeypatch, tmp_path)
    seeded = SqlFollowUpStore(database_url())
    seeded.add("How do I export my invoices?", asked_at=1_700_000_000.0, why="no provider could answer")
    seeded.add(QUESTION, asked_at=1_700_000_100.0, why="request deadline reached", conversation_id=CONVERSATION,
               who="ada@example.com")
    seeded.close()

    def make(password=None):
        server = sims("anthropic")
        chain = tmp_path / "chain.toml"
        chain.write_text(toml_for([server]), encoding="utf-8")
        monkeypatch.setenv("UNDERSTUDY_CONFIG", str(chain))
        monkeypatch.setenv("SIM_KEY", KEY)
        if password:
            monkeypatch.setenv("UNDERSTUDY_ADMIN_PASSWORD", password)
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.run()
        at.switch_page("pages/followups.py").run()
        assert not at.exception, at.exception
        return at

    yield make
    st.cache_resource.clear()


def shown(at) -> list[str]:
    return list(at.dataframe[0].value["question"]) if at.dataframe else []


def test_page_is_locked_behind_the_admin_password(page):
    at = page(password="open sesame")
    assert any("locked" in w.value for w in at.warning)
    assert not at.dataframe and not any("methane" in m.value for m in at.markdown)
    at.text_input(key="admin_password").set_value("wrong")
    at.button[0].click().run()
    assert any("not right" in e.value for e in at.error) and not at.dataframe
    at.text_input(key="admin_password").set_value("open sesame")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert shown(at) == [QUESTION, "How do I export my invoices?"]


def test_page_filters_exports_and_marks_answered(page):
    at = page()
    assert shown(at) == [QUESTION, "How do I export my invoices?"]
    assert at.get("download_button")  # the CSV export is offered
    at.text_input(key="followups_search").set_value("INVOICES").run()
    assert shown(at) == ["How do I export my invoices?"]
    at.text_input(key="followups_search").set_value("").run()

    picker = at.selectbox(key="followups_pick")
    target = next(i for i in picker.options if "methane" in i)  # options are shown as "#id — question"
    picker.select(target)
    next(b for b in at.button if "Mark answered" in b.label).click().run()
    assert not at.exception, at.exception
    assert shown(at) == ["How do I export my invoices?"]  # "Open" no longer lists it
    at.radio(key="followups_show").set_value("Answered").run()
    assert shown(at) == [QUESTION]
    reopened = SqlFollowUpStore(database_url())
    try:
        assert [f.question for f in reopened.list(answered=True)] == [QUESTION]  # durably
    finally:
        reopened.close()


def test_page_and_csv_name_a_conversation_by_its_label_never_by_its_id(page, downloads):
    """The id is a capability (`?c=<id>` reads the conversation) and this page may be open to anyone:
    it shows the label the user sees in their chat's sidebar instead."""
    at = page()
    label = label_for(CONVERSATION)
    assert list(at.dataframe[0].value["conversation"]) == [label, ""]  # a question from no conversation: blank
    assert CONVERSATION.encode() not in rendered(at) and label.encode() in rendered(at)
    csv = downloads(at.download_button(key="followups_csv"))
    assert CONVERSATION.encode() not in csv and label.encode() in csv
