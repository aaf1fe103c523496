"""Shared fixtures. The network peers are simulated provider servers on 127.0.0.1
(core.simulator) speaking each provider's real wire protocol; the real SDKs talk to them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import ProviderEntry, Secret
from core.providers import build
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
