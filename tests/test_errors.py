"""The error taxonomy: statuses to kinds, retry-after parsing, and what each kind means for routing."""

from __future__ import annotations

import email.utils

import pytest

from core.errors import (
    ErrorKind,
    ProviderError,
    kind_for_status,
    retry_after_from_google_details,
    retry_after_from_headers,
)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (429, "", ErrorKind.RATE_LIMITED),
        (529, "", ErrorKind.OVERLOADED),
        (503, "", ErrorKind.OVERLOADED),
        (500, "", ErrorKind.SERVER),
        (502, "", ErrorKind.SERVER),
        (504, "", ErrorKind.TIMEOUT),
        (408, "", ErrorKind.TIMEOUT),
        (401, "", ErrorKind.AUTH),
        (403, "", ErrorKind.AUTH),
        (404, "", ErrorKind.NOT_FOUND),
        (413, "", ErrorKind.CONTEXT_LENGTH),
        (400, "prompt is too long: 250000 tokens > 200000 maximum", ErrorKind.CONTEXT_LENGTH),
        (400, "This model's maximum context length is 8192 tokens", ErrorKind.CONTEXT_LENGTH),
        (400, "The input token count (250000) exceeds the maximum number of tokens allowed", ErrorKind.CONTEXT_LENGTH),
        (400, "Output blocked by content filtering policy", ErrorKind.CONTENT_FILTERED),
        (400, "messages: text content blocks must be non-empty", ErrorKind.BAD_REQUEST),
        # The status is looked at before the text: a 429 that mentions "too long" is still a rate limit.
        (429, "request too long, slow down", ErrorKind.RATE_LIMITED),
    ],
)
def test_kind_for_status(status, message, kind):
    assert kind_for_status(status, message) is kind


def test_health_and_request_errors_are_told_apart():
    sick = {k for k in ErrorKind if k.health}
    assert sick == {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT,
                    ErrorKind.CONNECTION, ErrorKind.STREAM_BROKEN}
    assert {k for k in ErrorKind if not k.fails_over} == {ErrorKind.CONTENT_FILTERED}
    # A silent provider is not retried within a request; a context-length error never resends.
    assert not ErrorKind.TIMEOUT.retry and not ErrorKind.CONTEXT_LENGTH.retry
    assert ErrorKind.RATE_LIMITED.retry and ErrorKind.SERVER.retry and ErrorKind.CONNECTION.retry


def test_retry_after_forms():
    assert retry_after_from_headers({"retry-after": "2"}) == 2
    assert retry_after_from_headers({"retry-after": "1.5"}) == 1.5
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = 1_790_000_000.0
    future = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_from_headers({"retry-after": future}, now=now) == 30
    assert retry_after_from_headers({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers({}) is None and retry_after_from_headers(None) is None
    assert retry_after_from_headers({"retry-after": "-5"}) == 0


def test_gemini_retry_info():
    body = {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]}}
    assert retry_after_from_google_details(body) == 13
    assert retry_after_from_google_details({"error": {"details": []}}) is None
    assert retry_after_from_google_details("not json") is None


def test_provider_error_reads_well_and_keeps_its_facts():
    err = ProviderError(ErrorKind.RATE_LIMITED, "slow down", provider="claude", status=429, retry_after=2.0)
    assert str(err) == "claude: rate_limited (HTTP 429): slow down"
    assert (err.kind, err.status, err.retry_after) == (ErrorKind.RATE_LIMITED, 429, 2.0)
