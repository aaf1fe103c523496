"""Shared fixtures. The network peers are simulated provider servers on 127.0.0.1
(core.simulator) speaking each provider's real wire protocol; the real SDKs talk to them."""

from __future__ import annotations

import os
import html
import re
import threading
import warnings
from collections import deque
from pathlib import Path

import pytest

from core.config import Config, Policy, ProviderEntry, Secret
from core.errors import ErrorKind
from core.faults import Fault
from core.messages import TextDelta
from core.providers import WIRE_KINDS, build
from core.router import Router
from core.simulator import SimServer

ROOT = Path(__file__).resolve().parent.parent
KINDS = WIRE_KINDS  # the four wire protocols, each with a simulator (`local` speaks OpenAI's)
KEY = "sk-test-0123456789abcdef"
# Short enough to keep silence and stall tests quick, long enough for a loaded 2-core CI box.
IDLE = 0.8

# Every fault in shared/reference/failure-catalogue.md, as it reaches one adapter, and the kind it
# must map to. Recovery (retry, fail over) is the router's job; here only the mapping is checked.
FAULTS = {
    "S01 429 with Retry-After": (Fault.http(429, retry_after=2), ErrorKind.RATE_LIMITED),
    "S02 429 without Retry-After": (Fault.http(429), ErrorKind.RATE_LIMITED),
    "S03 500": (Fault.http(500), ErrorKind.SERVER),
    "S04 503": (Fault.http(503), ErrorKind.OVERLOADED),
    "S04 529": (Fault.http(529), ErrorKind.OVERLOADED),
    "502": (Fault.http(502), ErrorKind.SERVER),
    "S05 reset": (Fault("reset"), ErrorKind.CONNECTION),
    "S06 silence": (Fault("silence", seconds=30), ErrorKind.TIMEOUT),
    "S07 slow first token": (Fault("slow_first", seconds=30), ErrorKind.TIMEOUT),
    "S08 cut mid-stream": (Fault("cut", after=40), ErrorKind.STREAM_BROKEN),
    "S09 stall mid-stream": (Fault("stall", after=20, seconds=30), ErrorKind.STREAM_BROKEN),
    "S10 malformed chunk": (Fault("malformed", after=10), ErrorKind.STREAM_BROKEN),
    "in-stream error event": (Fault("error_event", after=5), ErrorKind.STREAM_BROKEN),
    "missing end marker": (Fault("no_end", after=40), ErrorKind.STREAM_BROKEN),
    "S12 context length": (Fault.http(flavour="context_length"), ErrorKind.CONTEXT_LENGTH),
    "S13 content filter (400)": (Fault.http(flavour="content_filter"), ErrorKind.CONTENT_FILTERED),
    "401": (Fault.http(401), ErrorKind.AUTH),
    "403": (Fault.http(403), ErrorKind.AUTH),
    "404 unknown model": (Fault.http(404), ErrorKind.NOT_FOUND),
    "400 bad request": (Fault.http(400), ErrorKind.BAD_REQUEST),
    "S14 prefill rejected": (Fault.http(flavour="prefill"), ErrorKind.BAD_REQUEST),
}


def service_missing(why: str) -> None:
    """Skip a test whose real server (PostgreSQL, Redis) is not running, saying why; in CI, where
    .ci/run has checked the services, fail instead: a store test must never silently not run."""
    if os.environ.get("UNDERSTUDY_REQUIRE_SERVICES"):
        pytest.fail(f"{why} (UNDERSTUDY_REQUIRE_SERVICES is set)")
    pytest.skip(why)


def app_without_configuration(monkeypatch, tmp_path) -> None:
    """Run the app as a new user would: no provider keys, no admin password, an empty directory."""
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OLLAMA_HOST",
                "UNDERSTUDY_ADMIN_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def app_on_one_provider(sims, tmp_path, monkeypatch):
    """The app as a new user runs it (no keys, an empty directory), configured with one simulated
    OpenAI provider and no hedging; the process's cached runtime is dropped. Returns the server."""
    import streamlit as st

    app_without_configuration(monkeypatch, tmp_path)
    server = sims("openai")
    path = tmp_path / "chain.toml"
    path.write_text(toml_for([server], "[hedging]\nenabled = false\n"), encoding="utf-8")
    monkeypatch.setenv("UNDERSTUDY_CONFIG", str(path))
    monkeypatch.setenv("SIM_KEY", KEY)
    st.cache_resource.clear()
    return server


@pytest.fixture
def downloads(monkeypatch):
    """What the download buttons would hand the browser: downloads(button) -> bytes. (AppTest keeps
    each run's media files in a storage it throws away; this keeps a reference to read them.)"""
    import streamlit.testing.v1.app_test as app_test_module
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    storages: list[MemoryMediaFileStorage] = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            storages.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Kept)
    return lambda button: storages[-1].get_file(button.proto.url.rsplit("/", 1)[1]).content


def rendered(at, *, skip: tuple[str, ...] = ()) -> bytes:
    """Everything an AppTest run drew, as the bytes of its elements' messages (text, tables'
    Arrow data, widget options and values), but for elements of a type in `skip` (e.g.
    "text_input": a value in a box is text, never Markdown). A string in none of them reached the
    browser from this run."""
    return b"".join(node.proto.SerializeToString() for node in at._tree
                    if getattr(node, "proto", None) is not None and node.type not in skip)


def typed(block) -> str:
    """A user message's text as it shows: drawn as escaped HTML (core.markdown.as_typed), never
    Markdown. `block` is an AppTest chat message or expander."""
    (element,) = [e for e in block if e.type == "html"][:1]
    assert element.value.startswith('<div dir="auto"')
    return html.unescape(re.sub(r"<[^>]+>", "", element.value))


def as_text(markdown: str) -> str:
    """Markdown's backslash escapes undone (CommonMark: a backslash before ASCII punctuation shows
    the punctuation) and word joiners (zero width) dropped: what a value drawn with
    core.markdown.literal reads as."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def unescaped_punctuation(markdown: str) -> list[str]:
    """ASCII punctuation that Markdown would read as syntax: any not behind a backslash escape."""
    found, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and i + 1 < len(markdown) and markdown[i + 1] in _PUNCTUATION:
            i += 2
            continue
        if markdown[i] in _PUNCTUATION:
            found.append(markdown[i])
        i += 1
    return found


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Every Router keeps its questions under this test's tmp_path, never in the working tree."""
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    for var in ("UNDERSTUDY_DATABASE_URL", "UNDERSTUDY_REDIS_URL", "UNDERSTUDY_REDIS_PREFIX", "UNDERSTUDY_REPLICA"):
        monkeypatch.delenv(var, raising=False)  # a test that wants a fleet asks for one


REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_schema():
    """A fresh schema on the real PostgreSQL (127.0.0.1:5432), dropped afterwards: its URL, with the
    schema as the connection's search path."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        service_missing(f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(e.orig).__name__}): this test needs it "
                        "(the SQLite run of a store contract still runs)")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def latin1_database():
    """A fresh PostgreSQL database in LATIN1 (as some older installs are), dropped afterwards: its URL."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"latin1_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                                 "TEMPLATE template0")
    except sa.exc.OperationalError as e:
        admin.dispose()
        service_missing(f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(e.orig).__name__})")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL for an empty database of each kind the durable stores run on: the contract suites."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/understudy.db"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def redis_prefix():
    """A fresh key prefix on the real Redis (127.0.0.1:6379); its keys are deleted afterwards."""
    import uuid

    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        service_missing(f"Redis at 127.0.0.1:6379 does not answer ({type(e).__name__}): the shared-state tests "
                        "need it")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def sims():
    """Start simulated servers on demand: `sims("openai")`. All are closed after the test."""
    started: list[SimServer] = []

    def start(kind: str, **kw) -> SimServer:
        server = SimServer(kind, api_key=KEY, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def entry_for(server: SimServer, name: str | None = None, **kw) -> ProviderEntry:
    fields = dict(name=name or server.kind, kind=server.kind, model=f"{server.kind}-test", base_url=server.url,
                  api_key=Secret(KEY), idle_timeout=IDLE, connect_timeout=IDLE, first_token_timeout=IDLE)
    fields.update(kw)
    return ProviderEntry(**fields)


@pytest.fixture
def adapters():
    """Build adapters for servers: `adapters(server)`; their SDK clients are closed afterwards."""
    built = []

    def make(server: SimServer, **kw):
        provider = build(entry_for(server, **kw))
        built.append(provider)
        return provider

    yield make
    for provider in built:
        provider.close()


def drain(provider, request):
    """Collect one adapter's `stream()`: (the text, its StreamEnd)."""
    pieces, end = [], None
    with warnings.catch_warnings():
        # google-genai warns (and carries on) when a finishReason is not in its enum yet.
        warnings.simplefilter("ignore", UserWarning)
        for item in provider.stream(request):
            if isinstance(item, TextDelta):
                pieces.append(item.text)
            else:
                end = item
    return "".join(pieces), end


def toml_for(servers: list[SimServer], extra: str = "", key_env: str = "SIM_KEY") -> str:
    """An understudy.toml whose chain is these servers, in order."""
    out = []
    for i, s in enumerate(servers):
        out.append(f'[[providers]]\nname = "{s.kind}-{i}"\nkind = "{s.kind}"\nmodel = "{s.kind}-test"\n'
                   f'base_url = "{s.url}"\napi_key_env = "{key_env}"\nidle_timeout = {IDLE}\nfirst_token_timeout = {IDLE}\n')
    return "\n".join(out) + "\n" + extra


def policy(**overrides) -> Policy:
    """The default policy with `section__key=value` settings changed."""
    return Policy.defaults().with_(**overrides)


@pytest.fixture
def chain(sims, adapters):
    """chain("anthropic", "openai", **policy) -> (router, [servers]); `timeouts` adjust the primary's."""
    routers = []

    def make(*kinds, clock=None, timeouts=None, server_kw=None, **overrides):
        servers = [sims(k, **(server_kw or {})) for k in kinds]
        # The primary's deadlines are short, so its faults are detected quickly; the fallbacks'
        # are generous, so a loaded CI machine never makes a healthy fallback look sick.
        primary = {"idle_timeout": IDLE, "first_token_timeout": IDLE, **(timeouts or {})}
        relaxed = dict(idle_timeout=5.0, first_token_timeout=5.0, connect_timeout=5.0)
        providers = [adapters(s, name=f"{s.kind}-{i}", **(primary if i == 0 else relaxed))
                     for i, s in enumerate(servers)]
        config = Config(providers=tuple(p.entry for p in providers), policy=policy(**overrides))
        kw = {"clock": clock} if clock else {}
        router = Router(config, providers=providers, **kw)
        routers.append(router)
        return router, servers

    yield make
    for r in routers:
        r.close()


@pytest.fixture
def fleet_env(pg_schema, redis_prefix) -> dict[str, str]:
    """The environment of a fleet's replica: the real Redis (a fresh prefix) and PostgreSQL (a fresh
    schema)."""
    return {"UNDERSTUDY_REDIS_URL": REDIS_URL, "UNDERSTUDY_REDIS_PREFIX": redis_prefix,
            "UNDERSTUDY_DATABASE_URL": pg_schema}


def listening(proc, port: int, what: str = "streamlit") -> deque:
    """Wait for a server started with its output on a pipe to print its URL, then keep reading that
    pipe on a thread for the rest of its life: a pipe nobody reads fills up (64 KiB of log lines),
    and the server then blocks on its next log line, mid-request. Returns its last 200 lines."""
    for line in proc.stdout:
        if f":{port}" in line:
            break
    else:
        raise AssertionError(f"{what} exited before listening")
    tail: deque = deque(maxlen=200)
    threading.Thread(target=tail.extend, args=(proc.stdout,), name=f"drain {what}", daemon=True).start()
    return tail
