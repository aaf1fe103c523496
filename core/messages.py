"""What a conversation is, and what a provider's stream yields, independent of any SDK."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no provider, cache key or store can take them
        return False
    return True


class InvalidRequest(ValueError):
    """A request that no provider should be sent; the message says which field and why, in one line."""


TEMPERATURE_RANGE = (0.0, 2.0)  # the widest any of the four APIs accepts
MAX_OUTPUT_TOKENS = 1_000_000  # far above any model's output limit; beyond it a number is a mistake


@dataclass(frozen=True)
class ChatRequest:
    """One turn to answer: the conversation so far plus generation settings.

    System text may come from `system` and from any `system` messages; adapters merge them
    into the one place their API wants it. A request is checked when it is built, so the app,
    the CLI and the router never pass on one that a provider's SDK would choke on (and one
    client's NaN never counts against a provider's health).
    """

    messages: tuple[Message, ...]
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for i, m in enumerate(self.messages):
            if not isinstance(m, Message) or m.role not in ROLES or not isinstance(m.content, str):
                raise InvalidRequest(f"messages[{i}] must be a message with a role ({', '.join(ROLES)}) "
                                     "and text content")
        if not isinstance(self.system, str):
            raise InvalidRequest("system must be text")
        texts = [("system", self.system), *((f"messages[{i}]", m.content) for i, m in enumerate(self.messages))]
        for where, text in texts:
            if not _encodable(text):
                raise InvalidRequest(f"{where} contains text that is not valid Unicode (a lone surrogate)")
        t = self.temperature
        low, high = TEMPERATURE_RANGE
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                              or not math.isfinite(t) or not low <= t <= high):
            raise InvalidRequest(f"temperature must be a number from {low:g} to {high:g}, not {t!r}")
        n = self.max_tokens
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_OUTPUT_TOKENS):
            raise InvalidRequest(f"max_tokens must be a whole number from 1 to {MAX_OUTPUT_TOKENS:,}, not {n!r}")

    @classmethod
    def ask(cls, question: str, **settings) -> ChatRequest:
        return cls(messages=(Message("user", question),), **settings)

    def system_text(self) -> str:
        parts = [self.system] + [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(p for p in parts if p.strip())

    def turns(self) -> list[Message]:
        """User and assistant messages in order, consecutive same-role messages merged.

        Anthropic and Gemini expect alternating roles; merging is harmless for the others.
        """
        merged: list[Message] = []
        for message in self.messages:
            if message.role == "system":
                continue
            if merged and merged[-1].role == message.role:
                merged[-1] = Message(message.role, merged[-1].content + "\n\n" + message.content)
            else:
                merged.append(message)
        return merged

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


MAX_INPUT_CHARS = 200_000
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text safe to send anywhere: lone surrogates (from odd terminals or JSON) become U+FFFD,
    NULs are dropped. Everything else the user typed is kept as typed."""
    return _SURROGATES.sub("\ufffd", text).replace("\x00", "")


def messages_from(items: Iterable[dict]) -> tuple[Message, ...]:
    """Build messages from `{"role": ..., "content": ...}` dicts, rejecting anything else."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append(Message(role, clean_text(content)))
    if not any(m.role == "user" for m in out):
        raise ValueError("messages must contain at least one user message")
    return tuple(out)


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_dict(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


# Normalised finish reasons. Each adapter maps its protocol's own words through an allow-list;
# whatever is not on it, including words we have never seen, is "other".
#   stop            the model finished on its own: the only complete answer, the only one cached
#   length          the caller's own token limit: an honest, incomplete answer
#   content_filter  a policy ending: a decline
#   other           anything else: a broken stream, treated as one cut off (never shown as whole)
FinishReason = Literal["stop", "length", "content_filter", "other"]


@dataclass(slots=True)
class TextDelta:
    """A piece of answer text, in order: what a provider's stream yields, and what the router
    passes on to its caller as it came (`core.answer.Delta` is this class).

    One is built for every chunk of every answer, so it is the cheapest object that reads like
    the others: slotted, and not frozen (a frozen dataclass sets its field through
    `object.__setattr__`, which doubles the cost). Nobody changes one after it is built."""

    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The last thing a provider stream yields: it ended with its protocol's end marker."""

    finish_reason: FinishReason
    model: str
    usage: Usage | None = None
    native_reason: str = ""  # the provider's own word for it, e.g. "refusal", "SAFETY"
