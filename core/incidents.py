"""The incident log: each period a provider's breaker was open, from its opening to its closing,
read from the breaker transitions in the metrics history.

A trial call that fails (half-open → open) is part of the same incident; it ends when the breaker
closes (its trial call succeeded, a call in flight succeeded, or an operator reset it). During it,
each request that reached the provider and was passed over (skipped by the open breaker, or failed)
failed over, by the one definition in core/failover.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .metrics import AttemptEvent, Event, TransitionEvent

OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class Incident:
    provider: str
    start: float  # wall clock: when its breaker opened
    end: float | None  # when it closed; None while it lasts
    cause: str  # why the breaker opened, e.g. "3 failures in a row, last: overloaded"
    resolved_by: str  # why it closed ("trial call succeeded", "reset by operator"), "" while it lasts
    failed_over: int  # requests passed over this provider during it
    trials: int  # trial calls made (half-open periods) before it ended

    def duration(self, now: float) -> float:
        return (self.end if self.end is not None else now) - self.start


def incidents(events: Iterable[Event]) -> list[Incident]:
    """Every incident the events show, newest first. One whose opening is before the events
    begin is left out (its start and cause are not known)."""
    ordered = sorted(events, key=lambda e: e.at)
    found: list[dict] = []
    current: dict[str, dict] = {}
    for e in ordered:
        if not isinstance(e, TransitionEvent):
            continue
        now = current.get(e.provider)
        if e.new == OPEN and now is None:
            now = current[e.provider] = dict(provider=e.provider, start=e.at, end=None, cause=e.reason,
                                              resolved_by="", trials=0)
            found.append(now)
        elif now is not None and e.new == "half-open":
            now["trials"] += 1
        elif now is not None and e.new == CLOSED:
            now["end"], now["resolved_by"] = e.at, e.reason
            del current[e.provider]
    passed = [e for e in ordered if isinstance(e, AttemptEvent) and e.outcome in ("skipped", "error")]
    out = []
    for i in found:
        end = i["end"] if i["end"] is not None else float("inf")
        n = sum(1 for a in passed if a.provider == i["provider"] and i["start"] <= a.at <= end)
        out.append(Incident(failed_over=n, **i))
    return sorted(out, key=lambda i: i.start, reverse=True)
