"""Shared fixtures. The network peers are simulated provider servers on 127.0.0.1
(core.simulator) speaking each provider's real wire protocol; the real SDKs talk to them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Config, Policy, ProviderEntry, Secret
from core.providers import build
from core.router import Router
from core.simulator import SimServer

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("anthropic", "openai", "gemini", "ollama")
KEY = "sk-test-0123456789abcdef"
# Short enough to keep silence and stall tests quick, long enough for a loaded 2-core CI box.
IDLE = 0.8


def service_missing(why: str) -> None:
    """Skip a test whose real server (PostgreSQL, Redis) is not running, saying why; in CI, where
    .ci/run has checked the services, fail instead: a store test must never silently not run."""
    if os.environ.get("UNDERSTUDY_REQUIRE_SERVICES"):
        pytest.fail(f"{why} (UNDERSTUDY_REQUIRE_SERVICES is set)")
    pytest.skip(why)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Every Router keeps its questions under this test's tmp_path, never in the working tree."""
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("UNDERSTUDY_DATABASE_URL", raising=False)


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
