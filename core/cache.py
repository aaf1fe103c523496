"""Answers kept in memory: fresh ones are served before any provider is called, stale ones when
no provider can answer.

cachetools' TTLCache (least-recently-used, with a time-to-live) bounds both size and how stale an
answer may get; freshness is judged from when the answer was stored. cachetools classes are not
thread-safe (field notes §9), so every access holds one lock. Identical requests arriving together
are computed once: the first becomes the leader, the others wait for its result.
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cachetools

from .messages import ChatRequest, Usage

if TYPE_CHECKING:
    from .store.fleet import SharedAnswers


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    provider: str
    model: str
    usage: Usage | None
    stored_at: float


class Flight:
    """One computation in progress for a key; followers wait on it while it is alive.

    The leader says when it will next have news (`alive`): its first token by its deadline, the
    next piece of text within its provider's idle timeout. A follower keeps waiting as long as
    those promises are kept, so a leader that is still streaming is never given up on."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._landed = False
        self.alive_until = float("-inf")  # on the cache's clock
        self.result = None

    def alive(self, until: float) -> None:
        """The leader is making progress: it will land or report progress again by `until`.
        Followers aren't woken for it: they look again when their current wait runs out. Called for
        every chunk, so no lock: one float assignment is atomic, and a follower that reads the value
        just before it changes only looks again a little sooner. Never shortened: a backup started
        beside a streaming answer must not cut the followers' wait below what the answer has left."""
        if until > self.alive_until:
            self.alive_until = until

    def finish(self, result) -> None:
        with self._changed:
            self.result = result
            self._landed = True
            self._changed.notify_all()

    def wait(self, timeout: float, stopped: Callable[[], bool] = lambda: False):
        """The leader's result; waits `timeout` seconds, and longer while the leader is alive.
        None when it landed without a result (its caller stopped it), went quiet, or this
        follower's own caller stopped (`stopped()` turned true, and `wake()` was called)."""
        with self._changed:
            limit = self._clock() + timeout
            while not self._landed:
                remaining = max(limit, self.alive_until) - self._clock()
                if remaining <= 0 or stopped():
                    return None
                self._changed.wait(remaining)
            return self.result

    def wake(self) -> None:
        """Every follower looks again now (one of them was stopped)."""
        with self._changed:
            self._changed.notify_all()


def cache_key(request: ChatRequest) -> str:
    """The whole conversation, system prompt and generation settings, normalised only where that
    cannot change the meaning: Unicode composition, line endings, trailing whitespace and blank
    lines around the text. Indentation and spacing inside a line are kept (code, tables, poems)."""
    def norm(text: str) -> str:
        lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\n".join(line.rstrip() for line in lines).strip("\n")

    payload = {
        "system": norm(request.system_text()),
        "messages": [[m.role, norm(m.content)] for m in request.turns()],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int,
        stale_ttl: float,
        clock: Callable[[], float],
        enabled: bool = True,
        shared: SharedAnswers | None = None,
    ) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self.keep_for = max(ttl, stale_ttl)
        self.shared = shared  # a fleet's answers in Redis (core/store/fleet.py); None: this process only
        self._clock = clock
        self._store: cachetools.TTLCache = cachetools.TTLCache(maxsize=max_entries, ttl=max(ttl, stale_ttl),
                                                               timer=clock)
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def get(self, key: str) -> tuple[CachedAnswer, bool] | None:
        """(answer, fresh?) or None."""
        if not self.enabled:
            return None
        with self._lock:
            answer = self._store.get(key)
        if answer is None and self.shared is not None:
            answer = self.shared.get(key)  # another replica's answer, or one kept before a restart
            if answer is not None and self._clock() - answer.stored_at < self.keep_for:
                with self._lock:
                    self._store[key] = answer
        if answer is None:
            return None
        return answer, self._clock() - answer.stored_at < self.ttl

    def put(self, key: str, text: str, provider: str, model: str, usage: Usage | None) -> None:
        """Store a complete answer (callers never pass a partial one)."""
        if not self.enabled:
            return
        answer = CachedAnswer(text, provider, model, usage, self._clock())
        with self._lock:
            self._store[key] = answer
        if self.shared is not None:
            self.shared.put(key, answer, self.keep_for)

    def join(self, key: str) -> tuple[Flight, bool]:
        """(flight, leader?). The leader must call `land()` whatever happens."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(self._clock)
            return flight, True

    def land(self, key: str, flight: Flight, result) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.finish(result)

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
        if self.shared is not None:
            self.shared.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)
