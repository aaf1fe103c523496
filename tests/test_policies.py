"""The rules the router asks (core/policies.py), each checked on its own."""

from __future__ import annotations

import random

import pytest

from core.config import Hedging, Retries
from core.errors import ErrorKind, ProviderError
from core.policies import FailoverPolicy, HedgePolicy, RetryPolicy
from tests.clock import NoJitter


class MaxJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def error(kind: ErrorKind, retry_after: float | None = None) -> ProviderError:
    return ProviderError(kind, "x", provider="p", retry_after=retry_after)


RETRY = RetryPolicy(Retries(max_attempts=3, backoff_base=0.2, backoff_max=0.5, max_retry_wait=1.0))


def test_a_transient_error_is_retried_with_backoff_that_doubles_up_to_its_cap():
    delays = [RETRY.delay(error(ErrorKind.SERVER), tries, MaxJitter()) for tries in (1, 2, 3)]
    assert delays == [0.4, 0.5, None]  # 0.2 * 2^tries, capped; no fourth try
    assert RETRY.delay(error(ErrorKind.OVERLOADED), 1, NoJitter()) == 0.0  # full jitter: anywhere from 0


@pytest.mark.parametrize("kind", [k for k in ErrorKind if not k.retry])
def test_errors_that_would_fail_again_are_never_retried(kind):
    assert RETRY.delay(error(kind), 0, MaxJitter()) is None


def test_a_short_retry_after_is_honoured_and_a_long_one_holds_the_provider_off():
    assert RETRY.delay(error(ErrorKind.RATE_LIMITED, retry_after=0.7), 1, MaxJitter()) == 0.7
    assert RETRY.hold_off(error(ErrorKind.RATE_LIMITED, retry_after=0.7)) is None
    long = error(ErrorKind.RATE_LIMITED, retry_after=30.0)
    assert RETRY.delay(long, 0, MaxJitter()) is None and RETRY.hold_off(long) == 30.0
    assert RETRY.hold_off(error(ErrorKind.SERVER)) is None


def test_the_hedge_delay_is_the_observed_quantile_kept_between_floor_and_cap():
    hedge = HedgePolicy(Hedging(floor=0.3, cap=2.0, default_delay=1.0, quantile=0.9, min_samples=5))
    asked = []

    def observed(value):
        def ttft_quantile(name, q, n):
            asked.append((name, q, n))
            return value
        return ttft_quantile

    assert hedge.delay("claude", observed(None)) == 1.0  # too few samples yet
    assert asked == [("claude", 0.9, 5)]
    assert hedge.delay("claude", observed(700.0)) == 0.7
    assert hedge.delay("claude", observed(50.0)) == 0.3
    assert hedge.delay("claude", observed(9000.0)) == 2.0
    assert HedgePolicy(Hedging(enabled=False)).enabled is False


def test_only_a_decline_ends_the_request_and_only_a_sick_provider_counts_against_it():
    failover = FailoverPolicy()
    assert {k for k in ErrorKind if not failover.fails_over(error(k))} == {ErrorKind.CONTENT_FILTERED}
    sick = {k for k in ErrorKind if failover.sick(error(k))}
    assert sick == {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT,
                    ErrorKind.CONNECTION, ErrorKind.STREAM_BROKEN}
