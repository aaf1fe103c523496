"""`python -m core`, run as a real process against simulated providers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.simulator import Fault
from tests.conftest import KEY, KINDS, ROOT, toml_for




def run(args, tmp_path, stdin="", env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
        "OLLAMA_HOST", "UNDERSTUDY_CONFIG")}
    env.update({"SIM_KEY": KEY, "PYTHONPATH": str(ROOT)}, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "core", *args], input=stdin, capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=timeout)


def config(tmp_path, servers, extra=""):
    path = tmp_path / "chain.toml"
    path.write_text(toml_for(servers, extra), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("kind", KINDS)
def test_ask_json_answers_from_each_kind_with_usage(kind, sims, tmp_path):
    server = sims(kind)
    proc = run(["ask", "--json", "--config", config(tmp_path, [server]), "What is a hedge?"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["tier"] == "provider" and result["complete"] is True
    assert result["provider"] == f"{kind}-0" and result["model"] == f"{kind}-test"
    assert "What is a hedge?" in result["text"]
    assert result["usage"]["input_tokens"] == 4 and result["usage"]["output_tokens"] > 0
    (attempt,) = result["attempts"]
    assert attempt["outcome"] == "ok" and attempt["ttft_ms"] is not None and result["elapsed_ms"] > 0


def test_ask_json_fails_over_to_the_second_entry(sims, tmp_path):
    first, second = sims("anthropic"), sims("gemini")
    first.set_default(Fault.http(529))
    proc = run(["ask", "--json", "--config", config(tmp_path, [first, second]), "hello"], tmp_path)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["provider"] == "gemini-1"
    *failed, ok = [(a["provider"], a["outcome"], a["error_kind"]) for a in result["attempts"]]
    assert failed and set(failed) == {("anthropic-0", "error", "overloaded")}
    assert ok == ("gemini-1", "ok", None)


def test_ask_streams_plain_text_to_stdout(sims, tmp_path):
    server = sims("openai")
    proc = run(["ask", "--config", config(tmp_path, [server]), "--system", "be brief", "Tell me"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Simulated answer from openai-test") and proc.stdout.rstrip().endswith("w49")
    assert "openai-0" in proc.stderr  # who answered goes to stderr, keeping stdout the answer alone
    assert server.chat_requests()[0].body["messages"][0] == {"role": "system", "content": "be brief"}


def test_jsonl_answers_line_by_line_and_flushes_each(sims, tmp_path):
    server = sims("ollama")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(SIM_KEY=KEY, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "core", "ask", "--jsonl", "--config", config(tmp_path, [server])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    try:
        proc.stdin.write("first question\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())  # arrives while stdin is still open: flushed per line
        assert "first question" in first["text"]
        proc.stdin.write(json.dumps({"messages": [{"role": "user", "content": "second"}], "system": "sys!"}) + "\n")
        proc.stdin.write("\n{not json\n")
        proc.stdin.write(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
        proc.stdin.close()
        rest = [json.loads(line) for line in proc.stdout]
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert "second" in rest[0]["text"] and rest[0]["complete"]
    assert server.chat_requests()[1].body["messages"][0] == {"role": "system", "content": "sys!"}
    assert rest[1]["line"] == 3 and "empty" in rest[1]["error"]  # every line gets its one line out
    assert rest[2]["line"] == 4 and "not valid JSON" in rest[2]["error"]
    assert rest[3]["line"] == 5 and "role" in rest[3]["error"]
    assert len(rest) == 4


def test_status_masks_keys_and_reports_health(sims, tmp_path):
    up, down = sims("openai"), sims("gemini")
    down.set_default(Fault.http(503))
    path = config(tmp_path, [up, down])
    table = run(["status", "--config", path], tmp_path)
    as_json = run(["status", "--json", "--config", path], tmp_path)
    for proc in (table, as_json):
        assert proc.returncode == 0 and KEY not in proc.stdout + proc.stderr
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["kind"], r["model"], r["health"]) for r in rows] == [
        ("openai-0", "openai", "openai-test", "ok"), ("gemini-1", "gemini", "gemini-test", "down")]
    assert rows[0]["endpoint"] == up.url and rows[0]["key"] == "sk-…cdef"
    assert "openai-0" in table.stdout and "sk-…cdef" in table.stdout and "down" in table.stdout
    assert table.stdout.splitlines()[-1] == "Degraded: gemini-1 down, openai-0 answering"  # as /healthz says it


def test_nobody_answers_exit_1_with_the_question_kept(sims, tmp_path):
    server = sims("anthropic")
    server.set_default(Fault.http(500))
    proc = run(["ask", "--json", "--config", config(tmp_path, [server]), "keep me please"], tmp_path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["tier"] == "unavailable" and "keep me please" in result["text"]


def test_decline_exits_0_with_a_plain_message(sims, tmp_path):
    server = sims("openai")
    server.set_default(Fault("refusal"))
    proc = run(["ask", "--config", config(tmp_path, [server]), "something"], tmp_path)
    assert proc.returncode == 0 and "declined" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask"], "give a question"),
        (["ask", "   "], "empty"),
        (["ask", "--max-tokens", "0", "hi"], "--max-tokens"),
        (["ask", "--temperature", "hot", "hi"], "temperature"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["ask", "--jsonl", "hi"], "stdin"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message, tmp_path):
    proc = run(args, tmp_path, env_extra={"OPENAI_API_KEY": "sk-unused-000000000000"})
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_config_errors_exit_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[providers]]\nname="a"\nkind="gpt"\nmodel="m"\n', encoding="utf-8")
    proc = run(["ask", "--config", str(bad), "hi"], tmp_path)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "providers[0].kind" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    missing = run(["status"], tmp_path, env_extra={"UNDERSTUDY_CONFIG": str(tmp_path / "none.toml")})
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_no_providers_at_all_is_explained(tmp_path):
    proc = run(["ask", "hi"], tmp_path)
    assert proc.returncode == 2 and "no providers configured" in proc.stderr


def test_understudy_toml_in_the_working_directory_is_found(sims, tmp_path):
    server = sims("gemini")
    (tmp_path / "understudy.toml").write_text(toml_for([server]), encoding="utf-8")
    proc = run(["ask", "--json", "hi"], tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["provider"] == "gemini-0"


def test_odd_and_huge_input_gets_a_clear_answer_never_a_traceback(sims, tmp_path):
    server = sims("openai")
    path = config(tmp_path, [server])
    odd = "naïve café — 你好 🙂\u200b\u202e RTL \u0301 combining"
    proc = run(["ask", "--json", "--config", path, odd], tmp_path)
    assert proc.returncode == 0 and "你好 🙂" in json.loads(proc.stdout)["text"]
    lone = json.dumps({"messages": [{"role": "user", "content": "half a pair \ud800 here"}]}) + "\n"
    proc = run(["ask", "--jsonl", "--config", path], tmp_path, stdin=lone)
    assert proc.returncode == 0 and "half a pair \ufffd here" in json.loads(proc.stdout)["text"]
    # One argv string can't exceed 128 KiB on Linux, so the huge one comes through stdin.
    proc = run(["ask", "--jsonl", "--config", path], tmp_path, stdin="x" * 200_001 + "\nsmall\n")
    huge, small = (json.loads(line) for line in proc.stdout.splitlines())
    assert proc.returncode == 0 and "limit is 200,000" in huge["error"] and "Traceback" not in proc.stderr
    assert small["complete"]


@pytest.mark.parametrize("mode", ["plain", "--json"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(mode, sims, tmp_path):
    """`> /dev/full`: every write fails with ENOSPC, as on a full disk."""
    server = sims("openai")
    args = ["ask", "--config", config(tmp_path, [server]), *([mode] if mode != "plain" else []), "hello"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"SIM_KEY": KEY, "PYTHONPATH": str(ROOT)})
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "core", *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("understudy: can't write the output")
