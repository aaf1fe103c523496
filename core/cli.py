"""Command line: `python -m core ask|status|followups`.

Exit status: 0 when the user got an answer or an honest decline; 1 when no provider could
answer (the reply says so, and whether the question was kept), or when `followups` can't use
its store; 2 for usage or configuration errors, with one line on stderr. Never a traceback.
"""

from __future__ import annotations

import argparse
import codecs
import itertools
import json
import math
import os
import re
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TextIO

from .answer import Answer, Change, Restart, Result
from .config import ConfigError, load_config
from .health import judge
from .messages import (MAX_INPUT_CHARS, TEMPERATURE_RANGE, ChatRequest, InvalidRequest, Message, clean_text,
                       messages_from)
from .router import Router  # light: SDKs load only when a chain needs them
from .runtime import NoProviders, build
from .store import SqlFollowUpStore, StoreError, database_url


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see python -m {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="core", description="Understudy: an LLM chat that keeps answering when providers fail.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ask = sub.add_parser("ask", help="ask a question (or many, with --jsonl)")
    ask.add_argument("question", nargs="?", help="the question; omit with --jsonl")
    ask.add_argument("--config", help="chain file (default: $UNDERSTUDY_CONFIG, then ./understudy.toml)")
    ask.add_argument("--system", default="", help="system prompt")
    ask.add_argument("--temperature", type=float, default=None)
    ask.add_argument("--max-tokens", type=int, default=None)
    ask.add_argument("--json", action="store_true", help="print one JSON result instead of streaming text")
    ask.add_argument("--jsonl", action="store_true",
                     help="read requests from stdin, one per line (text or JSON); write one JSON result per line")
    status = sub.add_parser("status", help="show each provider: configuration, key (masked), health")
    status.add_argument("--config")
    status.add_argument("--json", action="store_true")
    status.add_argument("--no-probe", action="store_true", help="don't call the providers")
    followups = sub.add_parser("followups", help="list the questions kept for follow-up (open ones by default)")
    followups.add_argument("--config")
    followups.add_argument("--json", action="store_true", help="print them as one JSON array")
    followups.add_argument("--all", action="store_true", help="include the answered ones")
    followups.add_argument("--answer", type=_question_id, metavar="ID", help="mark question ID answered")
    return p


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        for stream in (stdout, stderr):  # a character the locale can't encode is escaped, never fatal
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        args = _parser().parse_args(argv)
        if args.command == "ask":
            return _ask(args, stdin, stdout, stderr)
        if args.command == "followups":
            return _followups(args, stdout, stderr)
        return _status(args, stdout)
    except (UsageError, ConfigError, NoProviders, InvalidRequest) as e:
        print(f"understudy: {e}", file=stderr)
        return 2
    except StoreError as e:
        print(f"understudy: {e}", file=stderr)
        return 1
    except KeyboardInterrupt:
        print("understudy: interrupted", file=stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: the reader left; nothing more to say
        return 0
    except OSError as e:  # writing the answer failed (a full disk behind `> file`, a closed terminal)
        _say(stderr, f"understudy: can't write the output ({e.strerror or type(e).__name__})")
        return 1
    except Exception as e:  # noqa: BLE001 — a bug of ours still gets one clean line, never a traceback
        _say(stderr, f"understudy: internal error ({type(e).__name__}); please report it")
        return 3


def _say(stderr, line: str) -> None:
    try:
        print(line, file=stderr)
    except OSError:  # stderr is gone too: the exit status is all that is left to say it
        pass


def _question_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a question id: {text[:40]!r}") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError("not a question id: ids are whole numbers from 1")
    return value


def _settings(args) -> dict:
    return _checked_settings(args.system, args.temperature, args.max_tokens,
                             name=lambda key: "--" + key.replace("_", "-"))


def _checked_settings(system, temperature, max_tokens, *, name) -> dict:
    """The same rules for flags and for JSON lines; `name(key)` spells a setting as its user typed it."""
    if not isinstance(system, str):
        raise UsageError(f"{name('system')} must be a string")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise UsageError(f"{name('temperature')} must be a number")
        low, high = TEMPERATURE_RANGE  # the request's own rule, spelled as the user typed the setting
        if not low <= temperature <= high:  # also refuses NaN and infinities
            raise UsageError(f"{name('temperature')} must be between {low:g} and {high:g}")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise UsageError(f"{name('max_tokens')} must be a whole number")
        if max_tokens < 1:
            raise UsageError(f"{name('max_tokens')} must be at least 1")
    return {"system": clean_text(system), "temperature": temperature, "max_tokens": max_tokens}


def _router(args, *, probing: bool = False) -> Router:
    return build(args.config, probing=probing).router


def _ask(args, stdin, stdout, stderr) -> int:
    settings = _settings(args)
    if args.jsonl:
        if args.question is not None:
            raise UsageError("--jsonl reads questions from stdin; don't give one as an argument")
        router = _router(args, probing=True)  # a long-lived process: keep health fresh in the background
        try:
            return _jsonl(router, settings, stdin, stdout)
        finally:
            router.close()
    if args.question is None:
        raise UsageError("give a question, e.g. python -m core ask \"What is a circuit breaker?\"")
    request = ChatRequest(messages=(Message("user", _question(args.question)),), **settings)
    router = _router(args)
    try:
        if args.json:
            result = router.ask(request)
            print(json.dumps(result.as_dict(), ensure_ascii=not _speaks_utf(stdout)), file=stdout, flush=True)
        else:
            result = _stream_text(router, request, stdout, stderr)
    finally:
        router.close()
    return result.tier.exit_status


def _question(text: str) -> str:
    text = clean_text(text)
    if not text.strip():
        raise UsageError("the question is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise UsageError(f"the question is {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}")
    return text


def _stream_text(router: Router, request: ChatRequest, stdout, stderr) -> Result:
    """Print exactly the answer the user should read. On a terminal it streams live and a
    `Restart` erases the abandoned text; otherwise only the final text is written, once."""
    answer = Answer()
    screen = _Screen(stdout) if _isatty(stdout) else None
    for event in router.stream(request):
        change = answer.add(event)
        if screen is not None:
            screen.show(change)
        if isinstance(event, Restart):
            what = f"restarting with {event.provider}" if event.provider else "giving up"
            print(f"[{event.failed} failed mid-answer ({event.reason}); {what}]", file=stderr, flush=True)
    result = answer.result
    assert result is not None  # the router always ends with Done
    if screen is None:
        stdout.write(result.text)
    stdout.write("\n")
    stdout.flush()
    hops = sum(1 for a in result.attempts if a.outcome.failed)
    via = f"{result.provider} ({result.model})" if result.provider else result.tier
    notice = f" {result.notice}" if result.notice else ""
    print(f"[{result.tier}: {via}, {result.elapsed_ms:.0f} ms, {hops} failed attempt(s)]{notice}", file=stderr,
          flush=True)
    return result


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# Control characters (other than newline and tab) would move the cursor or restyle the terminal:
# a model's output is never allowed to, and without them the text's height can be worked out.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _Screen:
    """Live text on a terminal that can be taken back.

    To erase, it works out how many rows the text it wrote occupies (wide characters count two
    cells, combining marks none, lines wrap at the terminal's width), moves the cursor up that
    many rows and clears to the end of the screen. It assumes the answer starts at the left edge
    (nothing else is written to stdout before it). Rows that have scrolled off the top of the
    window, or a window resized mid-answer, can't be taken back exactly.
    """

    def __init__(self, out) -> None:
        self.out = out
        self.shown: list[str] = []

    def show(self, change: Change) -> None:
        if change.replaced and self.shown:
            rows = _rows("".join(self.shown), _columns(self.out))
            self.out.write((f"\x1b[{rows - 1}A" if rows > 1 else "") + "\r\x1b[J")
            self.shown.clear()
        text = _CONTROL.sub("", clean_text(change.added))
        if text:
            self.out.write(text)
            self.shown.append(text)
        self.out.flush()


def _columns(out) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def _rows(text: str, columns: int) -> int:
    """Rows of a `columns`-wide terminal that `text`, written from the left edge, covers."""
    rows = 0
    for line in text.split("\n"):
        rows += 1
        col = 0
        for ch in line:
            if ch == "\t":
                col = min(columns, (col // 8 + 1) * 8)  # a tab stops at the edge; it never wraps
                continue
            width = _cells(ch)
            if col + width > columns:  # the terminal wraps before a character that doesn't fit
                rows += 1
                col = 0
            col += width
    return rows


def _cells(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


# A request line is at most this long (bytes); longer lines are skipped unread, with an error.
MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 32  # a request needs 3 ({"messages": [{...}]}); deeper is an attack on the parser


def _jsonl(router: Router, settings: dict, stdin, stdout) -> int:
    """One request per line, one JSON line out per line in; router state (breakers, cache,
    metrics) lives for the whole process. No line, whatever its bytes, stops the ones after it."""
    ascii_only = not _speaks_utf(stdout)
    for number, line in enumerate(_lines(stdin), 1):
        try:
            request = _parse_line(line, settings)
        except ValueError as e:
            out = {"error": _short(str(e)), "line": number}
        except Exception as e:  # noqa: BLE001 — a bug of ours in one line must not cost the lines after it
            out = {"error": f"internal error reading this line ({type(e).__name__}); please report it",
                   "line": number}
        else:
            out = router.ask(request).as_dict()
        stdout.write(json.dumps(out, ensure_ascii=ascii_only) + "\n")
        stdout.flush()
    return 0


def _lines(stdin) -> Iterator[str | None]:
    """Each line as text (None for one longer than MAX_LINE_BYTES, skipped without being kept).
    Bytes are decoded line by line with replacement, so bytes that aren't UTF-8 become U+FFFD
    instead of ending the stream, whatever the locale."""
    raw = getattr(stdin, "buffer", stdin)  # a text stream without one (a StringIO) is read as is
    first = True
    while line := raw.readline(MAX_LINE_BYTES + 1):
        newline = b"\n" if isinstance(line, bytes) else "\n"
        if len(line) > MAX_LINE_BYTES and not line.endswith(newline):
            while (rest := raw.readline(MAX_LINE_BYTES)) and not rest.endswith(newline):
                pass
            yield None
        else:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            yield text.removeprefix("\ufeff") if first else text  # a byte-order mark is not part of the text
        first = False


def _speaks_utf(stream) -> bool:
    encoding = getattr(stream, "encoding", None)
    try:
        return encoding is None or codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


def _parse_line(line: str | None, settings: dict) -> ChatRequest:
    if line is None:
        raise ValueError(f"the line is longer than {MAX_LINE_BYTES:,} bytes; it was skipped")
    text = line.strip()
    if not text:
        raise ValueError("the line is empty: give a question or a JSON request")
    if text.startswith("{"):
        obj = _loads(text)
    elif text.startswith(("[", '"')) and _is_json(text):
        kind = "an array" if text.startswith("[") else "a string"
        raise ValueError(f"a JSON request must be an object, not {kind}: "
                         '{"messages": [{"role": "user", "content": "..."}]}')
    else:
        return ChatRequest(messages=(Message("user", _question(text)),), **settings)
    if not isinstance(obj.get("messages"), list):
        raise ValueError('a JSON request needs "messages": [{"role": "user", "content": "..."}]')
    merged = {key: obj.get(key, settings[key]) for key in ("system", "temperature", "max_tokens")}
    merged = _checked_settings(**merged, name=lambda key: f'"{key}"')
    messages = messages_from(obj["messages"])
    for m in messages:
        _question(m.content)
    return ChatRequest(messages=messages, **merged)


def _loads(text: str):
    """`json.loads` for untrusted lines: bounded nesting, no NaN or infinities (Python's json
    accepts them by default), clear one-line errors."""
    if _depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # e.g. an integer with more digits than Python will convert
        raise ValueError(f"not valid JSON ({_short(str(e), 120)})") from None


def _is_json(text: str) -> bool:
    if _depth(text) > MAX_JSON_DEPTH:
        return True  # too deep to parse safely: not a question either
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """How deep brackets nest outside strings: a linear scan, so a line of 200,000 "[" costs
    milliseconds instead of a RecursionError in the parser."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(itertools.accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal} is too large a number")
    return value


def _status(args, stdout) -> int:
    router = _router(args)
    try:
        rows = router.status(probe=not args.no_probe)
        verdict = judge(router)  # after the probe: the same rows, and the words /healthz would say
    finally:
        router.close()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], ensure_ascii=False, indent=2), file=stdout)
        return 0
    cols = ("name", "kind", "model", "endpoint", "key", "health", "breaker")
    table = [[str(getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)), file=stdout)
    for r, row in zip(rows, table):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths))
        extra = f"  {r.probe_ms:.0f} ms" if r.probe_ms is not None and r.health == "ok" else ""
        extra += f"  {r.detail}" if r.detail else ""
        print(line + extra, file=stdout)
    print(verdict.headline, file=stdout)
    return 0


def _followups(args, stdout, stderr) -> int:
    """Exit 1 when the store can't be read or written (one line on stderr), or ID is unknown."""
    config = load_config(args.config)
    store = SqlFollowUpStore(database_url(asdict(config.policy.store)))
    try:
        if args.answer is not None:
            if not store.mark_answered(args.answer, at=time.time()):
                print(f"understudy: no kept question has id {args.answer}", file=stderr)
                return 1
            print(f"question {args.answer} marked answered", file=stdout)
            return 0
        items = store.list(answered=None if args.all else False)
    finally:
        store.close()
    if args.json:
        print(json.dumps([f.as_dict() for f in items], ensure_ascii=False, indent=2), file=stdout)
        return 0
    if not items:
        print("no questions kept" if args.all else "no open questions (--all shows the answered ones too)",
              file=stdout)
        return 0
    for f in items:
        asked = datetime.fromtimestamp(f.asked_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        state = "answered" if f.answered else "open"
        # Users' words go to an operator's terminal: no escape sequence in them may reach it.
        first = " ".join(_CONTROL.sub("\uFFFD", f.question).split())
        first = first if len(first) <= 100 else first[:100] + "…"
        why = _CONTROL.sub("\uFFFD", f.why or "-")
        print(f"#{f.id}  {asked}  {state}  {why}\n    {first}", file=stdout)
    return 0
