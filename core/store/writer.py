"""Writes that must never hold up a request: items are handed to a bounded queue, and one
background thread writes them in batches, each batch in one transaction.

`put()` only appends under a lock, so a request thread never waits for the database and never
sees its errors. While the database is down the queue is the backlog: it is bounded (what does not
fit is dropped and counted), and the writer retries with exponential backoff. A batch the database
refuses for what is in it (`refused_data`: a constraint, a value it can't hold) is not an outage:
it is written again one item at a time, and only the item refused is dropped (counted, logged
without its content), so one bad item never holds back the ones queued after it. `health()` says how
it is going, for /healthz and the Status page. `flush()` writes what is queued now (a test's, or
close's, way of knowing the writer caught up, without sleeping); `close()` flushes with a bounded
wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Generic, TypeVar

from .errors import describe, refused_data

log = logging.getLogger("understudy")
T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Thread-safe. `write(batch)` is called on the writer's thread only, with at most `batch`
    items in the order they were put; it writes them all or raises. `prepare()`, if given, must
    succeed once before the first write (it is retried like a write): the history reads what came
    before this process there, before any of this process's own events are in the database."""

    def __init__(self, write: Callable[[list[T]], None], *, name: str, max_backlog: int = 10_000,
                 batch: int = 200, interval: float = 0.5, backoff: float = 0.25, max_backoff: float = 10.0,
                 prepare: Callable[[], None] | None = None) -> None:
        if max_backlog < 1 or batch < 1:
            raise ValueError("max_backlog and batch must be at least 1")
        self.name = name
        self._write, self._prepare = write, prepare
        self._max_backlog, self._batch, self._interval = max_backlog, batch, interval
        self._backoff, self._max_backoff = backoff, max_backoff
        self._queue: deque[T] = deque()
        self._cond = threading.Condition()
        self._prepared = prepare is None
        self._queued = 0  # items ever queued: the last one's sequence number
        self._done = 0  # items ever taken off the queue (written)
        self._failures = 0  # failed attempts, ever
        self._first_at = 0.0  # when the oldest queued item arrived (monotonic)
        self._retry_at: float | None = None  # after a failure: not before this (monotonic)
        self._delay = backoff
        self._urgent = False  # flush() asked: write now, backoff or not
        self._closing = False
        self._abandoned = False
        self._one_by_one = 0  # items still to write singly, after a batch was refused for its data
        self._health = {"status": "ok", "backlog": 0, "dropped": 0, "written": 0, "refused": 0, "last_error": None}
        self._thread = threading.Thread(target=self._run, name=f"understudy-{name}-writer", daemon=True)
        self._thread.start()

    # -- the request thread's side ------------------------------------------------------------------
    def put(self, item: T, *, force: bool = False) -> None:
        """Queue an item. Never blocks on the database, never raises. `force`: even past the
        backlog's bound (an operator's one-off command, not traffic)."""
        with self._cond:
            if self._closing or (len(self._queue) >= self._max_backlog and not force):
                self._health["dropped"] += 1
                return
            if not self._queue:
                self._first_at = time.monotonic()
                self._cond.notify()
            self._queue.append(item)
            self._queued += 1
            if len(self._queue) == self._batch:
                self._cond.notify()

    def health(self) -> dict:
        """{"status": "ok" | "failing", "backlog": queued, "dropped": lost to a full backlog (or
        left at close), "written": ever, "refused": items the database refused (also counted
        in dropped), "last_error": one line (no password) or None}."""
        with self._cond:
            return {**self._health, "backlog": len(self._queue)}

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far now, not after the batch interval or the backoff. True
        once it is written (and `prepare` has succeeded); False as soon as an attempt fails, or
        when `timeout` seconds pass first."""
        with self._cond:
            target, failures = self._queued, self._failures
            end = time.monotonic() + timeout
            while not (self._prepared and self._done >= target):
                if self._failures > failures or not self._thread.is_alive():
                    return False
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._urgent = True
                self._cond.notify_all()
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (trying once more now, whatever the backoff), then stop. Waits at
        most `timeout` seconds; what could not be written is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._abandoned = True  # a write still stuck in the database no longer counts
            self._health["dropped"] += len(self._queue)
            self._queue.clear()

    # -- the writer's thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._next()
                if items is None or self._abandoned:
                    return
                prepare = not self._prepared and not self._closing  # at close, nothing is read any more
            try:
                if prepare:
                    self._prepare()
                else:
                    self._write(items)
            except Exception as e:  # noqa: BLE001 — whatever the database says, the writer carries on
                if not prepare and refused_data(e):
                    self._refused(items, e)
                elif self._failed(e):
                    return
                continue
            self._succeeded(0 if prepare else len(items))

    def _next(self) -> list[T] | None:
        """Wait (holding the lock) until there is something to do: the items to write next, [] to
        prepare, None to stop."""
        while True:
            now = time.monotonic()
            due = self._urgent or self._closing
            if self._retry_at is not None and not due and now < self._retry_at:
                self._cond.wait(self._retry_at - now)
                continue
            if not self._prepared and not self._closing:
                break
            if not self._queue:
                if self._closing:
                    return None
                self._urgent = False
                self._cond.wait()
                continue
            if not due and len(self._queue) < self._batch and now < self._first_at + self._interval:
                self._cond.wait(self._first_at + self._interval - now)
                continue
            break
        self._urgent = False
        return list(islice(self._queue, 1 if self._one_by_one else self._batch))

    def _succeeded(self, n: int) -> None:
        with self._cond:
            if self._abandoned:
                return
            for _ in range(n):
                self._queue.popleft()  # only this thread takes items off, so these are the ones written
            self._done += n
            self._one_by_one = max(0, self._one_by_one - n)
            self._prepared = True
            self._retry_at, self._delay = None, self._backoff
            self._first_at = time.monotonic()
            if self._health["status"] != "ok":
                log.info("%s writer recovered", self.name)
            self._health.update(status="ok", written=self._health["written"] + n)
            self._cond.notify_all()

    def _refused(self, items: list[T], e: Exception) -> None:
        """The database refused what is in this batch: find the item, write the rest."""
        why = f"the database refused an item ({_root(e)})"  # the kind only: its text may quote the item
        with self._cond:
            if self._abandoned:
                return
            if len(items) > 1:
                self._one_by_one = len(items)  # the same items again, singly: only the bad one fails
                return
            self._queue.popleft()
            self._done += 1
            self._one_by_one = max(0, self._one_by_one - 1)
            self._health.update(refused=self._health["refused"] + 1, dropped=self._health["dropped"] + 1,
                                last_error=why)
            self._cond.notify_all()
        log.warning("%s writer: %s; it was dropped, the rest are written", self.name, why)

    def _failed(self, e: Exception) -> bool:
        """Back off; True when the writer should stop (it is closing: no retrying for ever)."""
        why = describe(e)  # one short line: never the SQL or its parameters (user content)
        with self._cond:
            self._failures += 1
            first = self._health["status"] == "ok"
            self._health.update(status="failing", last_error=why)
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self._max_backoff)
            self._cond.notify_all()
            closing, queued = self._closing, len(self._queue)
        if first:
            log.warning("%s writer failing (%d queued, retrying with backoff): %s", self.name, queued, why)
        return closing


def _root(e: BaseException) -> str:
    while (inner := getattr(e, "orig", None) or e.__cause__) is not None and inner is not e:
        e = inner
    return type(e).__name__
