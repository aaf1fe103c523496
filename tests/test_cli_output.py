"""What plain `python -m core ask` prints: exactly the final answer the user should read, whatever
tier gave it and whatever broke on the way, on a terminal and through a pipe; and its exit status."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pyte
import pytest

from core.answer import Change
from core.cli import _Screen, _stream_text
from core.config import Config, Policy
from core.messages import ChatRequest
from core.offline import Faq
from core.router import Router
from core.simulator import Fault
from core.simulator.server import echo_responder
from tests.conftest import KEY, ROOT, entry_for, toml_for

Q = "What is an understudy?"


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in (
        "OLLAMA_HOST", "UNDERSTUDY_CONFIG")}
    out.update(SIM_KEY=KEY, PYTHONPATH=str(ROOT), **extra)
    return out


def ask(tmp_path, servers, *args, question=Q):
    path = tmp_path / "chain.toml"
    path.write_text(toml_for(servers), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "core", "ask", "--config", str(path), *args, question],
                          capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=120)


# -- piped: only the final text -------------------------------------------------------------------

def test_a_stream_cut_mid_answer_prints_only_the_fallbacks_answer(sims, tmp_path):
    first, second = sims("anthropic"), sims("openai")
    first.push(Fault("cut", after=20))
    proc = ask(tmp_path, [first, second])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == echo_responder(Q, "openai-test") + "\n"
    assert "anthropic-0 failed mid-answer" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unknown_gemini_ending_leaves_no_sdk_warning_on_stderr(sims, tmp_path):
    """google-genai warns "X is not a valid FinishReason" for an ending it doesn't know; the router
    already treats that ending as a broken stream, so the warning is noise on the user's terminal
    (and rows a terminal's erasure of the abandoned text doesn't know about)."""
    first, second = sims("gemini"), sims("openai")
    first.push(Fault.finish("SOMETHING_NEW", after=3))
    proc = ask(tmp_path, [first, second])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == echo_responder(Q, "openai-test") + "\n"
    assert "is not a valid" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


def test_every_provider_down_prints_the_offline_answer(sims, tmp_path):
    first, second = sims("anthropic"), sims("openai")
    for s in (first, second):
        s.set_default(Fault.http(500))
    proc = ask(tmp_path, [first, second], question="How do I reset my password?")
    entry = next(e for e in Faq.load().entries if e.question == "How do I reset my password?")
    assert proc.stdout == entry.answer + "\n"
    assert proc.returncode == 0  # the user got an answer (README: Command line)
    assert "[offline:" in proc.stderr and "offline answer" in proc.stderr  # the notice says what it is


def test_a_stream_cut_then_nobody_left_prints_the_offline_answer_alone(sims, tmp_path):
    only = sims("openai")
    only.set_default(Fault.http(500))
    only.push(Fault("cut", after=15))  # after set_default, which clears the script
    proc = ask(tmp_path, [only], question="How do I reset my password?")
    entry = next(e for e in Faq.load().entries if e.question == "How do I reset my password?")
    assert proc.returncode == 0 and proc.stdout == entry.answer + "\n"


def test_nobody_answers_exit_1_and_the_reply_repeats_the_question(sims, tmp_path):
    only = sims("anthropic")
    only.set_default(Fault.http(500))
    only.push(Fault("cut", after=10))
    question = "Will my zorblax be frobnicated by Tuesday?"  # nothing in the FAQ comes close
    proc = ask(tmp_path, [only], question=question)
    assert proc.returncode == 1
    assert proc.stdout.startswith("Sorry — we can't answer right now") and proc.stdout.endswith(f"> {question}\n")
    assert "anthropic-test" not in proc.stdout  # the abandoned partial answer is not part of it


def test_a_decline_after_partial_text_prints_only_the_decline(sims, tmp_path):
    only = sims("openai")
    only.set_default(Fault("refusal", after=6))
    proc = ask(tmp_path, [only])
    assert proc.returncode == 0
    assert proc.stdout.startswith("This request was declined by openai-0") and proc.stdout.count("\n") == 1
    assert "openai-test" not in proc.stdout


class Clock:
    """Real time plus an offset a test can jump (the cache's time-to-live)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_a_stale_cached_answer_is_printed(sims):
    # One process keeps one router, so the stale tier is reached through the same function the
    # CLI streams with, on a router whose cache has gone stale.
    server = sims("openai")
    clock = Clock()
    router = Router(Config(providers=(entry_for(server, name="gpt"),), policy=Policy.defaults().with_(cache__ttl=60)),
                    clock=clock)
    request = ChatRequest.ask(Q)
    try:
        fresh = router.ask(request)
        assert fresh.tier == "provider"
        clock.offset += 120
        server.set_default(Fault.http(503))
        server.push(Fault("cut", after=12))
        out, err = io.StringIO(), io.StringIO()
        result = _stream_text(router, request, out, err)
    finally:
        router.close()
    assert result.tier == "stale_cache"
    assert out.getvalue() == fresh.text + "\n"
    assert "saved answer" in err.getvalue()


# -- on a terminal: live, and the abandoned text is erased --------------------------------------------

COLS, ROWS = 40, 60


def rich_answer(question: str, model: str) -> str:
    """Several lines, wide characters, a tab and a combining mark: the rows it covers aren't its
    character count over the width."""
    return (f"{model} 回答：替身模式很简单。\n"
            "\tcafe\u0301 with a tab\n\n"
            + " ".join(f"{model}-w{i}" for i in range(24)) + "\nthe end.")


def run_in_terminal(tmp_path, servers, *, stderr_too: bool, question: str = Q):
    path = tmp_path / "chain.toml"
    path.write_text(toml_for(servers), encoding="utf-8")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    # Something is on the screen above the answer: erasing too much would take it away.
    code = "import sys; print('ABOVE', flush=True); from core.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "ask", "--config", str(path), question], stdin=slave,
                            stdout=slave, stderr=slave if stderr_too else subprocess.PIPE, cwd=tmp_path, env=env())
    os.close(slave)
    raw = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, "the CLI wrote nothing for 60 s"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            raw += data
    finally:
        os.close(master)
        proc.wait(timeout=30)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return proc.returncode, raw, err


def screen_of(data: bytes, cols: int = COLS) -> list[str]:
    screen = pyte.Screen(cols, ROWS)
    pyte.ByteStream(screen).feed(data)
    return [row.rstrip() for row in screen.display]


def test_on_a_terminal_the_abandoned_text_is_erased(sims, tmp_path):
    first, second = sims("anthropic", responder=rich_answer), sims("openai", responder=rich_answer)
    first.push(Fault("cut", after=14))  # mid-way through the long line: several wrapped rows shown
    code, raw, err = run_in_terminal(tmp_path, [first, second], stderr_too=False)
    assert code == 0, err
    assert "anthropic-test-w" in raw.decode()  # the partial answer was shown live...
    final = rich_answer(Q, "openai-test")
    # ...and what remains is exactly what a terminal shows for the final answer alone.
    assert screen_of(raw) == screen_of(b"ABOVE\r\n" + (final + "\n").replace("\n", "\r\n").encode())
    assert "anthropic-0 failed mid-answer" in err


def test_on_a_terminal_with_stderr_the_note_replaces_the_abandoned_text(sims, tmp_path):
    first, second = sims("anthropic", responder=rich_answer), sims("openai", responder=rich_answer)
    first.push(Fault("cut", after=14))
    code, raw, _ = run_in_terminal(tmp_path, [first, second], stderr_too=True)
    assert code == 0
    rows = screen_of(raw)
    shown = "\n".join(rows)
    assert rows[0] == "ABOVE" and "anthropic-test" not in shown
    assert rows[1].startswith("[anthropic-0 failed mid-answer")
    assert "openai-test 回答" in shown and "the end." in shown


def test_on_a_terminal_the_honest_reply_replaces_the_partial_answer(sims, tmp_path):
    only = sims("openai", responder=rich_answer)
    only.set_default(Fault.http(500))
    only.push(Fault("cut", after=14))
    code, raw, err = run_in_terminal(tmp_path, [only], stderr_too=False, question="Is my zorblax frobnicated?")
    assert code == 1  # nothing in the FAQ comes close: the honest reply, exit 1
    rows = screen_of(raw)
    assert rows[0] == "ABOVE" and rows[1].startswith("Sorry — we can't answer right now")
    assert "openai-test" not in "\n".join(rows)


class FakeTerminal(io.StringIO):
    """stdout as a terminal 80 columns wide (its size can't be asked, so the CLI assumes 80)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("partial", [
    "x" * 80,                       # exactly the width: the cursor waits at the edge, no new row yet
    "x" * 80 + "\ny",
    "x" * 79 + "宽字",               # a wide character that doesn't fit wraps early
    "x" * 200,
    "\t" * 12 + "after tabs",       # tabs stop at the right edge
    "a\u0301" * 100,                # combining marks take no cell
    "\n\n\nthree blank rows above",
    "🙂" * 45,
    "colour \x1b[31mred\x1b[0m\r and a carriage return",  # control characters never reach the terminal
])
def test_the_terminal_erasure_covers_exactly_the_rows_written(partial):
    out = FakeTerminal()
    out.write("ABOVE\n")
    screen = _Screen(out)
    for piece in (partial[:7], partial[7:]):  # arriving in pieces changes nothing
        screen.show(Change(piece))
    screen.show(Change("FINAL", replaced=True))
    as_shown = screen_of(out.getvalue().replace("\n", "\r\n").encode(), cols=80)
    assert as_shown == screen_of(b"ABOVE\r\nFINAL", cols=80)


def test_a_decline_is_not_counted_as_a_failed_attempt(sims, tmp_path):
    # "failed" has one meaning (Outcome.failed): the chain had to move past a provider. A decline is an answer.
    first, second = sims("anthropic"), sims("openai")
    first.push(Fault.http(400, "content_filter"))
    proc = ask(tmp_path, [first, second])
    assert proc.returncode == 0 and "declined by anthropic-0" in proc.stdout
    assert "[declined: anthropic-0 (anthropic-test), " in proc.stderr and "0 failed attempt(s)" in proc.stderr
