"""Every attempt, request, probe and breaker transition as an event in one bounded, thread-safe
store. The dashboard and the CLI read summaries of it; nothing reads router internals.

Memory is bounded by `max_events` (the oldest go first); running totals are kept separately so
counts since start survive eviction. A plain total is keyed by its name ("requests"), a labelled
one by a small frozen key per family (`AttemptKey(provider, outcome, error_kind)`), so a provider
name may hold any character, nothing is ever split back apart, and readers name the labels they
read. Log lines carry names, kinds and timings — never message content or keys.

A summary over the last `window_s` seconds is read from a rolling window, not by scanning the
store: each event is added to the window's figures when it is recorded and taken out again when it
ages out of the window or the store evicts it. So a summary costs the same at 20,000 events as at
20 (`/healthz` and every open Status tab ask for one each refresh), and its figures, quantiles
included, are exactly those of the events in the window (latencies are kept sorted, not bucketed).

Each provider's *recent results* (`Metrics.recent`) are what its health is read from: its calls
and its probes alike, each result weighing half as much for every `HALF_LIFE` seconds it is older
than the newest, so a good minute outweighs a bad patch before it, and a probe counts
even when there is no traffic at all. An operator's breaker reset forgets the results before it.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from bisect import bisect_left, insort
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar

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
    replica: str = ""  # which process of the fleet recorded it (stamped by Metrics.record)


@dataclass(frozen=True)
class RequestEvent:
    at: float
    tier: str
    provider: str | None
    elapsed_ms: float
    ttft_ms: float | None
    complete: bool
    attempts: int
    failovers: int  # providers passed over: skipped or failed before the answer (core/failover.py)
    hedges: int
    hedge_won: bool
    restarted: bool  # a provider failed mid-answer and another took over
    replica: str = ""
    stall_hedges: int = 0  # backups started because the answer being shown stalled
    stall_switched: bool = False  # a backup went on first, and took the answer over

    @property
    def failed_over(self) -> bool:
        """Its answer came from further down the chain: a provider before it was skipped or failed
        (core/failover.py). Every count of failovers (tile, charts, `/metrics`, incidents) is of these."""
        return self.failovers > 0


@dataclass(frozen=True)
class ProbeEvent:
    at: float
    provider: str
    ok: bool
    latency_ms: float
    error_kind: str | None = None
    replica: str = ""


@dataclass(frozen=True)
class TransitionEvent:
    """A breaker changed state; the breaker emits it (core/breaker.py)."""

    at: float
    provider: str
    old: str
    new: str
    reason: str
    cooldown_s: float = 0.0
    replica: str = ""


Event = AttemptEvent | RequestEvent | ProbeEvent | TransitionEvent

OPERATOR_RESET = "reset by operator"  # a TransitionEvent's reason when an operator reset the breaker
HALF_LIFE = 30.0  # seconds: a result this much older than the newest counts half as much


@dataclass(frozen=True)
class Recent:
    """What one provider's recent results say: calls that succeeded or failed, and probes."""

    success: float  # the recency-weighted share of results that succeeded, 0 to 1
    results: int  # how many results (since the window began, or the last operator reset)
    last_at: float  # the newest result's time (wall clock)
    last_ok: bool
    last_error: str | None  # the newest result's error kind, when it failed
    failing: int  # how many of the newest results failed in a row (0 when the newest succeeded)
    last_probe: ProbeEvent | None  # the newest probe among them


class _Evidence:
    """One provider's recent results, folded as they come (see `Recent`)."""

    def __init__(self) -> None:
        self.ok = self.weight = 0.0  # weighted as at `self.at`
        self.at = -math.inf  # the newest result's time
        self.results = 0
        self.last_ok, self.last_error, self.failing = True, None, 0
        self.last_probe: ProbeEvent | None = None

    def add(self, at: float, ok: bool, error: str | None) -> None:
        if at >= self.at:  # the usual case: newer than everything so far, which fades accordingly
            fade = 0.5 ** ((at - self.at) / HALF_LIFE) if self.weight else 0.0
            self.ok, self.weight, w = self.ok * fade, self.weight * fade, 1.0
            self.at = at
            self.last_ok, self.last_error = ok, error
            self.failing = 0 if ok else self.failing + 1
        else:  # from before the newest (seeded, or another replica's, arriving late): weighed by its age
            w = 0.5 ** ((self.at - at) / HALF_LIFE)
        self.ok += w * ok
        self.weight += w
        self.results += 1

    def reading(self) -> Recent:
        return Recent(self.ok / self.weight, self.results, self.at, self.last_ok, self.last_error, self.failing,
                      self.last_probe)


# -- keys of the labelled totals (field names are the label names) ------------------------------------
# Frozen dataclasses rather than tuples: two families with the same arity never compare equal.

@dataclass(frozen=True)
class TierKey:
    family: ClassVar[str] = "tier"
    tier: str


@dataclass(frozen=True)
class AttemptKey:
    family: ClassVar[str] = "attempt"
    provider: str
    outcome: str
    error_kind: str | None


@dataclass(frozen=True)
class TokenKey:
    family: ClassVar[str] = "tokens"
    provider: str
    direction: str  # "input" | "output"


@dataclass(frozen=True)
class TransitionKey:
    family: ClassVar[str] = "transition"
    provider: str
    state: str  # the new state


# Plain: "requests", "attempts", "hedges", "hedges_won", "failovers", "stall_hedges", "stall_switches".
Total = str | TierKey | AttemptKey | TokenKey | TransitionKey


def quantile(values: Iterable[float], q: float) -> float | None:
    return _sorted_quantile(sorted(values), q)


def _sorted_quantile(data: Sequence[float], q: float) -> float | None:
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Metrics:
    def __init__(self, *, max_events: int = 20_000, wall: Callable[[], float], replica: str = "",
                 log_events: bool = True) -> None:
        self.replica = replica  # stamped on every event recorded without one
        self.log_events = log_events  # False for a copy of events already logged where they happened
        self._events: deque[Event] = deque(maxlen=max_events)
        self._recorded = 0  # events ever recorded: the next one's sequence number
        self._ttfts: dict[str, deque[float]] = {}  # recent first-token times per provider, for hedging
        self._gaps: dict[str, _Gaps] = {}  # recent gaps between chunks per provider, for stall detection
        self._totals: Counter[Total] = Counter()
        self._evidence: dict[str, _Evidence] = {}  # each provider's recent results, for its health
        self._windows: OrderedDict[float, _Window] = OrderedDict()  # by span, least recently read first
        self._lock = threading.Lock()
        self._sinks: list[Callable[[Event], None]] = []
        self.wall = wall

    @property
    def max_events(self) -> int:
        return self._events.maxlen or 0

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Hand every event recorded from now on to `sink` too (the history's writer, the fleet's
        stream), on the recording thread: it must be cheap and must not block."""
        self._sinks.append(sink)

    # -- writing -------------------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        if self.replica and not event.replica:
            event = replace(event, replica=self.replica)
        with self._lock:
            if self._events.maxlen and len(self._events) == self._events.maxlen:
                evicted, seq = self._events[0], self._recorded - len(self._events)
                for window in self._windows.values():
                    window.drop(seq, evicted)
            self._events.append(event)
            for window in self._windows.values():
                window.add(self._recorded, event)
            self._recorded += 1
            self._count(event)
            self._witness(event)
        if self.log_events:
            _log(event)
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 — recording never fails a request
                log.exception("metrics sink failed")

    def seed(self, events: Iterable[Event]) -> int:
        """Add events from before this process started (read back from the history), so summaries
        and charts carry on across a restart. They go in time order with the ones recorded since,
        within `max_events`; they are not handed to sinks (they are already in the history) and
        don't count in `totals()` (counts since this process started). The number added."""
        old = list(events)
        if not old:
            return 0
        with self._lock:
            merged = sorted([*old, *self._events], key=lambda e: e.at)  # stable: ties keep their order
            if self._events.maxlen:
                merged = merged[-self._events.maxlen:]
            self._events.clear()
            self._events.extend(merged)
            # New sequence numbers for all of them; every window is rebuilt from the store when next asked.
            self._recorded += len(merged)
            self._windows.clear()
            self._evidence.clear()
            for event in merged:
                self._witness(event)
        return len(old)

    def _count(self, event: Event) -> None:
        t = self._totals
        if isinstance(event, RequestEvent):
            t["requests"] += 1
            t[TierKey(event.tier)] += 1
            t["hedges"] += event.hedges
            t["hedges_won"] += int(event.hedge_won)
            t["failovers"] += int(event.failed_over)
            t["stall_hedges"] += event.stall_hedges
            t["stall_switches"] += int(event.stall_switched)
        elif isinstance(event, AttemptEvent):
            t["attempts"] += 1
            t[AttemptKey(event.provider, event.outcome, event.error_kind)] += 1
            t[TokenKey(event.provider, "input")] += event.input_tokens or 0
            t[TokenKey(event.provider, "output")] += event.output_tokens or 0
            if event.outcome == "ok" and event.ttft_ms is not None:
                self._ttfts.setdefault(event.provider, deque(maxlen=200)).append(event.ttft_ms)
        elif isinstance(event, TransitionEvent):
            t[TransitionKey(event.provider, event.new)] += 1

    def _witness(self, event: Event) -> None:
        """Fold a call's or a probe's result into its provider's recent results."""
        if isinstance(event, AttemptEvent):
            if event.outcome in ("ok", "error"):  # a skip, a cancel or a decline says nothing about health
                self._evidence.setdefault(event.provider, _Evidence()).add(event.at, event.outcome == "ok",
                                                                           event.error_kind)
        elif isinstance(event, ProbeEvent):
            evidence = self._evidence.setdefault(event.provider, _Evidence())
            evidence.add(event.at, event.ok, event.error_kind)
            if evidence.last_probe is None or event.at >= evidence.last_probe.at:
                evidence.last_probe = event
        elif isinstance(event, TransitionEvent) and event.reason == OPERATOR_RESET:
            evidence = self._evidence.get(event.provider)
            if evidence is not None and event.at >= evidence.at:
                del self._evidence[event.provider]  # what came before the reset no longer says anything

    # -- reading -------------------------------------------------------------------------------------
    def recent(self, provider: str, window_s: float) -> Recent | None:
        """What `provider`'s recent results say (calls and probes, the newest weighing most), or
        None when it has had none within the last `window_s` seconds or since an operator reset."""
        with self._lock:
            evidence = self._evidence.get(provider)
            if evidence is None or evidence.at < self.wall() - window_s:
                return None
            return evidence.reading()

    def replicas(self) -> list[str]:
        """The fleet's processes whose events are here, sorted."""
        with self._lock:
            return sorted({e.replica for e in self._events})

    def only(self, replicas: Iterable[str]) -> Metrics:
        """A copy holding only these replicas' events (the Status page's replica filter)."""
        keep = set(replicas)
        with self._lock:
            picked = [e for e in self._events if e.replica in keep]
        copy = Metrics(max_events=max(1, len(picked)), wall=self.wall, log_events=False)
        for e in picked:
            copy.record(e)
        return copy

    def events(self, kind: type | None = None, since: float | None = None) -> list[Event]:
        with self._lock:
            items = list(self._events)
        return [e for e in items if (kind is None or isinstance(e, kind)) and (since is None or e.at >= since)]

    def totals(self) -> dict[Total, int]:
        """Counts since start: plain ones by name, labelled ones by their family's key."""
        with self._lock:
            return dict(self._totals)

    def ttft_quantile(self, provider: str, q: float, min_samples: int) -> float | None:
        """Recent successful time-to-first-token quantile in ms, or None with too few samples.
        Exact: the last 200 samples are kept per provider."""
        with self._lock:
            recent = list(self._ttfts.get(provider, ()))
        return quantile(recent, q) if len(recent) >= min_samples else None

    def record_gaps(self, provider: str, gaps: Sequence[float]) -> None:
        """An attempt's gaps between chunks (seconds), once it ended: what is normal for `provider`."""
        if gaps:
            with self._lock:
                self._gaps.setdefault(provider, _Gaps()).add(gaps)

    def gap_quantile(self, provider: str, q: float, min_samples: int) -> float | None:
        """Recent gap between chunks at quantile `q`, in seconds, or None with too few samples."""
        with self._lock:
            gaps = self._gaps.get(provider)
            return gaps.quantile(q) if gaps is not None and len(gaps.recent) >= min_samples else None

    def summary(self, window_s: float = 900.0) -> dict:
        """Per-provider and overall figures over the last `window_s` seconds (JSON-ready)."""
        with self._lock:
            since = self.wall() - window_s
            window = self._windows.get(window_s)
            if window is None or since < window.since:  # new span, or the wall clock went back
                window = self._windows[window_s] = _Window()
                first = self._recorded - len(self._events)
                for seq, event in enumerate(self._events, start=first):
                    window.add(seq, event)
            self._windows.move_to_end(window_s)
            while len(self._windows) > _MAX_WINDOWS:
                self._windows.popitem(last=False)
            window.expire(since)
            return {"window_s": window_s, **window.requests.summary(), "providers": window.providers_summary(),
                    "totals": _json_totals(self._totals)}


class _Gaps:
    """One provider's last `KEEP` gaps between chunks. A quantile is sorted afresh once a quarter
    of them are new, or at once when a new gap is over twice the slowest figure last read (a
    provider that became slower must not wait hundreds of gaps to be believed): a request reads it,
    and a sort per request would cost more than the router's whole per-request budget."""

    KEEP = 1000

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=self.KEEP)
        self.fresh = 0  # added since the quantiles were last sorted
        self.quantiles: dict[float, float | None] = {}
        self.slowest = math.inf  # the largest figure last read: a gap far past it changes the figures

    def add(self, gaps: Sequence[float]) -> None:
        self.recent.extend(gaps)
        self.fresh += len(gaps)
        if max(gaps) > 2 * self.slowest:
            self.fresh = self.KEEP

    def quantile(self, q: float) -> float | None:
        if self.fresh * 4 >= self.KEEP or q not in self.quantiles:
            if self.fresh:
                self.quantiles.clear()
            self.fresh = 0
            self.quantiles[q] = quantile(self.recent, q)
            self.slowest = max((v for v in self.quantiles.values() if v is not None), default=math.inf)
        return self.quantiles[q]


_MAX_WINDOWS = 8  # spans asked for (the policy's window, a test's): each costs a copy of the figures


@dataclass
class _RequestFigures:
    requests: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    hedges: int = 0
    hedges_won: int = 0
    restarts: int = 0
    stall_hedges: int = 0
    stall_switches: int = 0

    def add(self, r: RequestEvent, sign: int) -> None:
        self.requests += sign
        _bump(self.tiers, r.tier, sign)
        self.failovers += sign * int(r.failed_over)  # requests, not providers
        self.hedges += sign * r.hedges
        self.hedges_won += sign * int(r.hedge_won)
        self.restarts += sign * int(r.restarted)
        self.stall_hedges += sign * r.stall_hedges
        self.stall_switches += sign * int(r.stall_switched)

    def summary(self) -> dict:
        return {"requests": self.requests, "tiers": dict(self.tiers),
                "cache_hit_ratio": (self.tiers["cache"] / self.requests) if self.requests else None,
                "failovers": self.failovers, "hedges": self.hedges, "hedges_won": self.hedges_won,
                "restarts": self.restarts, "stall_hedges": self.stall_hedges, "stall_switches": self.stall_switches}


@dataclass
class _ProviderFigures:
    seen: int = 0  # attempts of any outcome, skipped included: a provider shows once it has one
    attempts: int = 0  # not skipped
    ok: int = 0
    decided: int = 0  # ok or error
    skipped: int = 0
    hedges: int = 0
    hedges_won: int = 0
    input_tokens: int = 0  # of successful attempts
    output_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: list[float] = field(default_factory=list)  # successful attempts', sorted
    ttft: list[float] = field(default_factory=list)  # successful attempts', sorted
    transitions: dict[int, TransitionEvent] = field(default_factory=dict)  # by sequence number: in order

    def add(self, a: AttemptEvent, sign: int) -> None:
        self.seen += sign
        if a.outcome == "skipped":
            self.skipped += sign
            return
        self.attempts += sign
        self.hedges += sign * int(a.hedge)
        self.decided += sign * int(a.outcome in ("ok", "error"))
        if a.error_kind:
            _bump(self.errors, a.error_kind, sign)
        if a.outcome != "ok":
            return
        self.ok += sign
        self.hedges_won += sign * int(a.hedge)
        self.input_tokens += sign * (a.input_tokens or 0)
        self.output_tokens += sign * (a.output_tokens or 0)
        _sorted_change(self.latency, a.latency_ms, sign)
        if a.ttft_ms is not None:
            _sorted_change(self.ttft, a.ttft_ms, sign)

    def summary(self) -> dict:
        return {
            "attempts": self.attempts,
            "success_rate": (self.ok / self.decided) if self.decided else None,
            "errors": dict(self.errors),
            "latency_ms": _quantiles(self.latency),
            "ttft_ms": _quantiles(self.ttft),
            "hedges": self.hedges,
            "hedges_won": self.hedges_won,
            "skipped": self.skipped,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "transitions": [asdict(t) for t in self.transitions.values()],
        }


class _Window:
    """Running figures over the events recorded at or after `since` that the store still holds."""

    def __init__(self) -> None:
        self.since = -math.inf
        self.members: dict[int, Event] = {}  # by sequence number
        self.ages: list[tuple[float, int]] = []  # a heap of (at, sequence number); may hold dropped ones
        self.requests = _RequestFigures()
        self.providers: dict[str, _ProviderFigures] = {}

    def add(self, seq: int, event: Event) -> None:
        if isinstance(event, ProbeEvent):
            return  # not summarised
        self.members[seq] = event
        heapq.heappush(self.ages, (event.at, seq))
        self._change(seq, event, 1)

    def drop(self, seq: int, event: Event) -> None:
        """The store evicted this event."""
        if self.members.pop(seq, None) is not None:
            self._change(seq, event, -1)
            if len(self.ages) > 2 * len(self.members) + 64:  # forget the dropped ones' heap entries
                self.ages = [(e.at, s) for s, e in self.members.items()]
                heapq.heapify(self.ages)

    def expire(self, since: float) -> None:
        self.since = since
        while self.ages and self.ages[0][0] < since:
            _, seq = heapq.heappop(self.ages)
            event = self.members.pop(seq, None)
            if event is not None:
                self._change(seq, event, -1)

    def _change(self, seq: int, event: Event, sign: int) -> None:
        if isinstance(event, RequestEvent):
            self.requests.add(event, sign)
        elif isinstance(event, AttemptEvent):
            self.providers.setdefault(event.provider, _ProviderFigures()).add(event, sign)
        elif isinstance(event, TransitionEvent):
            mine = self.providers.setdefault(event.provider, _ProviderFigures()).transitions
            if sign > 0:
                mine[seq] = event
            else:
                del mine[seq]

    def providers_summary(self) -> dict[str, dict]:
        return {name: self.providers[name].summary() for name in sorted(self.providers)
                if self.providers[name].seen}


def _bump(counter: Counter[str], key: str, sign: int) -> None:
    counter[key] += sign
    if not counter[key]:
        del counter[key]


def _sorted_change(values: list[float], value: float, sign: int) -> None:
    if sign > 0:
        insort(values, value)
    else:
        del values[bisect_left(values, value)]


def _quantiles(data: list[float]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": _sorted_quantile(data, q) for q in (0.5, 0.95, 0.99)}


def _json_totals(totals: Counter[Total]) -> dict:
    """Plain totals by name; each labelled family as a list of its labels and a count."""
    out: dict = {}
    for key, n in totals.items():
        if isinstance(key, str):
            out[key] = n
        else:
            out.setdefault(key.family, []).append({**asdict(key), "count": n})
    return out


EVENT_TYPES: dict[str, type] = {cls.__name__.removesuffix("Event").lower(): cls
                                 for cls in (AttemptEvent, RequestEvent, ProbeEvent, TransitionEvent)}


def as_row(event: Event) -> dict:
    """The event as a flat JSON-ready dict with its "type" (attempt, request, probe, transition)."""
    row = {"type": type(event).__name__.removesuffix("Event").lower()}
    row.update({f.name: getattr(event, f.name) for f in fields(event)})
    return row


def from_row(row: dict) -> Event:
    """The event `as_row` wrote (e.g. read back from the history or another replica's stream).
    Unknown keys are ignored, so an older reader can read a newer writer's rows. Raises ValueError
    for a row that is not an event."""
    cls = EVENT_TYPES.get(row.get("type")) if isinstance(row, dict) else None
    if cls is None:
        raise ValueError("not a metrics event")
    values = {f.name: row[f.name] for f in fields(cls) if f.name in row}
    for f in fields(cls):  # each field of the type it declares: a summary sorts and adds them
        if f.name in values and not _of_type(values[f.name], f.type):
            raise ValueError(f"not a metrics event ({f.name}: {type(values[f.name]).__name__})")
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"not a metrics event ({e})") from None


def _of_type(value, declared: str) -> bool:
    """Is `value` what a field annotated `declared` ("float", "str | None", "bool", …) may hold?"""
    for name in (t.strip() for t in declared.split("|")):
        if name == "None" and value is None:
            return True
        if name == "str" and isinstance(value, str):
            return True
        if name == "bool" and isinstance(value, bool):
            return True
        if name in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
            return name == "int" and isinstance(value, int) or name == "float" and math.isfinite(value)
    return False


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
