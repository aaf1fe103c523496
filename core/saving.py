"""Saving conversations off the request thread: a chat never waits for the database.

One writer thread per process. `submit` only records the latest snapshot of a conversation (a
newer snapshot replaces one not yet written) and wakes the writer. A failed write keeps the
snapshot and retries: at once when a page calls `nudge` (its next rerun), else with backoff. While
a snapshot waits, `pending` hands it out, so a reload in the same process still finds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from .store.conversations import Conversation, ConversationStore
from .store.errors import StoreError

log = logging.getLogger("understudy")

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between retries while the database keeps failing


class ConversationSaver:
    """Thread-safe; every method returns at once except `settle` and `close`."""

    def __init__(self, store: ConversationStore, *, backoff: Sequence[float] = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._backoff = tuple(backoff)
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, Conversation] = {}  # id -> the newest snapshot not yet written
        self._due: set[str] = set()  # ids to write now (new snapshots, or nudged after a failure)
        self._errors: dict[str, StoreError] = {}  # id -> why its last write failed
        self._failures = 0  # consecutive failed rounds: picks the backoff
        self._retry_at: float | None = None
        self._busy = False
        self._closed = False
        self._saved = 0
        self._thread = threading.Thread(target=self._run, name="conversation-saver", daemon=True)
        self._thread.start()

    # -- what pages call --------------------------------------------------------------------------
    def submit(self, conversation: Conversation) -> None:
        with self._cond:
            waiting = self._pending.get(conversation.id)
            if waiting is not None and waiting.updated_at > conversation.updated_at:
                return
            self._pending[conversation.id] = conversation
            self._due.add(conversation.id)
            self._cond.notify_all()

    def pending(self, id: str) -> Conversation | None:
        """The snapshot still waiting to be written, if any (newer than the stored one)."""
        with self._cond:
            return self._pending.get(id)

    def failing(self, id: str) -> StoreError | None:
        """Why this conversation's latest snapshot is not saved yet, while its writes are failing."""
        with self._cond:
            return self._errors.get(id) if id in self._pending else None

    def nudge(self) -> None:
        """Retry every waiting snapshot now (the database may be back)."""
        with self._cond:
            if self._pending:
                self._due.update(self._pending)
                self._cond.notify_all()

    def discard(self, id: str) -> None:
        """Forget a waiting snapshot (its conversation was deleted)."""
        with self._cond:
            self._pending.pop(id, None)
            self._due.discard(id)
            self._errors.pop(id, None)

    def settle(self, timeout: float) -> bool:
        """Wait until every snapshot submitted or nudged so far has been tried; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._due and not self._busy, timeout)

    def wait_saved(self, id: str, timeout: float) -> bool:
        """Wait until nothing of this conversation is waiting to be written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: id not in self._pending, timeout)

    def health(self) -> dict:
        with self._cond:
            return {"status": "failing" if self._errors else "ok", "waiting": len(self._pending),
                    "saved": self._saved, "last_error": str(next(iter(self._errors.values()))) if self._errors else None}

    def close(self, timeout: float = 5.0) -> None:
        """Write what is waiting (within `timeout`), then stop the writer."""
        self.nudge()
        self.settle(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the writer -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._due:
                    wait = None if self._retry_at is None else max(0.0, self._retry_at - self._clock())
                    if wait == 0.0:
                        self._due.update(self._pending)
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                batch = [self._pending[i] for i in self._due if i in self._pending]
                self._due.clear()
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: list[Conversation]) -> None:
        for n, conversation in enumerate(batch):
            try:
                kept = self.store.save(conversation)
            except StoreError as e:
                # The database is down or failing: the rest of the batch would wait the same
                # connect timeout for the same answer, so all of it waits for the retry.
                log.warning("conversations are not being saved: %s", e)
                with self._cond:
                    for c in batch[n:]:
                        if c.id in self._pending:
                            self._errors[c.id] = e
                    self._failures += 1
                    delay = self._backoff[min(self._failures, len(self._backoff)) - 1]
                    self._retry_at = self._clock() + delay
                return
            except Exception:  # noqa: BLE001 — a bug must not kill the writer; the snapshot is dropped, loudly
                log.exception("a conversation snapshot could not be written")
                kept = False
            with self._cond:
                if self._pending.get(conversation.id) is conversation:
                    del self._pending[conversation.id]
                self._errors.pop(conversation.id, None)
                self._saved += kept
        with self._cond:
            self._failures = 0
            if not self._errors:
                self._retry_at = None
