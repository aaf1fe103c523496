"""One builder of what runs, for the app (demo mode when it must) and the CLI (refuses instead)."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from core.local_model import bundled_model
from core.runtime import NoProviders, build
from tests.conftest import toml_for


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./understudy.toml here
    return tmp_path


def test_the_cli_refuses_an_empty_chain_and_a_bad_file(no_config):
    with pytest.raises(NoProviders, match="no providers configured"):
        build(None, env={})
    bad = no_config / "bad.toml"
    bad.write_text("[cache]\nttl = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cache.ttl"):
        build(str(bad), env={})


def test_a_configured_chain_is_built_as_written(no_config, sims):
    path = no_config / "chain.toml"
    path.write_text(toml_for([sims("openai"), sims("gemini")]), encoding="utf-8")
    for demo in (False, True):
        runtime = build(str(path), env={"SIM_KEY": "sk-test-0123456789abcdef"}, demo=demo)
        try:
            assert [p.name for p in runtime.router.providers] == ["openai-0", "gemini-1"]
            assert runtime.demo is None and runtime.config_error is None
        finally:
            runtime.close()


def test_the_app_runs_on_simulated_providers_when_nothing_is_configured(no_config):
    runtime = build(None, env={}, demo=True)
    try:
        assert runtime.demo is not None and runtime.config_error is None
        # The last one is the real on-device model when it is installed (tests/test_local_model.py).
        last = "local" if bundled_model() else "ollama"
        assert [p.kind for p in runtime.router.providers] == ["anthropic", "openai", "gemini", last]
    finally:
        runtime.close()


def test_the_app_keeps_a_configuration_problem_to_show_and_runs_in_demo_mode(no_config):
    bad = no_config / "bad.toml"
    bad.write_text("[hedging]\nquantile = 2\n", encoding="utf-8")
    runtime = build(str(bad), env={}, demo=True, probing=True)
    try:
        assert runtime.demo is not None and "hedging.quantile" in runtime.config_error
        assert runtime.router.status(probe=False)  # the simulated chain answers status
    finally:
        runtime.close()


def test_demo_mode_keeps_the_files_policy_and_its_timeouts(no_config):
    path = no_config / "policy-only.toml"
    path.write_text("[timeouts]\nfirst_token = 3\n[cache]\nenabled = false\n", encoding="utf-8")
    runtime = build(str(path), env={}, demo=True)
    try:
        assert runtime.demo is not None and runtime.router.config.policy.cache.enabled is False
        assert {p.entry.first_token_timeout for p in runtime.router.providers} == {3.0}
    finally:
        runtime.close()


def test_the_stores_are_where_the_given_environment_says(no_config, monkeypatch):
    """`build(env=...)` takes the store settings from that mapping too, not from os.environ."""
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(no_config / "from-os-environ"))
    env = {"UNDERSTUDY_DATABASE_URL": f"sqlite:///{no_config}/given/understudy.db", "UNDERSTUDY_REPLICA": "given-1"}
    runtime = build(None, env=env, demo=True)
    try:
        assert runtime.router.database.where.endswith("given/understudy.db")
        assert runtime.router.stores.replica == "given-1"
        assert runtime.router.database.schema_version() >= 5 and (no_config / "given" / "understudy.db").exists()
        assert not (no_config / "from-os-environ").exists()
    finally:
        runtime.close()
