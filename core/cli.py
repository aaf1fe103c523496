"""Command line: `python -m core ask|status|followups`.

Exit status: 0 when the user got an answer or an honest decline; 1 when no provider could
answer (the reply says so, and whether the question was kept), or when `followups` can't use
its store; 2 for usage or configuration errors, with one line on stderr. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import TextIO

from .chat import MAX_INPUT_CHARS, ChatRequest, InvalidRequest, Message, clean_text, messages_from
from .config import ConfigError, load_config
from .router import Delta, Done, Restart, Result, Router  # light: SDKs load only when a chain needs them
from .store import SqlFollowUpStore, StoreError, database_url


class UsageError(Exception):
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
    followups.add_argument("--answer", type=int, metavar="ID", help="mark question ID answered")
    return p


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
        if args.command == "ask":
            return _ask(args, stdin, stdout, stderr)
        if args.command == "followups":
            return _followups(args, stdout, stderr)
        return _status(args, stdout)
    except (UsageError, ConfigError, InvalidRequest) as e:
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
    except Exception as e:  # noqa: BLE001 — a bug of ours still gets one clean line, never a traceback
        print(f"understudy: internal error ({type(e).__name__}); please report it", file=stderr)
        return 3


def _settings(args) -> dict:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise UsageError("--temperature must be between 0 and 2")
    return {"system": clean_text(args.system), "temperature": args.temperature, "max_tokens": args.max_tokens}


def _router(args) -> Router:
    config = load_config(args.config)
    if not config.providers:
        raise UsageError("no providers configured: set ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or "
                         "OLLAMA_HOST, or write understudy.toml (see README)")
    return Router(config)


def _ask(args, stdin, stdout, stderr) -> int:
    settings = _settings(args)
    if args.jsonl:
        if args.question is not None:
            raise UsageError("--jsonl reads questions from stdin; don't give one as an argument")
        router = _router(args)
        router.start_probing()  # a long-lived process: keep health fresh in the background
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
            print(json.dumps(result.as_dict(), ensure_ascii=False), file=stdout, flush=True)
        else:
            result = _stream_text(router, request, stdout, stderr)
    finally:
        router.close()
    return 1 if result.tier == "unavailable" else 0


def _question(text: str) -> str:
    text = clean_text(text)
    if not text.strip():
        raise UsageError("the question is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise UsageError(f"the question is {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}")
    return text


def _stream_text(router: Router, request: ChatRequest, stdout, stderr) -> Result:
    result = None
    for event in router.stream(request):
        if isinstance(event, Delta):
            stdout.write(event.text)
            stdout.flush()
        elif isinstance(event, Restart):
            # Text already printed can't be taken back from a terminal: say so, start afresh.
            stdout.write("\n")
            what = f"restarting with {event.provider}" if event.provider else "giving up"
            print(f"[{event.failed} failed mid-answer ({event.reason}); {what}]", file=stderr, flush=True)
        elif isinstance(event, Done):
            result = event.result
    assert result is not None
    if result.tier in ("declined", "unavailable"):
        stdout.write(result.text)
    stdout.write("\n")
    stdout.flush()
    hops = sum(1 for a in result.attempts if a.outcome != "ok")
    via = f"{result.provider} ({result.model})" if result.provider else result.tier
    print(f"[{result.tier}: {via}, {result.elapsed_ms:.0f} ms, {hops} failed attempt(s)]", file=stderr, flush=True)
    return result


def _jsonl(router: Router, settings: dict, stdin, stdout) -> int:
    """One request per line; router state (breakers, cache, metrics) lives for the whole process."""
    for number, line in enumerate(stdin, 1):
        if not line.strip():
            continue
        try:
            request = _parse_line(line, settings)
        except ValueError as e:
            out = {"error": str(e), "line": number}
        else:
            out = router.ask(request).as_dict()
        stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        stdout.flush()
    return 0


def _parse_line(line: str, settings: dict) -> ChatRequest:
    text = line.strip()
    if not text.startswith("{"):
        return ChatRequest(messages=(Message("user", _checked(text)),), **settings)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj.get("messages"), list):
        raise ValueError('a JSON request needs "messages": [{"role": "user", "content": "..."}]')
    merged = dict(settings)
    for key in ("system", "temperature", "max_tokens"):
        if key in obj:
            merged[key] = obj[key]
    if not isinstance(merged["system"], str):
        raise ValueError('"system" must be a string')
    for key, kind in (("temperature", (int, float)), ("max_tokens", int)):
        if merged[key] is not None and (not isinstance(merged[key], kind) or isinstance(merged[key], bool)):
            raise ValueError(f'"{key}" must be a number')
    messages = messages_from(obj["messages"])
    for m in messages:
        _checked(m.content)
    return ChatRequest(messages=messages, **{**merged, "system": clean_text(merged["system"])})


def _checked(text: str) -> str:
    try:
        return _question(text)
    except UsageError as e:
        raise ValueError(str(e)) from None


def _status(args, stdout) -> int:
    router = _router(args)
    try:
        rows = router.status(probe=not args.no_probe)
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
    return 0


def _followups(args, stdout, stderr) -> int:
    """Exit 1 when the store can't be read or written (one line on stderr), or ID is unknown."""
    config = load_config(args.config)
    store = SqlFollowUpStore(database_url(config.policy["store"]))
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
        first = " ".join(f.question.split())
        first = first if len(first) <= 100 else first[:100] + "…"
        print(f"#{f.id}  {asked}  {state}  {f.why or '-'}\n    {first}", file=stdout)
    return 0
