"""The closed set of ways a provider call can fail, and what the router should do about each.

Every adapter maps its SDK's exceptions into `ProviderError` exactly once, at its edge
(see each adapter's `_map_errors`). Nothing above the adapters looks at SDK exception types.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class _Policy:
    retry: bool  # worth trying the same provider again within this request
    health: bool  # says the provider is sick: counts towards opening its breaker
    fails_over: bool  # worth asking the next provider; False ends the request (a decline is an answer)


class ErrorKind(enum.Enum):
    """Why a call failed. The value is the stable name used in JSON, metrics and the UI."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER = "server"
    # A silent or stalled provider is abandoned, not retried: the next attempt would most
    # likely wait out the same timeout again (the 91 s hang in openai-python #3828).
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    STREAM_BROKEN = "stream_broken"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTERED = "content_filtered"
    BAD_REQUEST = "bad_request"

    @property
    def retry(self) -> bool:
        return _POLICIES[self].retry

    @property
    def health(self) -> bool:
        return _POLICIES[self].health

    @property
    def fails_over(self) -> bool:
        return _POLICIES[self].fails_over


_POLICIES = {
    ErrorKind.RATE_LIMITED: _Policy(retry=True, health=True, fails_over=True),
    ErrorKind.OVERLOADED: _Policy(retry=True, health=True, fails_over=True),
    ErrorKind.SERVER: _Policy(retry=True, health=True, fails_over=True),
    ErrorKind.TIMEOUT: _Policy(retry=False, health=True, fails_over=True),
    ErrorKind.CONNECTION: _Policy(retry=True, health=True, fails_over=True),
    ErrorKind.STREAM_BROKEN: _Policy(retry=False, health=True, fails_over=True),
    # The request's or the operator's fault: the provider is fine, another one may not be
    # (a missing key or an unknown model is specific to this entry).
    ErrorKind.AUTH: _Policy(retry=False, health=False, fails_over=True),
    ErrorKind.NOT_FOUND: _Policy(retry=False, health=False, fails_over=True),
    # Never resend the same conversation to the same model; a bigger window may take it.
    ErrorKind.CONTEXT_LENGTH: _Policy(retry=False, health=False, fails_over=True),
    # A policy decline is an answer, not an outage: routing around it would be dishonest.
    ErrorKind.CONTENT_FILTERED: _Policy(retry=False, health=False, fails_over=False),
    ErrorKind.BAD_REQUEST: _Policy(retry=False, health=False, fails_over=True),
}


class ProviderError(Exception):
    """A provider call failed. Raised only by adapters, always `from` the original error."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        stalled: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.stalled = stalled  # it went silent mid-answer: strong evidence (the router keeps it out)

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{where}{self.kind.value}{status}: {self.message}"


def error_text(value: object) -> str:
    """A provider's error message as text, whatever JSON it came as: a body may give `message` (or
    Ollama's `error`) as an object, a list, a number or null. Text stays as it is; anything else is
    written as JSON, so its words (and any hint in them) can still be read, and masked."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return f"<{type(value).__name__}>"


def kind_for_status(status: int, message: object = "") -> ErrorKind:
    """The error kind an HTTP status implies, refined by the provider's message for 400s."""
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status == 408 or status == 504:
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 413 or looks_like_context_length(message):
        return ErrorKind.CONTEXT_LENGTH
    if looks_like_content_filter(message):
        return ErrorKind.CONTENT_FILTERED
    return ErrorKind.BAD_REQUEST


# Providers word these differently and none gives a dedicated status; these are the phrases
# their documented errors use ("prompt is too long", "context_length_exceeded",
# "exceeds the maximum number of tokens", "input length exceeds the context length").
_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|too long|maximum (number of )?tokens|"
    r"exceeds the (maximum|context)|token limit|maximum context",
    re.IGNORECASE,
)
_FILTER_RE = re.compile(r"content[_ ]?(filter|policy|management)|safety|blocked", re.IGNORECASE)


def looks_like_context_length(message: object) -> bool:
    return bool(_CONTEXT_RE.search(error_text(message)))


def looks_like_content_filter(message: object) -> bool:
    return bool(_FILTER_RE.search(error_text(message)))


def retry_after_from_headers(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date, counted from
    `now`, a Unix time: this moment by default)."""
    headers = _lowered(headers)
    raw_ms = headers.get("retry-after-ms", "").strip()
    if _SECONDS.fullmatch(raw_ms):
        return _wait(float(raw_ms) / 1000)
    raw = headers.get("retry-after", "").strip()
    if _SECONDS.fullmatch(raw):
        return _wait(float(raw))
    if not raw or not raw.isascii():  # the date's digits too: int() would take any script's
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
        return _wait(when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def retry_hint(headers: Mapping[str, str] | None, message: object = "", *, status: int | None = None,
               now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait, in whichever form it gave it, or None:
    `retry-after-ms` / `Retry-After`; on a 429, the rate-limit reset headers (OpenAI's
    `x-ratelimit-reset-*` durations, Anthropic's `anthropic-ratelimit-*-reset` timestamps); else
    the message text ("Please try again in 1.5s", "retry after 20 seconds"). A hint from the text
    counts like a header: it decides between waiting and failing over, and how long the breaker
    keeps the provider out. `now`: a Unix time (this moment by default)."""
    found = retry_after_from_headers(headers, now=now)
    if found is None and status == 429:
        found = _reset_hint(headers, now)
    return found if found is not None else retry_after_from_text(message)


def parse_duration(raw: str) -> float | None:
    """A Go-style duration as OpenAI writes them ("20ms", "1.5s", "6m0s", "1h2m3s"), or a bare
    number of seconds; None when it is neither."""
    raw = raw.strip()
    if _NUMBER.fullmatch(raw):
        return _wait(float(raw))
    match = _DURATION.fullmatch(raw)
    if not match or not raw:
        return None
    h, m, sec, ms = (float(g) if g else 0.0 for g in match.groups())
    return _wait(h * 3600 + m * 60 + sec + ms / 1000)


def retry_after_from_text(message: object) -> float | None:
    """The wait a message asks for: "Please try again in 1.5s", "in 20ms", "in 6m0s", "Please
    retry in 37.56s", "try again after 30 seconds", "in 2 minutes"."""
    match = _TEXT_HINT.search(error_text(message))
    if not match:
        return None
    amount, word = match.group("amount"), (match.group("word") or "").lower()
    if word:
        if not _NUMBER.fullmatch(amount):  # "in 1h2m minutes": no sense to be made of it
            return None
        unit = next(factor for prefix, factor in _WORDS if word.startswith(prefix))
        return _wait(float(amount) * unit)
    return parse_duration(amount)


# Only ASCII digits, in the forms providers send: float() would also take "1_000", "1e308", "nan",
# "inf" and other scripts' digits ("١٢"), none of which any provider writes.
_N = r"[0-9]+(?:\.[0-9]+)?"
_NUMBER = re.compile(_N)
_SECONDS = re.compile(rf"-?{_N}")  # a Retry-After (a negative one is "now")
_DURATION = re.compile(rf"(?:({_N})h)?(?:({_N})m(?!s))?(?:({_N})s)?(?:({_N})ms)?")
_TEXT_HINT = re.compile(
    rf"\b(?:try again|retry)\s+(?:in|after)\s+(?P<amount>{_N}(?:(?:h|m(?!s)|s|ms)(?:{_N}(?:m(?!s)|s|ms))*)?)"
    r"(?:\s*(?P<word>milliseconds?|millis|msecs?|seconds?|secs?|minutes?|mins?|hours?|hrs?)\b)?"
    # The whole number or nothing: "1e308s" is not "1", nor "1.5.5s" "1.5" (a sentence's full stop may follow).
    r"(?!\.?\w)", re.IGNORECASE)
_WORDS = (("mil", 0.001), ("ms", 0.001), ("s", 1.0), ("mi", 60.0), ("h", 3600.0))
# Which limit a 429 hit: OpenAI names requests and tokens; Anthropic also input and output tokens.
_RESET_HEADERS = [(f"x-ratelimit-remaining-{n}", f"x-ratelimit-reset-{n}") for n in ("requests", "tokens")] + [
    (f"anthropic-ratelimit-{n}-remaining", f"anthropic-ratelimit-{n}-reset")
    for n in ("requests", "tokens", "input-tokens", "output-tokens")]


def _reset_hint(headers: Mapping[str, str] | None, now: float | None) -> float | None:
    """On a 429: when the exhausted limit resets (the longest, if several are spent); with none
    marked spent, the soonest reset (a retry then learns more)."""
    lower = _lowered(headers)
    spent, others = [], []
    for remaining, reset in _RESET_HEADERS:
        if reset not in lower:
            continue
        wait = parse_duration(lower[reset])
        if wait is None:  # Anthropic: an RFC 3339 timestamp
            wait = _seconds_until(lower[reset], now)
        if wait is not None:
            (spent if lower.get(remaining, "").strip() == "0" else others).append(wait)
    if spent:
        return max(spent)
    return min(others) if others else None


def _seconds_until(stamp: str, now: float | None) -> float | None:
    from datetime import datetime

    if not _RFC3339.fullmatch(stamp.strip()):
        return None
    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
        return _wait(when.timestamp() - (time.time() if now is None else now))
    except (ValueError, OverflowError, OSError):
        return None


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def _lowered(headers: object) -> dict[str, str]:
    """Any mapping of headers, in any case, as lower-case names to text."""
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _wait(seconds: float) -> float | None:
    """A wait as the router uses it: never negative; none at all when it is not a finite number."""
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_from_google_details(body: object) -> float | None:
    """Gemini puts the wait in `error.details[].retryDelay` ("2s", "1.5s") of a RetryInfo."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = item.get("retryDelay")
            delay = delay.strip() if isinstance(delay, str) else ""
            if delay.endswith("s") and _NUMBER.fullmatch(delay[:-1]):
                return _wait(float(delay[:-1]))
    return None
