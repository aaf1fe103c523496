"""Every attempt, request, probe and breaker transition as an event in one bounded, thread-safe
store. The dashboard and the CLI read summaries of it; nothing reads router internals.

Memory is bounded by `max_events` (the oldest go first); running totals are kept separately so
counts since start survive eviction. A plain total is keyed by its name ("requests"), a labelled
one by a tuple: its family, then its label values (`("attempt", provider, outcome, error_kind)`),
so a provider name may hold any character and nothing is ever split back apart. Log lines carry
names, kinds and timings — never message content or keys.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields

from .breaker import Transition

log = logging.getLogger("understudy")


@dataclass(frozen=True)
class AttemptEvent:
    at: float  # wall-clock seconds
    provider: str
    model: str
    outcome: str  # ok | error | declined | cancelled | skipped
    error_kind: str | None
    latency_ms: float
    ttft_ms: float | None
    hedge: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class RequestEvent:
    at: float
    tier: str
    provider: str | None
    elapsed_ms: float
    ttft_ms: float | None
    complete: bool
    attempts: int
    failovers: int  # providers tried after the first one
    hedges: int
    hedge_won: bool
    restarted: bool  # a provider failed mid-answer and another took over


@dataclass(frozen=True)
class ProbeEvent:
    at: float
    provider: str
    ok: bool
    latency_ms: float
    error_kind: str | None = None


@dataclass(frozen=True)
class TransitionEvent:
    at: float
    provider: str
    old: str
    new: str
    reason: str
    cooldown_s: float


Event = AttemptEvent | RequestEvent | ProbeEvent | TransitionEvent

# "requests", "attempts", "hedges", "hedges_won", "failovers"; ("tier", tier);
# ("attempt", provider, outcome, error_kind or None); ("tokens", provider, "input" | "output");
# ("transition", provider, new state)
Total = str | tuple[str | None, ...]


def quantile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Metrics:
    def __init__(self, *, max_events: int = 20_000, wall: Callable[[], float]) -> None:
        self._events: deque[Event] = deque(maxlen=max_events)
        self._ttfts: dict[str, deque[float]] = {}  # recent first-token times per provider, for hedging
        self._totals: Counter[Total] = Counter()
        self._lock = threading.Lock()
        self.wall = wall

    # -- writing -------------------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if isinstance(event, RequestEvent):
                self._totals["requests"] += 1
                self._totals[("tier", event.tier)] += 1
                self._totals["hedges"] += event.hedges
                self._totals["hedges_won"] += int(event.hedge_won)
                self._totals["failovers"] += event.failovers
            elif isinstance(event, AttemptEvent):
                self._totals["attempts"] += 1
                self._totals[("attempt", event.provider, event.outcome, event.error_kind)] += 1
                self._totals[("tokens", event.provider, "input")] += event.input_tokens or 0
                self._totals[("tokens", event.provider, "output")] += event.output_tokens or 0
                if event.outcome == "ok" and event.ttft_ms is not None:
                    self._ttfts.setdefault(event.provider, deque(maxlen=200)).append(event.ttft_ms)
        _log(event)

    def transition(self, t: Transition) -> None:
        with self._lock:
            self._totals[("transition", t.provider, t.new)] += 1
        self.record(TransitionEvent(self.wall(), t.provider, t.old, t.new, t.reason, t.cooldown_s))

    # -- reading -------------------------------------------------------------------------------------
    def events(self, kind: type | None = None, since: float | None = None) -> list[Event]:
        with self._lock:
            items = list(self._events)
        return [e for e in items if (kind is None or isinstance(e, kind)) and (since is None or e.at >= since)]

    def totals(self) -> dict[Total, int]:
        """Counts since start: plain ones by name, labelled ones by (family, *label values)."""
        with self._lock:
            return dict(self._totals)

    def ttft_quantile(self, provider: str, q: float, min_samples: int) -> float | None:
        """Recent successful time-to-first-token quantile in ms, or None with too few samples."""
        with self._lock:
            recent = list(self._ttfts.get(provider, ()))
        return quantile(recent, q) if len(recent) >= min_samples else None

    def summary(self, window_s: float = 900.0) -> dict:
        """Per-provider and overall figures over the last `window_s` seconds."""
        since = self.wall() - window_s
        events = self.events(since=since)
        attempts = [e for e in events if isinstance(e, AttemptEvent)]
        requests = [e for e in events if isinstance(e, RequestEvent)]
        providers: dict[str, dict] = {}
        for name in sorted({a.provider for a in attempts}):
            mine = [a for a in attempts if a.provider == name and a.outcome != "skipped"]
            ok = [a for a in mine if a.outcome == "ok"]
            decided = [a for a in mine if a.outcome in ("ok", "error")]
            lat = [a.latency_ms for a in ok]
            ttft = [a.ttft_ms for a in ok if a.ttft_ms is not None]
            providers[name] = {
                "attempts": len(mine),
                "success_rate": (len(ok) / len(decided)) if decided else None,
                "errors": dict(Counter(a.error_kind for a in mine if a.error_kind)),
                "latency_ms": {f"p{int(q * 100)}": quantile(lat, q) for q in (0.5, 0.95, 0.99)},
                "ttft_ms": {f"p{int(q * 100)}": quantile(ttft, q) for q in (0.5, 0.95, 0.99)},
                "hedges": sum(1 for a in mine if a.hedge),
                "hedges_won": sum(1 for a in ok if a.hedge),
                "skipped": sum(1 for a in attempts if a.provider == name and a.outcome == "skipped"),
                "tokens": {"input": sum(a.input_tokens or 0 for a in ok), "output": sum(a.output_tokens or 0 for a in ok)},
                "transitions": [asdict(t) for t in events if isinstance(t, TransitionEvent) and t.provider == name],
            }
        tiers = Counter(r.tier for r in requests)
        return {
            "window_s": window_s,
            "requests": len(requests),
            "tiers": dict(tiers),
            "cache_hit_ratio": (tiers["cache"] / len(requests)) if requests else None,
            "failovers": sum(r.failovers for r in requests),
            "hedges": sum(r.hedges for r in requests),
            "hedges_won": sum(1 for r in requests if r.hedge_won),
            "restarts": sum(1 for r in requests if r.restarted),
            "providers": providers,
            "totals": self.totals(),
        }


def as_row(event: Event) -> dict:
    row = {"type": type(event).__name__.removesuffix("Event").lower()}
    row.update({f.name: getattr(event, f.name) for f in fields(event)})
    return row


def _log(event: Event) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    if isinstance(event, AttemptEvent):
        log.info("attempt provider=%s model=%s outcome=%s error_kind=%s latency_ms=%.1f ttft_ms=%s hedge=%s",
                 event.provider, event.model, event.outcome, event.error_kind, event.latency_ms, event.ttft_ms,
                 event.hedge)
    elif isinstance(event, TransitionEvent):
        log.info("breaker provider=%s %s->%s cooldown_s=%.1f reason=%r", event.provider, event.old, event.new,
                 event.cooldown_s, event.reason)
    elif isinstance(event, RequestEvent):
        log.info("request tier=%s provider=%s elapsed_ms=%.1f attempts=%d failovers=%d hedges=%d complete=%s",
                 event.tier, event.provider, event.elapsed_ms, event.attempts, event.failovers, event.hedges,
                 event.complete)
