"""History that survives a restart: the metrics history and the stale answers. The stores' contract
(the same tests on SQLite and on a real PostgreSQL), the batch writer that keeps every write off
the request thread, seeding a new process's metrics, and restarts of a whole router, also with the
database down while it answers."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import Config, Policy
from core.messages import ChatRequest, Usage
from core.metrics import AttemptEvent, Metrics, ProbeEvent, RequestEvent, TransitionEvent
from core.router import Router
from core.simulator import Fault
from core.store import StoreError
from core.store.answers import SqlAnswerStore, StaleAnswers, StoredAnswer
from core.store.history import DAY, History, SqlHistory, events_table
from core.store.writer import BatchWriter
from tests.conftest import KEY as CONFTEST_KEY
from core.simulator.server import echo_responder
from tests.conftest import ROOT, app_without_configuration, service_missing, toml_for

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
Q = ChatRequest.ask("Explain the understudy pattern briefly.")
KEY = "a" * 64
T0 = 1_800_000_000.0  # a wall-clock instant for tests that set the time


def sample(at: float, replica: str = "A") -> list:
    """One event of each kind, `at` onwards, with values that must come back exactly."""
    return [AttemptEvent(at, "claude", "claude-x", "ok", None, 120.5, 30.25, True, 10, 20, replica),
            RequestEvent(at + 0.1, "provider", "claude", 130.0, 30.25, True, 2, 1, 1, True, False, replica),
            ProbeEvent(at + 0.2, "gpt", False, 5.0, "timeout", replica),
            TransitionEvent(at + 0.3, "gpt", "closed", "open", "3 failures in a row", 30.0, replica)]


def request_at(at: float, tier: str = "provider", replica: str = "A") -> RequestEvent:
    return RequestEvent(at, tier, "claude", 100.0, 10.0, True, 1, 0, 0, False, False, replica)


# -- the contract, against every backend ----------------------------------------------------------
@pytest.fixture
def history(store_url):
    s = SqlHistory(store_url)
    yield s
    s.close()


@pytest.fixture
def answers(store_url):
    s = SqlAnswerStore(store_url)
    yield s
    s.close()


def test_history_contract_events_come_back_exactly_oldest_first(history):
    older, newer = sample(T0), sample(T0 + 10, replica="B")
    history.write(newer)
    history.write(older)  # written late: still read back in time order
    assert history.read(since=0) == older + newer
    assert history.read(since=T0 + 0.2, until=T0 + 10.1) == older[2:] + newer[:1]
    assert history.read(since=0, limit=3) == newer[1:]  # the newest three
    history.write([])
    assert len(history.read(since=0)) == 8


def test_history_contract_read_by_kind(history):
    history.write(sample(T0) + sample(T0 + 10))
    assert [type(e) for e in history.read(since=0, kinds=["probe", "transition"])] == [
        ProbeEvent, TransitionEvent, ProbeEvent, TransitionEvent]
    assert history.read(since=T0 + 5, kinds=["attempt"]) == sample(T0 + 10)[:1]
    assert history.read(since=0, kinds=[]) == []


def test_a_period_is_the_stored_events_and_those_in_memory_each_once(history):
    metrics = Metrics(wall=lambda: T0 + 100, replica="A")
    kept = History(history, metrics, keep_days=1, window=900, wall=lambda: T0 + 100)
    try:
        stored, unwritten = sample(T0), sample(T0 + 50)
        history.write(stored)
        in_memory = stored[2:] + unwritten  # some written already, some not yet
        assert kept.period(T0, ["probe", "transition"], also=in_memory) == [
            e for e in stored + unwritten if isinstance(e, (ProbeEvent, TransitionEvent))]
        off = History(history, Metrics(wall=lambda: T0 + 100), keep_days=0, window=900)
        assert off.period(T0 + 10, ["attempt"], also=in_memory) == unwritten[:1]  # nothing stored is read
    finally:
        kept.close()


def test_history_contract_prune_and_reopen(history, store_url):
    history.write(sample(T0) + sample(T0 + 100))
    assert history.prune(before=T0 + 50) == 4
    again = SqlHistory(store_url)  # a restarted process on the same database
    try:
        assert again.read(since=0) == sample(T0 + 100)
    finally:
        again.close()


def test_history_contract_concurrent_writers_lose_nothing(history):
    def write(replica: str) -> None:
        for i in range(10):
            history.write([request_at(T0 + i, replica=replica) for _ in range(5)])

    threads = [threading.Thread(target=write, args=(name,)) for name in "ABCD"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read = history.read(since=0)
    assert len(read) == 200 and {e.replica for e in read} == set("ABCD")


def test_answers_contract_write_get_replace(answers, store_url):
    usage = Usage(input_tokens=3, output_tokens=7)
    answers.write([StoredAnswer(KEY, "first", "claude", "m1", usage, T0)])
    assert answers.get(KEY) == StoredAnswer(KEY, "first", "claude", "m1", usage, T0)
    assert answers.get("b" * 64) is None
    # The same key twice in one batch, and again later: the newest answer is the one kept.
    answers.write([StoredAnswer(KEY, "second", "gpt", "m2", None, T0 + 2),
                   StoredAnswer(KEY, "third", "gemini", "m3", None, T0 + 3)])
    assert answers.get(KEY).text == "third"
    answers.write([StoredAnswer(KEY, "older, from a slow replica", "gpt", "m2", None, T0 + 1)])
    again = SqlAnswerStore(store_url)
    try:
        assert again.get(KEY) == StoredAnswer(KEY, "third", "gemini", "m3", None, T0 + 3)
    finally:
        again.close()


def test_answers_contract_prune_by_age_and_count_and_clear(answers):
    keys = [f"{i:064d}" for i in range(6)]
    answers.write([StoredAnswer(k, f"answer {i}", "claude", "m", None, T0 + i) for i, k in enumerate(keys)])
    assert answers.prune(before=T0 + 1, max_rows=10) == 1  # older than the cut-off
    assert answers.prune(before=T0, max_rows=3) == 2  # then the oldest beyond three
    assert [answers.get(k) is not None for k in keys] == [False, False, False, True, True, True]
    answers.clear()
    assert all(answers.get(k) is None for k in keys)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_contract_failures_raise_store_error_never_showing_the_password(tmp_path, kind):
    if kind == "sqlite":
        (tmp_path / "file").write_text("a file where the data directory should be")
        url = f"sqlite:///{tmp_path}/file/data/understudy.db"
    else:
        url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{closed_port()}/test"
    h, a = SqlHistory(url), SqlAnswerStore(url)
    try:
        for call in (lambda: h.write(sample(T0)), lambda: h.read(since=0), lambda: h.prune(before=T0),
                     lambda: a.write([StoredAnswer(KEY, "secret answer", "p", "m", None, T0)]), lambda: a.get(KEY)):
            with pytest.raises(StoreError) as e:
                call()
            assert "s3cret-pw" not in str(e.value) and "secret answer" not in str(e.value)
            assert "\n" not in str(e.value)
    finally:
        h.close()
        a.close()


# -- the batch writer ---------------------------------------------------------------------------
class Sink:
    """A write function a test controls: it can hold every write, or fail them."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failing: Exception | None = None

    def __call__(self, batch: list) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait()
        if self.failing is not None:
            raise self.failing
        self.batches.append(batch)

    @property
    def written(self) -> list:
        return [item for batch in self.batches for item in batch]


def test_put_never_waits_for_a_stuck_database_and_the_backlog_is_bounded():
    sink = Sink()
    sink.gate.clear()  # the database hangs
    writer = BatchWriter(sink, name="test", max_backlog=300, batch=50, interval=60.0)
    try:
        writer.put(-1)
        assert writer.flush(timeout=0.01) is False  # can't be written now (the bound of the wait)
        assert sink.entered.wait(10)  # the writer is inside the write, stuck
        for i in range(1000):
            writer.put(i)  # returns at once: the request thread never waits for the writer
        health = writer.health()
        assert health["backlog"] == 300 and health["dropped"] == 701
        sink.gate.set()
        assert writer.flush()
        assert sink.written == [-1, *range(299)]  # in order, nothing twice
        assert max(len(b) for b in sink.batches) <= 50
        assert sink.threads == {"understudy-test-writer"}
        assert writer.health() == {"status": "ok", "backlog": 0, "dropped": 701, "written": 300, "refused": 0,
                                   "last_error": None}
    finally:
        sink.gate.set()
        writer.close()


def test_a_failing_write_is_retried_and_reported_until_it_succeeds():
    sink = Sink()
    sink.failing = StoreError("can't write the metrics history at postgresql://u:***@db/x (connection refused)")
    writer = BatchWriter(sink, name="test", batch=10, interval=60.0, backoff=30.0)
    try:
        for i in range(25):
            writer.put(i)
        assert writer.flush() is False  # the attempt it asked for failed
        health = writer.health()
        assert health["status"] == "failing" and health["backlog"] == 25 and health["dropped"] == 0
        assert health["last_error"].startswith("can't write the metrics history") and "***" in health["last_error"]
        assert writer.flush() is False  # flush retries at once, backoff or not: still failing
        sink.failing = None
        assert writer.flush()
        assert sink.written == list(range(25)) and writer.health()["status"] == "ok"
        assert writer.health()["last_error"] is not None  # the last one stays visible
    finally:
        writer.close()


def test_an_item_the_database_refuses_is_dropped_alone_and_holds_back_nothing(tmp_path, caplog):
    """A real SQLite table with a constraint: the batch holding a bad item is written again item by
    item; only the bad items are dropped, and later batches go on in batches, in order."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/refuse.db")
    table = sa.Table("items", sa.MetaData(), sa.Column("n", sa.Integer, sa.CheckConstraint("n >= 0")),
                     sa.Column("words", sa.Text))
    table.metadata.create_all(engine)
    batches: list[int] = []

    def write(batch: list[dict]) -> None:
        with engine.begin() as conn:
            conn.execute(table.insert(), batch)
        batches.append(len(batch))

    writer = BatchWriter(write, name="test", batch=4, interval=60.0, backoff=3600.0)
    good = [{"n": n, "words": f"user words {n}"} for n in range(12)]
    refused = [{"n": -1, "words": "user words, refused by the constraint"},
               {"n": 9, "words": "user words with a lone surrogate \ud800 the driver can't encode"}]
    try:
        for item in good[:2] + refused[:1] + good[2:9] + refused[1:] + good[9:]:
            writer.put(item)
        assert writer.flush()  # no backoff: a refusal is not an outage
        with engine.connect() as conn:
            assert list(conn.scalars(sa.select(table.c.n))) == list(range(12))
        health = writer.health()
        assert (health["status"], health["refused"], health["dropped"], health["backlog"]) == ("ok", 2, 2, 0)
        assert batches == [1, 1, 1, 4, 1, 1, 1, 2]  # singly to find the bad one, then in batches again
        assert "user words" not in caplog.text and "refused an item (IntegrityError)" in caplog.text
    finally:
        writer.close()
        engine.dispose()


def test_prepare_runs_before_the_first_write_and_is_retried():
    order: list = []
    failures = [StoreError("down")]

    def prepare() -> None:
        if failures:
            raise failures.pop()
        order.append("prepared")

    writer = BatchWriter(lambda batch: order.extend(batch), name="test", prepare=prepare, interval=60.0)
    try:
        writer.put("event")
        writer.flush()  # False if it saw the first attempt fail; the writer retries either way
        assert writer.flush()
        assert order == ["prepared", "event"] and writer.health()["status"] == "ok"
    finally:
        writer.close()


def test_close_writes_what_is_queued_and_gives_up_on_a_stuck_database():
    sink = Sink()
    writer = BatchWriter(sink, name="test", interval=60.0)
    for i in range(5):
        writer.put(i)
    writer.close()
    assert sink.written == list(range(5))
    writer.put(99)  # after close: counted, not kept
    assert writer.health()["dropped"] == 1

    stuck = Sink()
    stuck.gate.clear()
    writer = BatchWriter(stuck, name="stuck", interval=60.0)
    writer.put(1)
    writer.close(timeout=0.2)  # returns although the write never does
    assert writer.health()["dropped"] == 1
    stuck.gate.set()


# -- History: seeding a new process, never counting twice, retention ------------------------------
class Wall:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_new_process_is_seeded_with_the_window_and_nothing_is_counted_twice(history):
    wall = Wall()
    before = Metrics(wall=wall, replica="A")
    first = History(history, before, keep_days=7, window=900, wall=wall)
    for e in sample(T0 - 1000) + sample(T0 - 100):  # outside, inside the next process's window
        before.record(e)
    before.record(request_at(T0 - 50, replica="B"))  # another replica's event, as it would arrive: B writes it
    assert first.flush()
    first.close()
    assert len(history.read(since=0)) == 8

    after = Metrics(wall=wall, replica="A")
    second = History(history, after, keep_days=7, window=900, wall=wall)
    after.record(request_at(T0, tier="cache"))  # likely before the seeding has run: it is written after it
    after.record(request_at(T0 + 1))
    assert second.flush()
    assert second.seeded == 4
    summary = after.summary(900)
    assert summary["requests"] == 3 and summary["tiers"] == {"provider": 2, "cache": 1}
    assert summary["providers"]["claude"]["latency_ms"]["p50"] == 120.5
    assert [(t.provider, t.new) for t in after.events(TransitionEvent)] == [("gpt", "open")]
    assert [e.at for e in after.events()] == sorted(e.at for e in after.events())  # charts read them in time order
    assert after.totals()["requests"] == 2  # counts since this process started
    second.close()
    stored = history.read(since=0)
    assert len(stored) == 10  # 8 from before, 2 of this process: the seeded ones were not written again
    third = Metrics(wall=wall, replica="C")
    History(history, third, keep_days=7, window=900, wall=wall).close()  # seeds only, writes nothing
    assert len(history.read(since=0)) == 10


def test_the_history_is_the_whole_fleets(history, store_url):
    wall = Wall()
    other = SqlHistory(store_url)  # another process on the same database
    try:
        replicas = []
        for name, store in (("A", history), ("B", other)):
            m = Metrics(wall=wall, replica=name)
            replicas.append(History(store, m, keep_days=7, window=900, wall=wall))
            m.record(request_at(T0 - 10, replica=name))
        for h in replicas:
            assert h.flush(), h.health()["last_error"]
            h.close()
        wall.now += 1
        fresh = Metrics(wall=wall, replica="A")
        restarted = History(history, fresh, keep_days=7, window=900, wall=wall)
        assert restarted.flush()
        assert {e.replica for e in fresh.events()} == {"A", "B"}
        restarted.close()
    finally:
        other.close()


def test_old_history_is_pruned_and_zero_days_keeps_none(history):
    history.write([request_at(T0 - 8 * DAY), request_at(T0 - 6 * DAY)])
    wall = Wall()
    kept = History(history, Metrics(wall=wall, replica="A"), keep_days=7, window=900, wall=wall)
    assert kept.flush()
    kept.close()
    assert [e.at for e in history.read(since=0)] == [T0 - 6 * DAY]

    metrics = Metrics(wall=wall, replica="A")
    off = History(history, metrics, keep_days=0, window=900, wall=wall)
    metrics.record(request_at(T0))
    assert off.flush() and off.health() == {"status": "off"}
    off.close()
    assert len(history.read(since=0)) == 1


def test_stale_answers_are_judged_by_wall_time_and_cleared_in_order(answers):
    wall = Wall()
    stale = StaleAnswers(answers, stale_ttl=600, max_rows=10, wall=wall)
    try:
        stale.put(KEY, "the answer", "claude", "m", None)
        assert stale.flush()
        wall.now += 599
        answer, age = stale.stale(KEY)
        assert answer.text == "the answer" and age == 599
        wall.now += 1
        assert stale.stale(KEY) is None  # too old to stand in
        stale.put(KEY, "again", "claude", "m", None)
        stale.clear()  # queued after the answer: the answer does not come back
        assert stale.flush()
        assert answers.get(KEY) is None
    finally:
        stale.close()


# -- a whole router, restarted ------------------------------------------------------------------
@pytest.fixture
def restartable(sims, adapters, store_url, monkeypatch):
    """router(wall=..., down=False, **policy) -> a Router on the test's database and two simulated
    providers (the same servers every time); `down`: both answer 503."""
    monkeypatch.setenv("UNDERSTUDY_DATABASE_URL", store_url)
    servers = [sims("anthropic"), sims("openai")]
    routers = []

    def make(*, wall=time.time, down: bool = False, **overrides) -> Router:
        for s in servers:
            s.set_default(Fault.http(503) if down else Fault())
        providers = [adapters(s, name=f"{s.kind}-{i}") for i, s in enumerate(servers)]
        policy = Policy.defaults().with_(offline__enabled=False, hedging__enabled=False, health__probe_interval=0,
                                         **overrides)
        router = Router(Config(providers=tuple(p.entry for p in providers), policy=policy), providers=providers,
                        wall=wall)
        routers.append(router)
        return router

    make.servers = servers
    yield make
    for r in routers:
        r.close()


def test_after_a_restart_the_dashboard_has_its_history_and_the_stale_answer_stands_in(restartable):
    wall = Wall(time.time())
    first = restartable(wall=wall)
    answered = first.ask(Q)
    assert answered.tier == "provider" and first.ask(Q).tier == "cache"
    first.close()  # flushes what is queued

    wall.now += 120
    second = restartable(wall=wall, down=True)
    assert second.history.flush()  # seeded
    before = second.metrics.summary(second.config.policy.metrics.window)
    assert before["requests"] == 2 and before["tiers"] == {"provider": 1, "cache": 1}
    assert before["providers"]["anthropic-0"]["attempts"] == 1
    result = second.ask(Q)  # every provider is down, and this process's memory cache is empty
    assert result.tier == "stale_cache" and result.complete and result.text == answered.text
    assert "2 min" in result.notice and result.provider == answered.provider
    assert second.metrics.summary(second.config.policy.metrics.window)["tiers"] == {
        "provider": 1, "cache": 1, "stale_cache": 1}
    assert second.history.health()["status"] == "ok"


def test_after_a_restart_an_answer_older_than_stale_ttl_does_not_stand_in(restartable):
    wall = Wall(time.time())
    first = restartable(wall=wall, cache__stale_ttl=300)
    assert first.ask(Q).tier == "provider"
    first.close()
    wall.now += 301
    second = restartable(wall=wall, down=True, cache__stale_ttl=300)
    assert second.ask(Q).tier == "unavailable"


def test_clear_cache_forgets_the_kept_answers_too(restartable):
    first = restartable()
    assert first.ask(Q).tier == "provider"
    first.clear_cache()
    first.close()
    assert restartable(down=True).ask(Q).tier == "unavailable"


def test_the_status_page_after_a_restart_shows_the_traffic_from_before(sims, tmp_path, monkeypatch):
    app_without_configuration(monkeypatch, tmp_path)
    path = tmp_path / "chain.toml"
    path.write_text(toml_for([sims("anthropic")], "[hedging]\nenabled = false\n"), encoding="utf-8")
    monkeypatch.setenv("UNDERSTUDY_CONFIG", str(path))
    monkeypatch.setenv("SIM_KEY", CONFTEST_KEY)

    def fresh_app() -> AppTest:
        st.cache_resource.clear()  # the old Router is closed (its history flushed): a restart
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.run()
        assert not at.exception, at.exception
        return at

    try:
        at = fresh_app()
        at.chat_input[0].set_value("make some traffic").run()
        assert not at.exception
        at = fresh_app()
        at.switch_page("pages/status.py").run()
        assert not at.exception
        assert at.metric[0].label == "Requests" and at.metric[0].value == "1"
        assert len(at.get("plotly_chart")) == 7 and not any("No traffic yet" in i.value for i in at.info)
    finally:
        st.cache_resource.clear()


# -- the database goes away: requests don't notice, the writer says so and catches up ---------------
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of a real server; `cut()` drops every connection and
    turns new ones away at once, `restore()` lets them through again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.up = False
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.up:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def statements_by_thread(router: Router) -> dict[str, list[str]]:
    """Thread name -> the statements it ran on the router's database, as the driver sees them."""
    seen: dict[str, list[str]] = {}

    @sa.event.listens_for(router.database.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.setdefault(threading.current_thread().name, []).append(" ".join(statement.split()[:3]).upper())

    return seen


WRITERS = {"understudy-metrics history-writer", "understudy-stale answers-writer"}


def only_writers_wrote(seen: dict[str, list[str]]) -> None:
    """The request thread (this one) never touched the database; the writers wrote both tables."""
    assert threading.current_thread().name not in seen
    assert set(seen) <= WRITERS
    inserts = [s for name in WRITERS for s in seen.get(name, []) if s.startswith("INSERT")]
    assert any("METRICS_EVENTS" in s for s in inserts) and any("ANSWERS" in s for s in inserts)


def test_with_the_embedded_database_unusable_requests_complete_and_the_writer_catches_up(
        sims, adapters, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data directory should be")
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(blocker / "data"))
    server = sims("openai")
    provider = adapters(server, name="openai-0")
    router = Router(Config(providers=(provider.entry,)), providers=[provider])
    try:
        seen = statements_by_thread(router)
        for i in range(3):
            assert router.ask(ChatRequest.ask(f"question {i}")).tier == "provider"
        assert router.history.flush() is False and router.answers.flush() is False
        health = router.history.health()
        assert health["status"] == "failing" and health["backlog"] >= 6 and health["dropped"] == 0
        assert str(blocker) in health["last_error"] and "question" not in health["last_error"]
        assert router.answers.health()["backlog"] == 3

        blocker.unlink()  # the directory can be made now
        assert router.history.flush() and router.answers.flush()
        assert router.history.health()["status"] == "ok" and router.history.health()["backlog"] == 0
        only_writers_wrote(seen)
        stored = SqlHistory(router.database).read(since=0)
        assert sum(isinstance(e, RequestEvent) for e in stored) == 3
    finally:
        router.close()


def test_with_postgresql_cut_off_requests_complete_and_the_writer_catches_up(sims, adapters, monkeypatch):
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError as e:
        service_missing(f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(e).__name__})")
    admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    schema = f"history_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    proxy = Proxy(5432)
    monkeypatch.setenv("UNDERSTUDY_DATABASE_URL", f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{proxy.port}"
                                                  f"/test?options=-csearch_path%3D{schema}")
    server = sims("openai")
    provider = adapters(server, name="openai-0")
    router = Router(Config(providers=(provider.entry,)), providers=[provider])
    try:
        seen = statements_by_thread(router)
        assert router.ask(ChatRequest.ask("before")).tier == "provider"
        assert router.history.flush() and router.answers.flush()

        proxy.cut()
        for i in range(3):
            assert router.ask(ChatRequest.ask(f"during {i}")).tier == "provider"
        assert router.history.flush() is False
        health = router.history.health()
        assert health["status"] == "failing" and health["backlog"] >= 6
        assert "s3cret-pw" not in str(health) and "during" not in str(health)

        proxy.restore()
        assert router.history.flush() and router.answers.flush()
        assert router.history.health()["status"] == "ok"
        with admin.connect() as conn:
            kinds = conn.execute(sa.text(f'SELECT kind, count(*) FROM "{schema}".{events_table.name} GROUP BY kind'))
            assert dict(kinds.all())["request"] == 4
            assert conn.scalar(sa.text(f'SELECT count(*) FROM "{schema}".answers')) == 4
        only_writers_wrote(seen)
    finally:
        router.close()
        proxy.close()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def test_an_answer_with_a_lone_surrogate_is_kept_and_blocks_nothing_queued_after_it(restartable):
    first = restartable()
    odd = "lone \ud83d surrogate"
    restartable.servers[0].responder = lambda q, model: odd  # a provider's JSON may carry one
    assert first.ask(Q).text == odd
    restartable.servers[0].responder = echo_responder
    assert first.ask(ChatRequest.ask("next question")).complete
    assert first.answers.flush(), first.answers.health()["last_error"]  # nothing stuck behind it
    first.close()
    second = restartable(down=True)
    assert second.ask(Q).text == "lone \ufffd surrogate"  # kept, the one unstorable character replaced
