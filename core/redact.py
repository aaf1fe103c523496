"""Masking API keys in text that leaves an adapter.

A provider, or a proxy in front of one, may echo the request's headers in its error body
(`'authorization': 'Bearer sk-…'`). That text becomes an attempt's detail, a breaker's reason, a
log line, a metrics event and a download, so every message is masked once, where it leaves the
adapter (`Provider._error`). Masked: every configured key value, the value of any header or
parameter that carries a credential, a `Bearer` token, a password in a URL, and the known key
formats. The rest of the
text stays as the provider wrote it, so the error is still readable.

The package's log ("understudy") is masked too, by a filter on it (`LogRedactor`), with every
key an adapter was built with: a traceback prints each chained exception's own text, and an
SDK's error under a `ProviderError` is the raw body.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "[redacted]"
# Shown in front of the masked part, so people can still tell which key it was.
_PREFIXES = ("sk-ant-", "sk-proj-", "sk-", "AIza")
_MIN_SECRET = 6  # shorter configured "keys" are not worth mangling ordinary words for

# Where a credential is named: HTTP headers as raw text, JSON or a Python dict repr, and query strings.
_NAMED = (r"(?:\b(?:proxy-)?authorization|\bx-goog-api-key|\bx-api-key|\bapi[-_]?key|\b(?:access|auth|bearer)[-_]?token"
          r"|\b(?:set-)?cookie|\bocp-apim-subscription-key|\bx-[a-z-]*(?:key|token|secret)"
          r"|\b(?:client[-_]?)?secret|(?<=[?&])key)")
_PATTERN = re.compile(
    rf"(?P<named>{_NAMED}[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)(?P<value>[^\s\"',;}}&)\]]+)"
    r"|(?P<bearer>\bbearer\s+)(?P<token>[A-Za-z0-9._~+/=-]{8,})"
    r"|(?P<userinfo>://[^/\s:@]+:)(?P<password>[^/\s]+)(?=@[^@/\s]*(?:[/\s]|$))"  # https://user:p@ss@proxy/
    # Anthropic (sk-ant-…), OpenAI (sk-…, sk-proj-…), Google (AIza…, 39 characters), JWTs.
    r"|(?P<shape>(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{16,}|AIza[A-Za-z0-9_-]{30,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*))",
    re.IGNORECASE,
)


def mask(token: str) -> str:
    """`sk-…7f3c`: the key's kind and its last four characters, or `[redacted]` if it is short."""
    prefix = next((p for p in _PREFIXES if token.startswith(p)), "")
    return f"{prefix}…{token[-4:]}" if len(token) >= 16 else f"{prefix}{MASK}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every key in `secrets`, and anything shaped like a credential, masked."""
    for secret in sorted({v for s in secrets if len(s) >= _MIN_SECRET for v in _spellings(s)}, key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    return _PATTERN.sub(_replace, text)


def _spellings(secret: str) -> set[str]:
    """A key as an error body may quote it: as is, URL-encoded, or JSON-escaped (`\\/`)."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret), secret.replace("/", "\\/")}


def looks_like_key(text: str) -> bool:
    """Whether `text` is shaped like an API key (for refusing one where a variable name belongs)."""
    if _PATTERN.sub(_replace, text) != text:
        return True
    # An opaque token: long, one unbroken run of mixed-case letters and digits.
    return (len(text) >= 32 and "_" not in text and any(c.isdigit() for c in text)
            and any(c.islower() for c in text) and any(c.isupper() for c in text))


def _replace(m: re.Match) -> str:
    if m["named"] is not None:
        value = m["value"]
        # Already masked (redact() runs again on text it produced): leave it.
        if "…" in value or MASK[:-1] in value:
            return m[0]
        return m["named"] + mask(value)
    if m["bearer"] is not None:
        return m["bearer"] + mask(m["token"])
    if m["userinfo"] is not None:
        return m[0] if m["password"] == MASK else m["userinfo"] + MASK
    return mask(m["shape"])


# -- the package's log ------------------------------------------------------------------------------
_known: frozenset[str] = frozenset()  # replaced whole, so the filter reads it without a lock
_known_lock = threading.Lock()


def remember(secret: str) -> None:
    """Mask `secret` in every log line of the package from now on (adapters call this with their key)."""
    global _known
    with _known_lock:
        _known = _known | {secret}


class LogRedactor(logging.Filter):
    """Masks keys and credentials in a record's message, traceback and stack, before any handler
    formats it. The traceback is formatted here, as a handler's `Formatter` would, and kept in
    `exc_text`, which formatters print in its place; `exc_info` stays (it says a traceback came)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _known
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 — a bad format string: the handler reports it as usual
            message = None
        if message is not None and (clean := redact(message, secrets)) != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True
