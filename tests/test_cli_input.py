"""Hostile input to the command line. `ask --jsonl`: every line in gets exactly one line out, an
answer or `{"error": ..., "line": N}`, whatever its bytes, and the lines after it are still served.
Plain `ask`: a bad argument is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.cli import MAX_LINE_BYTES
from tests.conftest import KEY, ROOT, toml_for

GOOD = json.dumps({"messages": [{"role": "user", "content": "still served?"}], "temperature": 0.5}).encode()


def msg(**extra) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **extra}).encode()


# (a line's bytes, what its output line must be: "answer" or a piece of the error message)
LINES = [
    (b"\xff\xfe not UTF-8 \xc3( at all", "answer"),  # decoded with U+FFFD, then answered
    (b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested"),
    (b"[" * 200_000 + b"]" * 200_000, "object, not an array"),
    (b"", "empty"),
    (b"   \t ", "empty"),
    (msg()[:-1] + b', "temperature": NaN}', "NaN"),
    (msg()[:-1] + b', "temperature": Infinity}', "Infinity"),
    (msg()[:-1] + b', "temperature": -Infinity}', "Infinity"),
    (msg()[:-1] + b', "temperature": 1e999}', "too large"),
    (msg()[:-1] + b', "max_tokens": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (msg(temperature=3), "between 0 and 2"),
    (msg(temperature="hot"), '"temperature" must be a number'),
    (msg(temperature=True), '"temperature" must be a number'),
    (msg(max_tokens=0), "at least 1"),
    (msg(max_tokens=1.5), "whole number"),
    (msg(system=5), '"system" must be a string'),
    (b"[1, 2, 3]", "object, not an array"),
    (b'"just a string"', "object, not a string"),
    (b'{"messages": "hi"}', '"messages"'),
    (b'{"messages": []}', "at least one user message"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), "role"),
    (json.dumps({"messages": [{"role": "r" * 100_000, "content": "x"}]}).encode(), "role"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "content must be a string"),
    (json.dumps({"messages": ["hi"]}).encode(), "must be an object"),
    (b"{not json", "not valid JSON"),
    (b"x" * 200_001, "limit is 200,000"),
    (b"y" * (MAX_LINE_BYTES + 10), "longer than"),
    (json.dumps({"messages": [{"role": "user", "content": "lone \ud800 NUL \u0000 RTL \u202e end"}]}).encode(),
     "answer"),
    (b"raw NUL \x00 byte", "answer"),
    (b"carriage\rreturn inside one line", "answer"),  # only \n ends a line
    (b"[Python] a question that starts with a bracket", "answer"),
    (GOOD, "answer"),
]


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
        "OLLAMA_HOST", "UNDERSTUDY_CONFIG", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING", "PYTHONUTF8")}
    out.update(SIM_KEY=KEY, PYTHONPATH=str(ROOT), **extra)
    return out


def jsonl(tmp_path, server, data: bytes, **locale):
    path = tmp_path / "chain.toml"
    path.write_text(toml_for([server]), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "core", "ask", "--jsonl", "--config", str(path)], input=data,
                          capture_output=True, cwd=tmp_path, env=env(**locale), timeout=300)


# A strict UTF-8 locale (stdin decoding errors raise), and a plain C locale (ASCII stdout).
LOCALES = {
    "strict UTF-8": {"LC_ALL": "C.UTF-8", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8:strict"},
    "ASCII": {"LC_ALL": "C", "PYTHONUTF8": "0"},
}


@pytest.mark.parametrize("locale", list(LOCALES))
def test_every_hostile_line_gets_one_line_out_and_the_next_is_served(locale, sims, tmp_path):
    server = sims("ollama")
    proc = jsonl(tmp_path, server, b"\n".join(line for line, _ in LINES) + b"\n", **LOCALES[locale])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    outs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(outs) == len(LINES)
    for number, ((line, expected), out) in enumerate(zip(LINES, outs), 1):
        if expected == "answer":
            assert out.get("tier") == "provider" and out["complete"], (number, line[:60], out)
        else:
            assert out["line"] == number and expected in out["error"], (number, line[:60], out)
            assert set(out) == {"error", "line"} and len(out["error"]) < 400  # never the whole input back
    assert "still served?" in outs[-1]["text"]
    sent = [r.body["messages"][-1]["content"] for r in server.chat_requests()]
    assert "\ufffd\ufffd not UTF-8 \ufffd( at all" in sent
    assert "lone \ufffd NUL  RTL \u202e end" in sent and "raw NUL  byte" in sent
    assert "carriage\rreturn inside one line" in sent


def test_a_byte_order_mark_and_crlf_line_ends_are_not_part_of_the_request(sims, tmp_path):
    server = sims("ollama")
    proc = jsonl(tmp_path, server, b"\xef\xbb\xbf" + msg(system="be brief") + b"\r\nsecond\r\n")
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["complete"] and second["complete"]
    bodies = [r.body for r in server.chat_requests()]
    assert bodies[0]["messages"][0] == {"role": "system", "content": "be brief"}
    assert bodies[1]["messages"][-1]["content"] == "second"


def test_answers_with_characters_the_locale_cannot_encode_stay_valid_json(sims, tmp_path):
    # An ASCII stdout used to end the process (UnicodeEncodeError) at the first non-ASCII answer.
    server = sims("ollama", responder=lambda q, model: "naïve 你好 🙂 lone \ud83d end")
    for locale in LOCALES.values():
        proc = jsonl(tmp_path, server, "één\nsecond\n".encode(), **locale)
        assert proc.returncode == 0 and proc.stderr == b""
        outs = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [o["text"] for o in outs] == ["naïve 你好 🙂 lone \ud83d end"] * 2


@pytest.mark.parametrize(("args", "message"), [
    (["ask", ""], "empty"),
    (["ask", " \t\n "], "empty"),
    (["ask", "--temperature", "nan", "hi"], "--temperature must be between 0 and 2"),
    (["ask", "--temperature", "inf", "hi"], "--temperature must be between 0 and 2"),
    (["ask", "--temperature", "-0.5", "hi"], "--temperature must be between 0 and 2"),
    (["ask", "--max-tokens", "1.5", "hi"], "--max-tokens"),
    (["ask", "--max-tokens", "-3", "hi"], "--max-tokens must be at least 1"),
    (["ask", "--bogus", "hi"], "unrecognized arguments"),
])
def test_plain_ask_with_a_bad_argument_is_one_line_and_exit_2(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env(OPENAI_API_KEY="sk-unused-000000000000"), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
