"""The rules the router asks, each in one place: "retry this? after how long?", "hedge when?",
"is this a failover, or the end of the request?".

The router schedules; these decide. (stamina takes `on=`, pybreaker `exclude=`, pydantic-ai's
FallbackModel `fallback_on`: the same split.) The per-error-kind facts they read are declared
once, in `ErrorKind`'s table (core/errors.py); the numbers come from the typed policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import Hedging, Retries, Stalls
from .errors import ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    """Whether the same provider is asked again within a request, and after how long."""

    settings: Retries

    def hold_off(self, error: ProviderError) -> float | None:
        """A Retry-After longer than a request waits: seconds to keep the provider out, and the
        request fails over at once. None for a short or absent one."""
        wait = error.retry_after
        return wait if wait is not None and wait > self.settings.max_retry_wait else None

    def delay(self, error: ProviderError, tries: int, rng: random.Random) -> float | None:
        """Seconds before trying again after `tries` tries, or None: don't. A short Retry-After
        is honoured; otherwise full-jitter backoff over base * 2^tries, at most backoff_max."""
        s = self.settings
        if not error.kind.retry or self.hold_off(error) is not None or tries >= s.max_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after
        return rng.uniform(0, min(s.backoff_max, s.backoff_base * 2 ** tries))


@dataclass(frozen=True)
class HedgePolicy:
    """When a late first token starts the next provider in parallel."""

    settings: Hedging

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def delay(self, provider: str, ttft_quantile: Callable[[str, float, int], float | None]) -> float:
        """Seconds to wait for `provider`'s first token before racing the next one: its observed
        first-token quantile (ms, from `ttft_quantile(provider, q, min_samples)`), or the default
        until enough samples exist, kept between floor and cap."""
        s = self.settings
        observed = ttft_quantile(provider, s.quantile, s.min_samples)
        delay = s.default_delay if observed is None else observed / 1000
        return min(s.cap, max(s.floor, delay))


@dataclass(frozen=True)
class StallPolicy:
    """When an answer that has started is stalling: silent much longer than its provider's normal
    gap between chunks, learned from live traffic as the hedge delay learns first tokens."""

    settings: Stalls

    def after(self, provider: str, idle_timeout: float,
              gap_quantile: Callable[[str, float, int], float | None]) -> float | None:
        """Seconds of silence after which `provider`'s answer is stalling: `multiple` times its
        observed gap quantile (seconds, from `gap_quantile(provider, q, min_samples)`), or the cold
        start value until enough gaps were seen, at least `floor`. None: nothing is hedged, because
        stall hedging is off or the threshold reaches `idle_timeout` (the hard limit) anyway."""
        s = self.settings
        if not s.hedge:
            return None
        observed = gap_quantile(provider, s.quantile, s.min_samples)
        after = max(s.floor, s.cold_start if observed is None else s.multiple * observed)
        return after if after < idle_timeout else None

    PACE = 2  # gaps an answer must have shown before its silence can be told from its pace

    def convincing(self, silent: float, gaps: Sequence[float]) -> bool:
        """Whether a stall is strong evidence against its provider: the answer had gone at a pace
        (`gaps`, seconds between its chunks so far) and this silence is far outside it. A provider
        silent from its first gap on may simply be that slow: the answer still moves to a backup
        that goes on first, but the provider is not held against."""
        return len(gaps) >= self.PACE and silent >= self.settings.multiple * max(gaps)


@dataclass(frozen=True)
class FailoverPolicy:
    """What an error means beyond the attempt it ended."""

    def fails_over(self, error: ProviderError) -> bool:
        """True: ask the next provider. False: the request ends here with this answer (a
        content-policy decline: routing around it would be dishonest)."""
        return error.kind.fails_over

    def sick(self, error: ProviderError) -> bool:
        """Counts against the provider's health (its breaker). A bad request, a refusal or a
        missing key says nothing about the provider."""
        return error.kind.health
