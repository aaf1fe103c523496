"""One thread per router that notices answers going quiet.

Once a provider is answering, the thread reading its stream is blocked on the provider's socket
(core/attempt.py: no thread hop per chunk), so it can't notice the silence itself. The watchdog
asks each watched run, when that run said to (`poll()` returns seconds until it wants to be
asked again, or None: not until it is watched again), and the run acts under its own lock. It
sleeps in between: an answer that keeps streaming costs it about one wake-up per stall threshold.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("understudy")
TICK = 0.25  # seconds: the longest the thread sleeps without looking


class Watched(Protocol):
    def poll(self) -> float | None: ...


class Watchdog:
    def __init__(self, *, name: str = "stall-watchdog") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._due: dict[Watched, float] = {}  # watched -> when to ask it next (time.monotonic)
        self._pokes: dict[Watched, int] = {}  # the latest watch() of each: one during an ask wins over its answer
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._wakes_at = float("-inf")  # when its thread's wait ends by itself (inf: not until notified)
        self._closed = False

    def watch(self, target: Watched, *, after: float = 0.0) -> None:
        """Ask `target` in `after` seconds, and from then on when it says (again, if it is watched
        already). The thread is woken only if that is sooner than it would wake anyway: an answer
        that streams to its end before its stall threshold never wakes it."""
        with self._cond:
            if self._closed:
                return
            due = self._due[target] = time.monotonic() + after
            self._seq += 1
            self._pokes[target] = self._seq
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            if due < self._wakes_at:
                self._cond.notify()

    def unwatch(self, target: Watched) -> None:
        with self._cond:
            self._due.pop(target, None)
            self._pokes.pop(target, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._ready():
                    # Also awake every TICK on its own: a watch due later than that needs no notify,
                    # so a request (each watches once or twice) never wakes this thread for nothing.
                    now = time.monotonic()
                    self._wakes_at = min(min(self._due.values(), default=now + TICK), now + TICK)
                    self._cond.wait(max(0.0, self._wakes_at - now))
                self._wakes_at = float("-inf")  # awake: a new watch needs no notify to be seen
                if self._closed:
                    return
                now = time.monotonic()
                ready = [(t, self._pokes.get(t)) for t, at in self._due.items() if at <= now]
            for target, pokes in ready:
                try:
                    wait = target.poll()
                except Exception:  # noqa: BLE001 — one run's bug must not blind the others
                    log.exception("stall watchdog: a run's poll failed")
                    wait = None
                with self._cond:
                    if target not in self._due or self._pokes.get(target) != pokes:
                        continue  # unwatched, or watched again meanwhile: ask it again at once
                    if wait is None:
                        del self._due[target]
                        del self._pokes[target]
                    else:
                        self._due[target] = time.monotonic() + max(0.0, wait)

    def _ready(self) -> bool:
        now = time.monotonic()
        return any(at <= now for at in self._due.values())
