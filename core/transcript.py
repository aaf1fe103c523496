"""A conversation as a file: the Markdown and JSON exports, and reading a JSON export back in.

An imported file is someone's upload: it is checked whole before anything is kept (size, UTF-8,
JSON without NaN, nesting depth, shape), and every message's badge data is rebuilt from the
fields the chat page knows, so a hand-edited file can't break how a conversation is drawn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from . import attachments as files
from .attempt import Outcome
from .markdown import code, literal, without_images
from .messages import MAX_INPUT_CHARS, clean_text
from .store.conversations import Conversation, new_id
from .tiers import Tier

FORMAT = "understudy.conversation"
MAX_IMPORT_BYTES = 5_000_000
MAX_MESSAGES = 5_000
MAX_DEPTH = 32
DEFAULT_SYSTEM = "You are a helpful, concise assistant."
TEMPERATURE_RANGE = (0.0, 2.0)
MAX_TOKENS_RANGE = (16, 32_000)
DEFAULT_SETTINGS = {"system": DEFAULT_SYSTEM, "temperature": 0.7, "max_tokens": 1024}


class BadImport(ValueError):
    """The file is not an export we can read; the message says why, for people."""


@dataclass(frozen=True)
class Parsed:
    messages: list[dict]
    settings: dict
    title: str


# -- writing --------------------------------------------------------------------------------------
def to_markdown(messages: Sequence[Mapping], settings: Mapping, *, id: str = "", title: str = "",
                tz: tzinfo | None = None) -> str:
    """The conversation as a Markdown file. What came from an import (title, badge data) is drawn
    as literal text, and no message or system prompt can embed an image: a viewer would fetch it.
    Each message is headed with its time in `tz` (the reader's time zone; UTC by default), and a
    message's attached files follow it, each fenced as it was sent."""
    lines = [f"# {literal(title or 'Understudy conversation')}", ""]
    if id:
        lines += [f"*Conversation:* {code(id)}", ""]
    system = str(settings.get("system") or "").strip()
    if system:
        lines += [f"*System prompt:* {without_images(system)}", ""]
    for m in messages:
        who = "You" if m["role"] == "user" else "Assistant"
        meta = m.get("meta") or {}
        via = ", ".join(literal(v) for v in (meta.get("provider") or meta.get("tier"), meta.get("model")) if v)
        via = f" ({via})" if m["role"] == "assistant" and via else ""
        at = f" · {when(m['at'], tz)}" if _number(m.get("at")) else ""
        lines += [f"**{who}{via}**{at}", ""]
        if m["content"]:
            lines += [without_images(m["content"]), ""]
        for a in files.stored(m.get("attachments")):
            lines += [f"📎 {literal(a['name'])} · {files.human_size(a['size'])}", "",
                      without_images(files.fenced(a["text"])), ""]
    return "\n".join(lines)


LAST_TIME = 253_402_214_399.0  # 9999-12-30 23:59:59 UTC: a day short of datetime's end, for any zone


def when(at: float, tz: tzinfo | None = None) -> str:
    """A message's time as people read it: "2026-12-07 14:03:12 CET" (UTC when no zone is known);
    "" for a time no calendar can show."""
    try:
        moment = datetime.fromtimestamp(at, tz or timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + (moment.tzname() or "UTC")


def iso(at: float) -> str:
    """A message's time for programs: ISO 8601 in UTC, to the second ("2026-12-07T13:03:12Z"); ""
    for a time no calendar can show."""
    try:
        return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return ""


def to_json(messages: Sequence[Mapping], settings: Mapping, *, id: str = "", title: str = "",
            created_at: float | None = None, updated_at: float | None = None, exported_at: float | None = None) -> str:
    """The export: settings at the top level (as before ids were added), then the messages with their
    badges, timelines, attached files and times (`at`: seconds since 1970, as stored; `time`: the
    same in ISO 8601 UTC, for people and spreadsheets)."""
    doc = {"format": FORMAT, "version": 1, "id": id, "title": title, "created_at": created_at,
           "updated_at": updated_at, "exported_at": exported_at,
           "system": settings.get("system", DEFAULT_SYSTEM), "temperature": settings.get("temperature"),
           "max_tokens": settings.get("max_tokens"),
           "messages": [{**m, "time": iso(m["at"])} if _number(m.get("at")) else dict(m) for m in messages]}
    return json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False)


# -- reading --------------------------------------------------------------------------------------
def parse_export(data: bytes) -> Parsed:
    """The conversation in a JSON export (ours, with or without ids), or BadImport."""
    if not data:
        raise BadImport("The file is empty.")
    if len(data) > MAX_IMPORT_BYTES:
        raise BadImport(f"The file is {len(data):,} bytes; the limit is {MAX_IMPORT_BYTES:,}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadImport(f"The file is not UTF-8 text (byte {e.start:,} is not valid).") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadImport("The file is nested too deeply to be a conversation export.") from None
    except json.JSONDecodeError as e:
        raise BadImport(f"The file is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    _check_depth(doc)
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
        raise BadImport("This JSON is not a conversation export: it needs an object with a \"messages\" list.")
    raw = doc["messages"]
    if len(raw) > MAX_MESSAGES:
        raise BadImport(f"The file has {len(raw):,} messages; the limit is {MAX_MESSAGES:,}.")
    messages = [_message(i, m) for i, m in enumerate(raw)]
    title = doc.get("title")
    title = " ".join(clean_text(title).split())[:200] if isinstance(title, str) else ""
    return Parsed(messages=messages, settings=_settings(doc), title=title)


def conversation_from_export(data: bytes, *, owner: str, now: float) -> Conversation:
    """A new conversation (new id, `owner`'s) holding what the export holds."""
    parsed = parse_export(data)
    return Conversation(id=new_id(), owner=owner, created_at=now, updated_at=now, messages=parsed.messages,
                        settings=parsed.settings, title=parsed.title)


def _no_constant(name: str):
    raise BadImport(f"The file contains {name}, which is not a JSON number.")


def _check_depth(doc: Any) -> None:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadImport("The file is nested too deeply to be a conversation export.")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _settings(doc: dict) -> dict:
    out = dict(DEFAULT_SETTINGS)
    system = doc.get("system", DEFAULT_SYSTEM)
    if not isinstance(system, str) or len(system) > MAX_INPUT_CHARS:
        raise BadImport(f"\"system\" must be text of at most {MAX_INPUT_CHARS:,} characters.")
    out["system"] = clean_text(system)
    temperature = doc.get("temperature", out["temperature"])
    if temperature is not None:
        lo, hi = TEMPERATURE_RANGE
        if not _number(temperature) or not lo <= temperature <= hi:
            raise BadImport(f"\"temperature\" must be a number from {lo} to {hi}.")
        out["temperature"] = round(float(temperature), 2)
    max_tokens = doc.get("max_tokens", out["max_tokens"])
    if max_tokens is not None:
        lo, hi = MAX_TOKENS_RANGE
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not lo <= max_tokens <= hi:
            raise BadImport(f"\"max_tokens\" must be a whole number from {lo:,} to {hi:,}.")
        out["max_tokens"] = max_tokens
    return out


def _message(i: int, m: Any) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise BadImport(f"{where} must be an object with \"role\" and \"content\".")
    role, content = m.get("role"), m.get("content")
    if role not in ("user", "assistant"):
        raise BadImport(f"{where}.role must be \"user\" or \"assistant\".")
    if not isinstance(content, str):
        raise BadImport(f"{where}.content must be text.")
    out: dict = {"role": role, "content": clean_text(content)}
    at = m.get("at") if _number(m.get("at")) else _from_iso(m.get("time"))
    # An export from before messages had times has neither: it imports without. A time no calendar
    # can show (before 1970, after 9999: a hand-edited file) is dropped, not kept to break the page.
    if at is not None and 0 <= at <= LAST_TIME:
        out["at"] = float(at)
    if role == "user" and m.get("attachments"):
        attached = files.stored(m["attachments"])
        if why := files.too_long(out["content"], attached):
            raise BadImport(f"{where}: {why}")
        if attached:
            out["attachments"] = attached
    meta = m.get("meta")
    if role == "assistant" and isinstance(meta, dict):
        out["meta"] = clean_meta(meta)
    return out


def clean_meta(meta: Mapping) -> dict:
    """An answer's badge and timeline data with only the fields the page draws, each of its type;
    an unknown tier or outcome becomes a neutral one rather than an error."""
    tier = meta.get("tier")
    out: dict = {
        "tier": tier if tier in {t.value for t in Tier} else Tier.PROVIDER.value,
        "complete": meta.get("complete") if isinstance(meta.get("complete"), bool) else True,
        "provider": _text_or_none(meta.get("provider")),
        "model": _text_or_none(meta.get("model")),
        "finish_reason": _text_or_none(meta.get("finish_reason")),
        "notice": _text(meta.get("notice")),
        "elapsed_ms": _ms(meta.get("elapsed_ms")),
        "ttft_ms": _ms(meta.get("ttft_ms")),
        "attempts": [_attempt(a) for a in _list(meta.get("attempts")) if isinstance(a, dict)],
        "switches": [_switch(s) for s in _list(meta.get("switches")) if isinstance(s, dict)],
    }
    usage = meta.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {k: usage[k] if isinstance(usage.get(k), int) and not isinstance(usage.get(k), bool) else None
                        for k in ("input_tokens", "output_tokens")}
    if meta.get("stopped") is True:
        out["stopped"] = True
    return out


def _attempt(a: dict) -> dict:
    outcome = a.get("outcome")
    return {"provider": _text(a.get("provider")), "model": _text(a.get("model")),
            "outcome": outcome if outcome in {o.value for o in Outcome} else Outcome.ERROR.value,
            "error_kind": _text_or_none(a.get("error_kind")), "latency_ms": _ms(a.get("latency_ms")) or 0.0,
            "ttft_ms": _ms(a.get("ttft_ms")), "detail": _text(a.get("detail"))[:500], "hedge": a.get("hedge") is True,
            "stall": a.get("stall") is True, "status": _status(a.get("status"))}


def _status(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599 else None


def _switch(s: dict) -> dict:
    return {"failed": _text(s.get("failed")), "provider": _text_or_none(s.get("provider")),
            "reason": _text(s.get("reason"))}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _from_iso(v: Any) -> float | None:
    if not isinstance(v, str):
        return None
    try:
        moment = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _ms(v: Any) -> float | None:
    return float(v) if _number(v) and v >= 0 else None


def _text(v: Any) -> str:
    return clean_text(v)[:2000] if isinstance(v, str) else ""


def _text_or_none(v: Any) -> str | None:
    return clean_text(v)[:200] if isinstance(v, str) else None


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []
