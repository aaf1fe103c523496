"""Loading the chain: file discovery, the environment-built chain, validation messages, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, Policy, Secret, find_config_file, from_environment, load_config

GOOD = """
[[providers]]
name = "opus"
kind = "anthropic"
model = "claude-opus-4-1"

[[providers]]
name = "sonnet"
kind = "anthropic"
model = "claude-sonnet-4-5"
first_token_timeout = 3

[[providers]]
name = "vllm"
kind = "openai"
model = "meta-llama/Llama-3.1-8B-Instruct"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "VLLM_KEY"

[timeouts]
request = 30

[cache]
enabled = false
"""


def write(tmp_path, text, name="understudy.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_loads_a_chain_with_the_same_kind_twice_and_policy(tmp_path):
    env = {"ANTHROPIC_API_KEY": "fake-ant-aaaaaaaaaaaaaa", "VLLM_KEY": "vllm-secret-value-123"}
    config = load_config(write(tmp_path, GOOD), env=env)
    assert [p.name for p in config.providers] == ["opus", "sonnet", "vllm"]
    opus, sonnet, vllm = config.providers
    assert opus.api_key == Secret("fake-ant-aaaaaaaaaaaaaa")
    assert sonnet.first_token_timeout == 3.0 and opus.first_token_timeout == 8.0
    assert vllm.api_key.reveal() == "vllm-secret-value-123" and vllm.endpoint == "http://127.0.0.1:8000/v1"
    assert config.policy.timeouts.request == 30.0
    assert config.policy.cache.enabled is False
    assert config.policy.cache.max_entries == 1000  # documented default


def test_file_discovery_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config_file(None, {}) is None
    write(tmp_path, GOOD)
    assert str(find_config_file(None, {})) == "understudy.toml"
    assert str(find_config_file(None, {"UNDERSTUDY_CONFIG": "/x/other.toml"})) == "/x/other.toml"
    assert str(find_config_file("/x/explicit.toml", {"UNDERSTUDY_CONFIG": "/x/other.toml"})) == "/x/explicit.toml"


def test_without_a_file_the_chain_comes_from_standard_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"GEMINI_API_KEY": "gem-key-0123456789", "ANTHROPIC_API_KEY": "fake-ant-0123456789abc",
           "OLLAMA_HOST": "127.0.0.1:11500"}
    config = load_config(None, env=env)
    assert [(p.name, p.kind) for p in config.providers] == [("claude", "anthropic"), ("gemini", "gemini"),
                                                            ("ollama", "ollama")]
    assert config.providers[2].endpoint == "http://127.0.0.1:11500"
    assert all(p.model for p in config.providers)
    assert load_config(None, env={}).providers == ()


def test_google_api_key_wins_over_gemini_api_key():
    config = from_environment(env={"GEMINI_API_KEY": "gemini-0123456789", "GOOGLE_API_KEY": "google-0123456789"})
    assert config.providers[0].api_key.reveal() == "google-0123456789"


def test_keys_may_come_from_streamlit_secrets_and_env_wins():
    secrets = {"OPENAI_API_KEY": "fake-from-secrets-0123456789", "ANTHROPIC_API_KEY": "fake-ant-secrets-000000"}
    config = from_environment(env={"ANTHROPIC_API_KEY": "fake-ant-env-0000000000"}, secrets=secrets)
    assert [p.api_key.reveal() for p in config.providers] == ["fake-ant-env-0000000000", "fake-from-secrets-0123456789"]


def test_a_secrets_object_that_raises_is_treated_as_empty():
    class NoFile:  # st.secrets raises on any access when there is no secrets.toml (field notes §7)
        def get(self, *a):
            raise FileNotFoundError("No secrets found")

    assert from_environment(env={}, secrets=NoFile()).providers == ()


def test_keys_never_show_in_reprs():
    key = "fake-api03-supersecretvalue-XYZ9"
    config = from_environment(env={"ANTHROPIC_API_KEY": key})
    assert key not in repr(config) and key not in str(config.providers[0].api_key)
    assert config.providers[0].api_key.masked() == "fak…XYZ9"
    assert Secret("short").masked() == "set (hidden)"


BAD = {
    "syntax": ("[[providers]\nname = 1", "syntax", "TOML syntax"),
    "unknown kind": ('[[providers]]\nname="a"\nkind="antropic"\nmodel="m"', "providers[0].kind", "'anthropic'"),
    "duplicate name": ('[[providers]]\nname="a"\nkind="openai"\nmodel="m"\n[[providers]]\nname="a"\nkind="gemini"\n'
                       'model="m"', "providers[1].name", "unique"),
    "missing model": ('[[providers]]\nname="a"\nkind="openai"', "providers[0].model", "model ="),
    "malformed url": ('[[providers]]\nname="a"\nkind="openai"\nmodel="m"\nbase_url="localhost:8000"',
                      "providers[0].base_url", "http://"),
    "unknown key": ('[[providers]]\nname="a"\nkind="openai"\nmodel="m"\napi_key="sk-123"', "providers[0].api_key",
                    "api_key_env"),
    "unknown section": ('[retires]\nmax = 3', "retires", "'retries'"),
    "unknown section, no match": ('[plugins]\nx = 1', "plugins", "remove it"),
    "unknown setting": ('[cache]\nttl_seconds = 3', "cache.ttl_seconds", "'ttl'"),
    "wrong type": ('[cache]\nenabled = "no"', "cache.enabled", "true or false"),
    "bool for number": ('[timeouts]\nrequest = true', "timeouts.request", "a number"),
    "out of range": ('[timeouts]\nidle = 0', "timeouts.idle", "at least"),
    "providers not a list": ('providers = "claude"', "providers", "[[providers]]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_rejected_naming_file_key_and_fix(case, tmp_path):
    text, key, fix = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    err = caught.value
    assert err.where == path and err.key == key
    assert fix in str(err), str(err)
    assert path in str(err) and "Fix:" in str(err)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.toml"), env={})
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[providers]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(bad), env={})


def test_the_key_value_never_appears_in_a_config_error(tmp_path):
    text = '[[providers]]\nname="a"\nkind="openai"\nmodel="m"\napi_key="sk-live-0123456789abcdefXYZ"'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert "sk-live-0123456789abcdefXYZ" not in str(caught.value)


def test_the_shipped_example_file_loads():
    path = Path(__file__).resolve().parent.parent / "understudy.example.toml"
    config = load_config(str(path), env={"OPENAI_API_KEY": "sk-0123456789abcdef"})
    assert [p.name for p in config.providers] == ["claude", "gpt", "vllm", "gemini", "local"]
    assert config.policy == Policy.defaults()  # the values it shows are the documented defaults


def test_policy_sections_are_typed_and_copied_with_changes():
    policy = Policy.defaults().with_(hedging__enabled=False, timeouts__first_token=1.5)
    assert policy.hedging.enabled is False and policy.timeouts.first_token == 1.5
    assert Policy.defaults().hedging.enabled is True  # the original is untouched (frozen)
    with pytest.raises(KeyError):
        Policy.defaults().with_(hedging__quantil=0.9)


def test_an_entry_s_timeouts_are_its_overrides_over_the_section(tmp_path):
    text = ('[timeouts]\nfirst_token = 3\nidle = 4\n[[providers]]\nname = "a"\nkind = "openai"\nmodel = "m"\n'
            'idle_timeout = 2\n')
    entry = load_config(write(tmp_path, text), env={"OPENAI_API_KEY": "sk-0123456789abcdef"}).providers[0]
    assert (entry.connect_timeout, entry.first_token_timeout, entry.idle_timeout) == (5.0, 3.0, 2.0)
