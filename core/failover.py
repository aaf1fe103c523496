"""What a failover is, defined once: the tile, the charts, `/metrics`, the incident log and the CLI
all count it this way.

A request *failed over* when its answer had to come from further down the chain because a provider
before it could not answer: its breaker turned it away (skipped), or it failed (`Outcome.failed`).
A hedge that merely lost a race, a retry that succeeded on the same provider, or a cache hit that
never asked a provider, are not failovers. The router stores `passed_over` in each
`RequestEvent.failovers`; `RequestEvent.failed_over` says whether it is one. Counting only providers that were *called* and failed
(as before issue 12) missed the commonest case of all: the primary's breaker is open, so it is
skipped, and the fallback answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from .attempt import Attempt, Outcome


def passed_over(attempts: Iterable[Attempt]) -> int:
    """How many providers this request had to move past: each provider with a failed or skipped
    attempt and no answer of its own (ok or declined) in the same request."""
    failed, answered = set(), set()
    for a in attempts:
        if a.outcome.failed:
            failed.add(a.provider)
        elif a.outcome in (Outcome.OK, Outcome.DECLINED):
            answered.add(a.provider)
    return len(failed - answered)
