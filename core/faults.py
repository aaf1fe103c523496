"""Faults: what can go wrong with one provider request, and how it looks on each provider's wire.

One vocabulary for both places that play faults: the simulated servers (`core/simulator`, the
tests' and the demo's network peer) and the chaos transport (`core/chaos.py`, under the real
SDKs). `Fault` says what goes wrong; a `Dialect` says how one protocol frames its stream and
words its errors; `error_reply`, `before_reply` and `disturb` play a fault, the same way for both.
What is left to each side is its own transport: a `Peer` pauses, hangs up or resets.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NoReturn, Protocol

# Every fault in the failure catalogue.
# How an HTTP error tells the client when to come back (Fault.hint).
RETRY_HINTS = ("retry-after", "retry-after-ms", "reset", "text")
_HINT_WORDS = {"retry-after": "Retry-After", "retry-after-ms": "retry-after-ms", "reset": "rate-limit reset in",
               "text": "“try again in” (text only)"}
FAULT_KINDS = (
    "ok",           # a normal answer
    "status",       # an HTTP error in the provider's own shape (status, flavour, retry_after)
    "reset",        # TCP reset before any byte
    "silence",      # accept, read the request, never answer (for `seconds`; 0: until the client gives up)
    "latency",      # wait `seconds` before answering normally
    "slow_first",   # headers and preamble at once, the first text after `seconds`
    "cut",          # `after` text chunks, then the connection dies mid-body
    "stall",        # `after` text chunks, then silence for `seconds` (0: until the client gives up), then the rest
    "malformed",    # one garbled frame after `after` text chunks, then the rest
    "error_event",  # `after` text chunks, then the protocol's in-stream error
    "no_end",       # `after` text chunks, then a clean close without the end marker
    "no_sentinel",  # the whole answer without the optional end sentinel (S11)
    "refusal",      # `after` text chunks, then a content-policy stop (blocked prompt when 0)
    "length",       # the whole answer, ending because max_tokens was reached
    "finish",       # the answer (its first `after` text chunks when `after` > 0), then the protocol's
                    # end marker with the finish reason `reason`, verbatim (e.g. "OTHER", "pause_turn")
)
# Faults that strike after `after` text chunks (or before the end marker, if the text runs out first).
MID_STREAM = ("cut", "stall", "malformed", "error_event", "no_end")
# Faults `disturb` plays on the frames of an answer.
STREAM_FAULTS = ("slow_first", *MID_STREAM)
# Faults that need no model's cooperation, so the chaos transport can play them under the SDK.
# (The others shape the answer itself: only a simulated server can.)
TRANSPORT_FAULTS = ("status", "reset", "silence", "latency", *STREAM_FAULTS)

# Error flavours, and the status each one uses by default.
FLAVOUR_STATUS = {
    "rate_limit": 429,
    "overloaded": 529,
    "unavailable": 503,
    "server": 500,
    "auth": 401,
    "forbidden": 403,
    "not_found": 404,
    "context_length": 400,
    "content_filter": 400,
    "bad_request": 400,
    "prefill": 400,
}
STATUS_FLAVOUR = {429: "rate_limit", 529: "overloaded", 503: "unavailable", 502: "server", 500: "server",
                  401: "auth", 403: "forbidden", 404: "not_found", 400: "bad_request"}

_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


@dataclass(frozen=True)
class Fault:
    """One thing that goes wrong with a request. `Fault()` is a normal answer."""

    kind: str = "ok"
    status: int | None = None
    flavour: str | None = None
    retry_after: float | None = None
    after: int = 0
    seconds: float = 0.0
    retry_after_header: bool = True  # False: only where the protocol has a body field (Gemini's RetryInfo)
    # How the wait is given (see RETRY_HINTS): the Retry-After header, retry-after-ms, the protocol's
    # rate-limit reset headers, or only in the message text.
    hint: str = "retry-after"
    reason: str = ""  # the finish reason a "finish" fault ends with
    echo_headers: bool = False  # the error message quotes the request's credential headers, as some proxies do

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.hint not in RETRY_HINTS:
            raise ValueError(f"unknown retry hint {self.hint!r}; known: {', '.join(RETRY_HINTS)}")
        if (self.kind == "finish") != bool(self.reason):
            raise ValueError('a "finish" fault needs a reason, and only it takes one')

    @classmethod
    def finish(cls, reason: str, after: int = 0) -> Fault:
        """End the answer (after `after` text chunks, if given) with this protocol finish reason."""
        return cls("finish", reason=reason, after=after)

    @classmethod
    def http(cls, status: int = 0, flavour: str | None = None, retry_after: float | None = None,
             retry_after_header: bool = True, echo_headers: bool = False, hint: str = "retry-after") -> Fault:
        """An HTTP error. Give a status, a flavour (e.g. "context_length") or both; `retry_after`
        seconds to wait, given the way `hint` says."""
        status = status or FLAVOUR_STATUS[flavour or "server"]
        return cls("status", status=status, flavour=flavour or STATUS_FLAVOUR.get(status, "server"),
                   retry_after=retry_after, retry_after_header=retry_after_header, echo_headers=echo_headers,
                   hint=hint)

    def describe(self) -> str:
        """In a few words, for people (the chaos panel)."""
        return {
            "status": f"HTTP {self.status} ({self.flavour})"
                      + (f", {_HINT_WORDS[self.hint]} {self.retry_after:g}s" if self.retry_after else ""),
            "reset": "connection reset", "silence": "silence (never answers)",
            "latency": f"+{self.seconds:g}s latency", "slow_first": f"first token after {self.seconds:g}s",
            "cut": f"stream cut after {self.after} chunks",
            "stall": f"stream stalls {self.seconds:g}s after {self.after} chunks",
            "malformed": f"malformed chunk after {self.after} chunks",
            "error_event": f"error event after {self.after} chunks",
            "no_end": f"stream ends early after {self.after} chunks",
        }.get(self.kind, self.kind)


# -- how each protocol frames its stream and words its errors ----------------------------------------
_MESSAGES = {
    "rate_limit": "Rate limit reached for requests. Please try again later.",
    "overloaded": "Overloaded",
    "unavailable": "The service is temporarily unavailable.",
    "server": "Internal server error",
    "auth": "Invalid API key provided.",
    "forbidden": "Your API key does not have permission to use this model.",
    "not_found": "The model '{model}' does not exist or you do not have access to it.",
    "context_length": "This model's maximum context length is 8192 tokens. However, your messages resulted in 250000 tokens.",
    "content_filter": "The request was rejected because it was flagged by the content policy.",
    "bad_request": "messages: text content blocks must be non-empty",
    "prefill": "This model does not support assistant message prefill. The conversation must end with a user message.",
}
# A frame that carries answer text: a non-empty "text" or "content" string, in any of the four protocols.
_TEXT = re.compile(rb'"(text|content)"\s*:\s*"[^"]')


def sse(data: dict | str, event: str | None = None, sep: str = "\n") -> bytes:
    """One server-sent event."""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}{sep}" if event else ""
    return f"{head}data: {body}{sep}{sep}".encode()


def ndjson(data: dict) -> bytes:
    """One line of newline-delimited JSON."""
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


class Dialect:
    """One provider protocol, as far as faults need it: its stream framing and its error shapes."""

    content_type = "text/event-stream"
    _separators = (b"\r\n\r\n", b"\n\n")
    _end: re.Pattern[bytes]  # the frame that carries the finish reason: the end marker

    _messages: dict[str, str] = {}  # where this protocol words an error its own way

    def message(self, flavour: str, model: str) -> str:
        return self._messages.get(flavour, _MESSAGES[flavour]).format(model=model)

    def error_body(self, status: int, flavour: str, model: str, retry_after: float | None) -> dict:
        raise NotImplementedError

    retry_text = " Please try again in {}."  # how its messages ask for a wait

    def reset_headers(self, wait: float, now: float) -> dict[str, str]:
        """The protocol's rate-limit headers for a limit spent until `wait` seconds from `now`
        (protocols without any give Retry-After)."""
        return {"retry-after": f"{wait:g}"}

    def with_note(self, body: dict, note: str) -> dict:
        """An error body with `note` appended to its message."""
        return {**body, "error": {**body["error"], "message": body["error"]["message"] + note}}

    def error_frame(self) -> bytes:
        """The protocol's error inside a stream that has already started."""
        raise NotImplementedError

    def garbled_frame(self) -> bytes:
        """A frame cut off in the middle of its JSON."""
        raise NotImplementedError

    def is_text(self, frame: bytes) -> bool:
        return _TEXT.search(frame) is not None

    def is_end(self, frame: bytes) -> bool:
        return self._end.search(frame) is not None

    def split(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Re-cut a byte stream into the protocol's frames, separators kept."""
        buffer = b""
        for chunk in chunks:
            buffer += chunk
            while True:
                cuts = [(at, s) for s in self._separators if (at := buffer.find(s)) != -1]
                if not cuts:
                    break
                at, sep = min(cuts)
                yield buffer[: at + len(sep)]
                buffer = buffer[at + len(sep):]
        if buffer:
            yield buffer


class AnthropicDialect(Dialect):
    _end = re.compile(rb'"type"\s*:\s*"message_delta"')
    _types = {"rate_limit": "rate_limit_error", "overloaded": "overloaded_error", "unavailable": "api_error",
              "server": "api_error", "auth": "authentication_error", "forbidden": "permission_error",
              "not_found": "not_found_error", "context_length": "invalid_request_error",
              "content_filter": "invalid_request_error", "bad_request": "invalid_request_error",
              "prefill": "invalid_request_error"}
    _messages = {"context_length": "prompt is too long: 250000 tokens > 200000 maximum",
                 "content_filter": "Output blocked by content filtering policy"}

    def error_body(self, status, flavour, model, retry_after):
        return {"type": "error", "error": {"type": self._types[flavour], "message": self.message(flavour, model)}}

    def reset_headers(self, wait, now):
        # RFC 3339, to the second, as Anthropic sends them; the token limit is not the spent one.
        stamp = lambda t: datetime.fromtimestamp(math.ceil(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": stamp(now + wait),
                "anthropic-ratelimit-tokens-limit": "40000", "anthropic-ratelimit-tokens-remaining": "39000",
                "anthropic-ratelimit-tokens-reset": stamp(now + 1)}

    def error_frame(self):
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    def garbled_frame(self):
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'


class OpenAIDialect(Dialect):
    _end = re.compile(rb'"finish_reason"\s*:\s*"')
    _codes = {"rate_limit": ("requests", "rate_limit_exceeded"), "overloaded": ("server_error", "overloaded"),
              "unavailable": ("server_error", "service_unavailable"), "server": ("server_error", None),
              "auth": ("invalid_request_error", "invalid_api_key"), "forbidden": ("invalid_request_error", None),
              "not_found": ("invalid_request_error", "model_not_found"),
              "context_length": ("invalid_request_error", "context_length_exceeded"),
              "content_filter": ("invalid_request_error", "content_filter"),
              "bad_request": ("invalid_request_error", None), "prefill": ("invalid_request_error", None)}

    def error_body(self, status, flavour, model, retry_after):
        type_, code = self._codes[flavour]
        return {"error": {"message": self.message(flavour, model), "type": type_, "param": None, "code": code}}

    def reset_headers(self, wait, now):
        # The requests limit is spent; the tokens limit is not (its reset is not the wait).
        return {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration(wait),
                "x-ratelimit-limit-tokens": "40000", "x-ratelimit-remaining-tokens": "39000",
                "x-ratelimit-reset-tokens": "20ms"}

    def error_frame(self):
        return sse({"error": {"message": "server overloaded", "type": "server_error", "code": "overloaded"}})

    def garbled_frame(self):
        return b'data: {"id":"chatcmpl-sim","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x\n\n'


class GeminiDialect(Dialect):
    _end = re.compile(rb'"(finishReason|blockReason)"\s*:')
    _status = {"rate_limit": "RESOURCE_EXHAUSTED", "overloaded": "UNAVAILABLE", "unavailable": "UNAVAILABLE",
               "server": "INTERNAL", "auth": "UNAUTHENTICATED", "forbidden": "PERMISSION_DENIED",
               "not_found": "NOT_FOUND", "context_length": "INVALID_ARGUMENT", "content_filter": "INVALID_ARGUMENT",
               "bad_request": "INVALID_ARGUMENT", "prefill": "INVALID_ARGUMENT"}
    _messages = {"context_length": "The input token count (250000) exceeds the maximum number of tokens allowed (32768).",
                 "overloaded": "The model is overloaded. Please try again later."}

    retry_text = " Please retry in {}."

    def error_body(self, status, flavour, model, retry_after):
        error = {"code": status, "message": self.message(flavour, model), "status": self._status[flavour]}
        if retry_after is not None:
            # Gemini says when to come back in the body; the header may be missing (retry_after_header).
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{retry_after:g}s"}]
        return {"error": error}

    def error_frame(self):
        return sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}, sep="\r\n")

    def garbled_frame(self):
        return b'data: {"candidates": [{"content": {"parts": [{"te\r\n\r\n'


class OllamaDialect(Dialect):
    content_type = "application/x-ndjson"
    _separators = (b"\n",)
    _end = re.compile(rb'"done"\s*:\s*true')
    _messages = {"not_found": "model '{model}' not found, try pulling it first",
                 "context_length": "the input length exceeds the context length"}

    retry_text = ", please try again in {}"

    def error_body(self, status, flavour, model, retry_after):
        return {"error": self.message(flavour, model)}

    def with_note(self, body, note):
        return {"error": body["error"] + note}

    def error_frame(self):
        return ndjson({"error": "model runner crashed"})

    def garbled_frame(self):
        return b'{"model":"sim","message":{"role":"assistant","content":"x\n'


# -- playing a fault ---------------------------------------------------------------------------------
class Peer(Protocol):
    """The side that plays a fault, in its own transport: a simulated server or the chaos transport."""

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (math.inf: until the client gives up). May raise to abandon."""

    def hang_up(self) -> NoReturn:
        """Close the connection here, mid-reply."""

    def reset(self) -> NoReturn:
        """Drop the connection with a TCP reset."""


@dataclass(frozen=True)
class Reply:
    """A whole HTTP reply."""

    status: int
    headers: dict[str, str]
    body: bytes


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes one: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s"


def error_reply(fault: Fault, dialect: Dialect, model: str, request_headers: dict[str, str],
                now: float | None = None) -> Reply:
    """The HTTP error a "status" fault answers with, in the protocol's own shape. `now`: the Unix
    time a reset timestamp counts from (this moment by default)."""
    status = fault.status or 500
    flavour = fault.flavour or STATUS_FLAVOUR.get(status, "server")
    headers = {"content-type": "application/json", "x-request-id": "req_fault", "request-id": "req_fault"}
    wait, hint = fault.retry_after, fault.hint
    if wait is not None and fault.retry_after_header:
        if hint == "retry-after":
            headers["retry-after"] = f"{wait:g}"
        elif hint == "retry-after-ms":
            headers["retry-after-ms"] = f"{wait * 1000:g}"
        elif hint == "reset":
            headers.update(dialect.reset_headers(wait, time.time() if now is None else now))
    body = dialect.error_body(status, flavour, model, wait if hint != "text" else None)
    if wait is not None and hint == "text":
        body = dialect.with_note(body, dialect.retry_text.format(go_duration(wait)))
    if fault.echo_headers:
        quoted = {k.lower(): v for k, v in request_headers.items() if k.lower() in _CREDENTIAL_HEADERS}
        body = dialect.with_note(body, f" (request headers: {quoted!r})")
    return Reply(status, headers, json.dumps(body).encode())


def before_reply(fault: Fault, peer: Peer) -> None:
    """Play the part of `fault` that comes before any reply: a reset, silence or added latency."""
    if fault.kind == "reset":
        peer.reset()
    elif fault.kind == "silence":
        peer.pause(fault.seconds or math.inf)
        peer.hang_up()
    elif fault.kind == "latency":
        peer.pause(fault.seconds)


def disturb(frames: Iterable[bytes], fault: Fault, dialect: Dialect, peer: Peer) -> Iterator[bytes]:
    """The frames of an answer as `fault` lets them through: slowed, cut, stalled, garbled, with an
    error inside, or ended early. Any other fault passes them unchanged."""
    if fault.kind not in STREAM_FAULTS:
        yield from frames
        return
    texts, struck = 0, False
    for frame in frames:
        is_text = dialect.is_text(frame)
        if fault.kind == "slow_first":
            if is_text and texts == 0:
                peer.pause(fault.seconds)
        elif not struck and ((is_text and texts == fault.after) or dialect.is_end(frame)):
            struck = True
            if fault.kind == "cut":
                peer.hang_up()
            elif fault.kind == "stall":
                peer.pause(fault.seconds or math.inf)
            elif fault.kind == "malformed":
                yield dialect.garbled_frame()
            elif fault.kind == "error_event":
                yield dialect.error_frame()
                return
            else:  # no_end
                return
        texts += is_text
        yield frame


__all__ = ["FAULT_KINDS", "FLAVOUR_STATUS", "MID_STREAM", "STATUS_FLAVOUR", "STREAM_FAULTS", "TRANSPORT_FAULTS",
           "AnthropicDialect", "Dialect", "Fault", "GeminiDialect", "OllamaDialect", "OpenAIDialect",
           "Peer", "Reply", "before_reply", "disturb", "error_reply", "ndjson", "sse"]
