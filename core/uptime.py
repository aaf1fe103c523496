"""Uptime bars, as on a public status page: a period cut into equal slices, each coloured by how a
provider did in it, read from the metrics history (so they survive a restart).

A slice is *down* when the provider's breaker was open for half of it or more, or every call and
probe in it failed; *degraded* when some failed or its breaker was open at all; *ok* when it had
results and none failed; *none* (grey) when there was nothing to go on. Uptime is the share of the
slices with something to go on that were not down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .metrics import AttemptEvent, Event, ProbeEvent, TransitionEvent

OPEN = "open"


@dataclass(frozen=True)
class Slice:
    start: float  # wall clock
    end: float
    status: str  # "ok" | "degraded" | "down" | "none"
    ok: int  # calls and probes that succeeded
    failed: int  # calls and probes that failed
    open_s: float  # seconds its breaker was open


@dataclass(frozen=True)
class Uptime:
    provider: str
    slices: tuple[Slice, ...]

    @property
    def share(self) -> float | None:
        """The share of slices with results that were not down; None with none."""
        seen = [s for s in self.slices if s.status != "none"]
        return sum(s.status != "down" for s in seen) / len(seen) if seen else None


def uptime(events: Iterable[Event], providers: Sequence[str], *, since: float, until: float,
           slices: int) -> dict[str, Uptime]:
    """Each provider's slices of [since, until). `events` may start earlier: transitions before
    `since` say whether a breaker was already open when the period began."""
    size = (until - since) / slices
    ok = {p: [0] * slices for p in providers}
    failed = {p: [0] * slices for p in providers}
    opened = {p: [0.0] * slices for p in providers}
    open_at: dict[str, float | None] = {p: None for p in providers}

    def add_open(p: str, start: float, end: float) -> None:
        start, end = max(start, since), min(end, until)
        i = int((start - since) // size) if end > start else slices
        while i < slices and start < end:
            edge = min(end, since + (i + 1) * size)
            opened[p][i] += edge - start
            start, i = edge, i + 1

    for e in sorted(events, key=lambda e: e.at):
        if not isinstance(e, (AttemptEvent, ProbeEvent, TransitionEvent)) or e.provider not in ok:
            continue
        if isinstance(e, TransitionEvent):
            if e.new == OPEN and open_at[e.provider] is None:
                open_at[e.provider] = e.at
            elif e.new != OPEN and e.old == OPEN and open_at[e.provider] is not None:
                add_open(e.provider, open_at[e.provider], e.at)
                open_at[e.provider] = None
            continue
        if not since <= e.at < until:
            continue
        i = int((e.at - since) // size)
        if isinstance(e, ProbeEvent):
            (ok if e.ok else failed)[e.provider][i] += 1
        elif isinstance(e, AttemptEvent) and e.outcome in ("ok", "error"):
            (ok if e.outcome == "ok" else failed)[e.provider][i] += 1
    for p, at in open_at.items():
        if at is not None:
            add_open(p, at, until)  # still open
    out = {}
    for p in providers:
        row = []
        for i in range(slices):
            good, bad, shut = ok[p][i], failed[p][i], opened[p][i]
            if shut >= size / 2 or (bad and not good):
                status = "down"
            elif bad or shut > 0:
                status = "degraded"
            else:
                status = "ok" if good else "none"
            row.append(Slice(since + i * size, since + (i + 1) * size, status, good, bad, round(shut, 1)))
        out[p] = Uptime(p, tuple(row))
    return out
