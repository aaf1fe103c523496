"""The error taxonomy: statuses to kinds, retry-after parsing, and what each kind means for routing."""

from __future__ import annotations

import email.utils

import pytest

from core.errors import (
    ErrorKind,
    ProviderError,
    kind_for_status,
    parse_duration,
    retry_after_from_google_details,
    retry_after_from_headers,
    retry_hint,
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


# -- retry hints, in every form providers give them (their real error bodies and headers) --------
NOW = 1_796_310_000.0  # 2026-12-03T15:00:00Z

OPENAI_429_TEXT = ("Rate limit reached for gpt-4o-mini in organization org-sim on requests per min (RPM): "
                   "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
                   "https://platform.openai.com/account/rate-limits to learn more.")
OPENAI_TPM_TEXT = ("Rate limit reached for gpt-4o in organization org-sim on tokens per min (TPM): Limit 30000, "
                   "Used 29876, Requested 512. Please try again in 1.5s. Visit "
                   "https://platform.openai.com/account/rate-limits to learn more.")
GEMINI_429 = {"error": {"code": 429, "message": (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: "
    "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10\nPlease retry in "
    "37.562910755s."), "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "x"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}


@pytest.mark.parametrize("headers, message, expected", [
    ({"retry-after": "7"}, "", 7.0),
    ({"retry-after-ms": "250", "retry-after": "7"}, "", 0.25),  # the finer one wins
    ({"Retry-After": "Thu, 03 Dec 2026 15:00:30 GMT"}, "", 30.0),
    # OpenAI: the requests limit is spent; the tokens one resets sooner but is not the one hit.
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
      "x-ratelimit-remaining-tokens": "39000", "x-ratelimit-reset-tokens": "20ms"}, OPENAI_429_TEXT, 360.0),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms",
      "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "1s"}, "", 0.02),
    ({}, OPENAI_429_TEXT, 20.0),  # only in the text
    ({}, OPENAI_TPM_TEXT, 1.5),
    ({}, "Rate limit reached ... Please try again in 20ms. Visit https://platform.openai.com", 0.02),
    # Anthropic: RFC 3339 reset times; the spent limit's counts.
    ({"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "2026-12-03T15:00:42Z",
      "anthropic-ratelimit-tokens-remaining": "39000", "anthropic-ratelimit-tokens-reset": "2026-12-03T15:00:01Z"},
     "This request would exceed the rate limit for your organization of 50 requests per minute.", 42.0),
    ({"anthropic-ratelimit-output-tokens-remaining": "0",
      "anthropic-ratelimit-output-tokens-reset": "2026-12-03T15:01:00+00:00"}, "", 60.0),
    ({}, GEMINI_429["error"]["message"], 37.562910755),  # Gemini's text (its RetryInfo: below)
    # Ollama and other OpenAI-compatible servers: only their text.
    ({}, "you have reached your hourly usage limit, please try again in 24m30s", 1470.0),
    ({}, "Rate limit exceeded. Try again after 30 seconds.", 30.0),
    ({}, "rate limited: retry in 2 minutes", 120.0),
    ({}, "Too many requests, please retry after 500 milliseconds", 0.5),
    ({}, "Too many requests. Please try again later.", None),
    ({}, "", None),
])
def test_a_retry_hint_is_read_in_whatever_form_it_comes(headers, message, expected):
    found = retry_hint(headers, message, status=429, now=NOW)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_reset_headers_count_only_on_a_429_and_bad_values_are_no_hint():
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    assert retry_hint(spent, "", status=500, now=NOW) is None  # sent on every reply: not a hint on a 500
    assert retry_hint({"x-ratelimit-reset-requests": "soon"}, "", status=429, now=NOW) is None
    assert retry_hint({"anthropic-ratelimit-requests-reset": "yesterday"}, "", status=429, now=NOW) is None
    assert retry_hint({"anthropic-ratelimit-requests-remaining": "0",
                       "anthropic-ratelimit-requests-reset": "2026-12-03T14:00:00Z"}, "", status=429, now=NOW) == 0.0
    assert retry_hint({"retry-after": "-5"}, "", now=NOW) == 0.0
    assert parse_duration("6m0s") == 360 and parse_duration("1h2m3.5s") == 3723.5 and parse_duration("") is None


def test_gemini_retryinfo_in_its_real_error_body():
    assert retry_after_from_google_details(GEMINI_429) == 37


# float() takes "1_000", "1e308", "nan", "inf" and any script's digits; no provider writes those,
# so each is no hint at all rather than a misread one ("1e308s" read as 1 s, "١٢" as 12 s).
@pytest.mark.parametrize("headers, message", [
    ({"retry-after": "1_000"}, ""),
    ({"retry-after": "١٢"}, ""),  # Arabic-Indic digits
    ({"retry-after": "1e308"}, ""),
    ({"retry-after": "nan"}, ""),
    ({"retry-after": "inf"}, ""),
    ({"retry-after": "-inf"}, ""),
    ({"retry-after-ms": "1e400"}, ""),
    ({"retry-after-ms": "nan"}, ""),
    ({"Retry-After": "Thu, ٠٣ Dec 2026 15:00:30 GMT"}, ""),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "inf"}, ""),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "nan"}, ""),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e3"}, ""),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "١٢s"}, ""),
    ({}, "Please try again in 1e308s."),
    ({}, "Please try again in 1.5.5s."),
    ({}, "Please try again in ١٢s."),
    ({}, "Please try again in " + "9" * 400 + "s."),  # a number too large for a float
])
def test_a_hint_in_no_form_a_provider_sends_is_no_hint(headers, message):
    assert retry_hint(headers, message, status=429, now=NOW) is None


@pytest.mark.parametrize("delay", ["1.2.3s", ".s", "...s", "1" * 400 + "s"])
def test_a_gemini_retry_delay_in_no_form_it_sends_is_no_hint(delay):
    body = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}
    assert retry_after_from_google_details(body) is None


@pytest.mark.parametrize("message", [
    {"message": "Please try again in 2s", "seen": {"authorization": "Bearer x"}},
    ["busy", "Please try again in 2s"],
    [{"nested": [{"text": "Please try again in 2s"}]}],
])
def test_a_message_of_any_json_shape_is_read_as_text(message):
    assert retry_hint({}, message, status=429, now=NOW) == 2.0
    assert kind_for_status(429, message) is ErrorKind.RATE_LIMITED
    assert kind_for_status(400, {"message": message, "why": "prompt is too long"}) is ErrorKind.CONTEXT_LENGTH


@pytest.mark.parametrize("message", [5, 1.5, True, {"a": None}])
def test_a_message_with_no_words_is_no_hint_and_no_error(message):
    assert retry_hint({}, message, status=429, now=NOW) is None
    assert kind_for_status(400, message) is ErrorKind.BAD_REQUEST
