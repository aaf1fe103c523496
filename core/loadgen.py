"""The load generator: many questions at once through the router, with figures and a cancel.

The Chaos page starts one `LoadRun` per browser session and reads it while it runs (its own
threads ask; the page only polls), so a long run never blocks the page and Cancel works at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .answer import Answer, Result
from .messages import ChatRequest
from .metrics import quantile
from .router import Router
from .tiers import Tier

QUESTIONS = ("How do I reset my password?", "What are your opening hours?", "How do I cancel my subscription?",
             "What is a circuit breaker?", "How do I export my data?", "Explain hedged requests.",
             "Summarise the benefits of retries with jitter.", "What is a time-to-first-token deadline?")
MAX_QUESTIONS, MAX_CONCURRENCY = 1000, 50
# One run at a time per router, whoever started it: a run outlives the tab that started it (a
# reload, a closed tab), so it is kept here, where every session sees it and can cancel it, and a
# reload can't stack a second run of up to 1000 × 50 on top.
_runs: weakref.WeakKeyDictionary[Router, LoadRun] = weakref.WeakKeyDictionary()
_runs_lock = threading.Lock()


class Busy(RuntimeError):
    """Another load run is still going on this router."""


def current(router: Router) -> LoadRun | None:
    """This router's latest load run (still going, or the last one to finish), if any."""
    with _runs_lock:
        return _runs.get(router)


@dataclass(frozen=True)
class Row:
    """One question's outcome. Times are seconds (numbers, so a table sorts them)."""

    n: int
    served_by: str  # the provider, or "–" when none answered
    tier: str
    complete: bool
    stopped: bool
    latency_s: float
    first_token_s: float | None
    attempts: int
    failed: int  # attempts that failed or were skipped before the answer

    @property
    def answered(self) -> bool:
        """A model's whole answer (fresh or cached), not a degraded reply, a cut one or a stop."""
        return Tier(self.tier).model_output and self.complete and not self.stopped

    @classmethod
    def of(cls, n: int, result: Result) -> Row:
        return cls(n, result.provider or "–", result.tier.value, result.complete, result.stopped,
                   result.elapsed_ms / 1000, None if result.ttft_ms is None else result.ttft_ms / 1000,
                   len(result.attempts), sum(a.outcome.failed for a in result.attempts))


@dataclass(frozen=True)
class Summary:
    asked: int  # questions with an outcome so far
    answered: int
    not_answered: int  # degraded replies and cut answers: what a user would count as an error
    stopped: int
    p50_s: float | None  # latency of the finished ones (stopped ones left out)
    p95_s: float | None
    first_token_p50_s: float | None
    tiers: dict[str, int]
    served_by: dict[str, int]
    failed_attempts: int


def summarise(rows: Sequence[Row]) -> Summary:
    done = [r for r in rows if not r.stopped]
    latencies = [r.latency_s for r in done]
    firsts = [r.first_token_s for r in done if r.first_token_s is not None]
    return Summary(
        asked=len(rows), answered=sum(r.answered for r in rows),
        not_answered=sum(not r.answered and not r.stopped for r in rows), stopped=sum(r.stopped for r in rows),
        p50_s=quantile(latencies, 0.5), p95_s=quantile(latencies, 0.95), first_token_p50_s=quantile(firsts, 0.5),
        tiers=dict(Counter(r.tier for r in done).most_common()),
        served_by=dict(Counter(r.served_by for r in done).most_common()),
        failed_attempts=sum(r.failed for r in rows))


class LoadRun:
    """`n` questions, `concurrency` at a time, on its own threads. Thread-safe to read while it runs."""

    def __init__(self, router: Router, n: int, concurrency: int, *, fresh: bool = True,
                 questions: Sequence[str] = QUESTIONS, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= n <= MAX_QUESTIONS or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"between 1 and {MAX_QUESTIONS} questions, 1 and {MAX_CONCURRENCY} at a time")
        self.router, self.n, self.concurrency, self.fresh = router, n, min(concurrency, n), fresh
        self.questions, self._clock = tuple(questions), clock
        self._lock = threading.Lock()
        self._next = 0
        self._rows: list[Row] = []
        self._live: dict[int, object] = {}  # the streams being answered, for a cancel to stop
        self._cancelled = False
        self._threads: list[threading.Thread] = []
        self.started = self.ended = None

    def start(self) -> LoadRun:
        """Start asking, as this router's one load run; `Busy` if another is still going."""
        with _runs_lock:
            if (other := _runs.get(self.router)) is not None and not other.finished:
                raise Busy(f"a load run is already going ({len(other.rows())} of {other.n} answered); cancel it first")
            _runs[self.router] = self
        self.started = self._clock()
        self._threads = [threading.Thread(target=self._work, name=f"load-{i}", daemon=True)
                         for i in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def cancel(self) -> None:
        """Ask nothing more, and stop the questions being answered (what they have is kept, as stopped)."""
        with self._lock:
            self._cancelled = True
            live = list(self._live.values())
        for stream in live:
            stream.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every worker is done (tests and the CLI; the page polls instead)."""
        for t in self._threads:
            t.join(timeout)
        return self.finished

    @property
    def cancelled(self) -> bool:
        with self._lock:
            return self._cancelled

    @property
    def finished(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    def rows(self) -> list[Row]:
        """The outcomes so far, newest question first."""
        with self._lock:
            return sorted(self._rows, key=lambda r: r.n, reverse=True)

    def took(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else self._clock()) - self.started

    def _take(self) -> int | None:
        with self._lock:
            if self._cancelled or self._next >= self.n:
                return None
            self._next += 1
            return self._next

    def _work(self) -> None:
        while (k := self._take()) is not None:
            question = f"{self.questions[(k - 1) % len(self.questions)]} (load test #{k})"
            stream = self.router.stream(ChatRequest.ask(question), fresh=self.fresh)
            with self._lock:
                self._live[k] = stream
                late = self._cancelled  # cancelled between taking the question and registering it
            if late:
                stream.stop()
            answer = Answer()
            try:
                for event in stream:
                    answer.add(event)
            finally:
                stream.close()
                with self._lock:
                    self._live.pop(k, None)
            with self._lock:
                self._rows.append(Row.of(k, answer.result))
                if len(self._rows) == self._next and (self._cancelled or self._next >= self.n):
                    self.ended = self._clock()
