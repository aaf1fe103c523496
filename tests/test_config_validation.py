"""Bad configuration values are refused when the file is loaded, in one line with exit 2, instead
of failing at run time: non-finite or absurd numbers, broken cross-field rules, malformed URLs,
and config or FAQ "files" that are FIFOs, devices or far too large."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from core.config import POLICY_SCHEMA, ConfigError, from_environment, load_config
from core.offline import Faq
from tests.conftest import KEY, ROOT

DEEP = "a = " + "[" * 200_000 + "]" * 200_000


def chain(url: str, entry: str = "", extra: str = "") -> str:
    return (f'[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "m"\nbase_url = "{url}"\n'
            f'api_key_env = "SIM_KEY"\n{entry}\n{extra}\n')


# (text after the chain's one entry, text inside the entry, base_url or None for the sim's) -> the key named
BAD = {
    "quantile 5": ("[hedging]\nquantile = 5", "", None, "hedging.quantile"),
    "probe_interval nan": ("[health]\nprobe_interval = nan", "", None, "health.probe_interval"),
    "probe_interval inf": ("[health]\nprobe_interval = inf", "", None, "health.probe_interval"),
    "probe_interval tiny": ("[health]\nprobe_interval = 0.001", "", None, "health.probe_interval"),
    "first_token_timeout inf": ("", "first_token_timeout = inf", None, "providers[0].first_token_timeout"),
    "connect_timeout 1e20": ("", "connect_timeout = 1e20", None, "providers[0].connect_timeout"),
    "idle_timeout nan": ("", "idle_timeout = nan", None, "providers[0].idle_timeout"),
    "request inf": ("[timeouts]\nrequest = inf", "", None, "timeouts.request"),
    "connect nan": ("[timeouts]\nconnect = nan", "", None, "timeouts.connect"),
    "reset_timeout nan": ("[breaker]\nreset_timeout = nan", "", None, "breaker.reset_timeout"),
    "max_cooldown nan": ("[breaker]\nmax_cooldown = nan", "", None, "breaker.max_cooldown"),
    "min_similarity nan": ("[offline]\nmin_similarity = nan", "", None, "offline.min_similarity"),
    "ttl -inf": ("[cache]\nttl = -inf", "", None, "cache.ttl"),
    "max_entries huge": ("[cache]\nmax_entries = 9000000000000000000", "", None, "cache.max_entries"),
    "floor > cap": ("[hedging]\nfloor = 3.0\ncap = 1.0", "", None, "hedging.floor"),
    "backoff_base > backoff_max": ("[retries]\nbackoff_base = 5\nbackoff_max = 1", "", None, "retries.backoff_base"),
    "ipv6 unclosed": ("", "", "http://[::1", "providers[0].base_url"),
    "port 99999": ("", "", "http://127.0.0.1:99999/v1", "providers[0].base_url"),
    "port not a number": ("", "", "http://127.0.0.1:http/v1", "providers[0].base_url"),
    "space in host": ("", "", "http://local host:8000/v1", "providers[0].base_url"),
    "no host": ("", "", "http:///v1", "providers[0].base_url"),
    "deep nesting": (DEEP, "", None, "syntax"),
    "first_token > request": ("[timeouts]\nfirst_token = 30\nrequest = 10", "", None, "timeouts.first_token"),
    "entry first_token > request": ("", "first_token_timeout = 100", None, "providers[0].first_token_timeout"),
    "database_url not a url": ('[store]\ndatabase_url = "not a url"', "", None, "store.database_url"),
    "database_url other engine": ('[store]\ndatabase_url = "mysql://u:hunter22@h/db"', "", None, "store.database_url"),
}


def _write(tmp_path, case: str, url: str) -> str:
    extra, entry, bad_url, _ = BAD[case]
    path = tmp_path / "chain.toml"
    path.write_text(chain(bad_url or url, entry, extra), encoding="utf-8")
    return str(path)


def _cap_memory() -> None:
    # A regression that reads /dev/zero must fail fast in the child, not take the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run_cli(args: list[str], cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
        "OLLAMA_HOST", "UNDERSTUDY_CONFIG")}
    env.update({"SIM_KEY": KEY, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, preexec_fn=_cap_memory)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("understudy: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_is_a_config_error_naming_the_key(case, tmp_path):
    path = _write(tmp_path, case, "http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"SIM_KEY": KEY})
    assert caught.value.key == BAD[case][3]
    assert "\n" not in str(caught.value) and "Fix:" in str(caught.value)
    assert "hunter22" not in str(caught.value)  # a database password is never echoed


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_through_the_cli_is_one_line_and_exit_2(case, tmp_path, sims):
    server = sims("openai")  # a live provider, so a value accepted by mistake shows at run time
    proc = run_cli(["ask", "--config", _write(tmp_path, case, server.url), "What is a hedge?"], tmp_path)
    assert_one_line_exit_2(proc, BAD[case][3])


NUMBERS = [(s, k) for s, keys in POLICY_SCHEMA.items() for k, spec in keys.items() if float in spec[1]]


@pytest.mark.parametrize(("section", "key"), NUMBERS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300"])
def test_every_number_setting_must_be_finite_and_in_range(section, key, value, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    assert caught.value.key == f"{section}.{key}"


def test_values_at_the_bounds_are_accepted(tmp_path):
    path = tmp_path / "edges.toml"
    path.write_text("[hedging]\nquantile = 1.0\nfloor = 2.0\ncap = 2.0\n[health]\nprobe_interval = 0\n"
                    "[offline]\nmin_similarity = 1\n[timeouts]\nrequest = 3600\n", encoding="utf-8")
    policy = load_config(str(path), env={}).policy
    assert policy.hedging.quantile == 1.0 and policy.health.probe_interval == 0.0
    assert policy.offline.min_similarity == 1.0


@pytest.mark.parametrize("url", ["http://[::1]:11434", "https://proxy.internal:8443/v1", "http://ollama_box:11434",
                                 "http://127.0.0.1:8000/v1?api-version=1"])
def test_good_urls_are_accepted(url, tmp_path):
    path = tmp_path / "chain.toml"
    path.write_text(chain(url), encoding="utf-8")
    assert load_config(str(path), env={"SIM_KEY": KEY}).providers[0].base_url == url


def test_a_url_with_a_password_is_not_echoed_when_refused(tmp_path):
    path = tmp_path / "chain.toml"
    path.write_text(chain("http://user:hunter2secret@proxy:99999/v1"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={"SIM_KEY": KEY})
    assert "hunter2secret" not in str(caught.value)


def test_a_malformed_ollama_host_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        from_environment(env={"OLLAMA_HOST": "[::1"})
    assert caught.value.key == "OLLAMA_HOST"


# -- what the config path names ------------------------------------------------------------------
def test_a_fifo_as_config_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "chain.fifo"
    os.mkfifo(fifo)
    # In a child with a timeout: if opening the FIFO blocked, the test fails instead of hanging.
    proc = run_cli(["ask", "--config", str(fifo), "hi"], tmp_path, timeout=30)
    assert_one_line_exit_2(proc, "not a regular file")


def test_dev_zero_as_config_is_refused_without_reading_it(tmp_path):
    proc = run_cli(["ask", "--config", "/dev/zero", "hi"], tmp_path, timeout=30)
    assert_one_line_exit_2(proc, "not a regular file")


def test_a_directory_and_an_oversized_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path), env={})
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 120_000, encoding="utf-8")  # 1.2 MB of comments
    with pytest.raises(ConfigError, match="larger than"):
        load_config(str(big), env={})


def test_a_fifo_as_faq_file_is_refused_without_hanging(tmp_path, sims):
    server = sims("openai")
    fifo = tmp_path / "faq.fifo"
    os.mkfifo(fifo)
    path = tmp_path / "chain.toml"
    path.write_text(chain(server.url, extra=f'[offline]\nfaq_file = "{fifo}"'), encoding="utf-8")
    proc = run_cli(["ask", "--config", str(path), "hi"], tmp_path, timeout=30)
    assert_one_line_exit_2(proc, "offline.faq_file", "not a regular file")


def test_faq_load_refuses_bad_input(tmp_path):
    for bad in (float("nan"), 5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="min_similarity"):
            Faq.load(None, bad)
    deep = tmp_path / "deep.toml"
    deep.write_text(DEEP, encoding="utf-8")
    with pytest.raises(ValueError, match="nested too deeply"):
        Faq.load(deep)
    with pytest.raises(ValueError, match="directory"):
        Faq.load(tmp_path)
    odd = tmp_path / "odd.toml"
    for text in ('faq = "nope"', "faq = [1, 2]", '[[faq]]\nquestion = "q"\nanswer = "a"\nalternates = "x"'):
        odd.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=str(odd)):
            Faq.load(odd)
