"""Saving conversations off the request thread: a chat never waits for the database.

One writer thread per process. `submit` only records the latest snapshot of a conversation (a
newer snapshot replaces one not yet written) and wakes the writer. A failed write keeps the
snapshot and retries: at once when a page calls `nudge` (its next rerun), else with backoff. While
a snapshot waits, `pending` hands it out, so a reload in the same process still finds it.

Snapshots are kept per conversation *and writer* (a browser session), so two tabs on one
conversation never replace each other's snapshot here. When the store says another writer got there
first, the snapshot is saved as a new conversation (a fork: nothing typed is lost); when the
conversation was deleted, the snapshot is dropped (a delete is final); when the database refuses
its content, it can't be saved at all. Each time `moved` tells that writer's page on its next
run; until then, that page's later snapshots built on the same version follow into the fork.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .store.conversations import TITLE_CHARS, Conversation, ConversationStore, Saved, new_id
from .store.errors import StoreError, refused_data

log = logging.getLogger("understudy")

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between retries while the database keeps failing
MOVES_KEPT = 1000  # moves not yet seen by their page (a closed tab never looks)

Key = tuple[str, str]  # (conversation id, writer)


@dataclass(frozen=True)
class Moved:
    """What became of a writer's snapshot that could not go where it was meant to."""

    kind: str  # "forked": saved as `to` (another tab had changed the original); "deleted" or
    #            "refused" (the database refused its content, `why`): not saved
    to: str | None = None
    title: str = ""
    base: int = 0  # the version the moved snapshot was built on: later ones on it follow into `to`
    why: str = ""


def forked_title(c: Conversation) -> str:
    """"Copy · <title>": the prefix shows even where a list cuts long titles short."""
    title = "Copy · " + c.shown_title.removeprefix("Copy · ")
    return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS - 1].rstrip() + "…"


class ConversationSaver:
    """Thread-safe; every method returns at once except `settle` and `close`."""

    def __init__(self, store: ConversationStore, *, backoff: Sequence[float] = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._backoff = tuple(backoff)
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[Key, Conversation] = {}  # the newest snapshot not yet written, per writer
        self._due: set[Key] = set()  # to write now (new snapshots, or nudged after a failure)
        self._errors: dict[Key, StoreError] = {}  # why its last write failed
        self._moved: OrderedDict[Key, Moved] = OrderedDict()  # moves that writer's page has not been told of
        self._failures = 0  # consecutive failed rounds: picks the backoff
        self._retry_at: float | None = None
        self._busy = False
        self._closed = False
        self._saved = 0
        self._thread = threading.Thread(target=self._run, name="conversation-saver", daemon=True)
        self._thread.start()

    # -- what pages call --------------------------------------------------------------------------
    def submit(self, conversation: Conversation) -> None:
        """One writer's snapshots come in the order it made them: the latest replaces one waiting."""
        with self._cond:
            moved = self._moved.get((conversation.id, conversation.writer))
            if moved is not None and moved.kind == "forked" and moved.base == conversation.version:
                conversation = self._into(conversation, moved)  # made before its page heard of the fork
            key = (conversation.id, conversation.writer)
            self._pending[key] = conversation
            self._due.add(key)
            self._cond.notify_all()

    def pending(self, id: str) -> Conversation | None:
        """The newest snapshot of this conversation still waiting to be written, if any."""
        with self._cond:
            waiting = [c for (i, _), c in self._pending.items() if i == id]
        return max(waiting, key=lambda c: c.updated_at, default=None)

    def failing(self, id: str) -> StoreError | None:
        """Why this conversation's latest snapshot is not saved yet, while its writes are failing."""
        with self._cond:
            return next((e for (i, _), e in self._errors.items() if i == id), None)

    def waiting_for(self, id: str, writer: str) -> str | None:
        """"moved" when `moved` has news for this writer, "pending" while its snapshot of `id` is
        not written yet, else None (one look, under one lock: no news can fall between the two)."""
        with self._cond:
            if (id, writer) in self._moved:
                return "moved"
            return "pending" if (id, writer) in self._pending else None

    def moved(self, id: str, writer: str) -> Moved | None:
        """Once: where this writer's snapshot of `id` went instead. From then on its page knows, and
        its snapshots of `id` go to `id` again (the page has moved to the fork, or reopened `id`)."""
        with self._cond:
            return self._moved.pop((id, writer), None)

    def nudge(self) -> None:
        """Retry every waiting snapshot now (the database may be back)."""
        with self._cond:
            if self._pending:
                self._due.update(self._pending)
                self._cond.notify_all()

    def discard(self, id: str) -> None:
        """Forget every waiting snapshot of a conversation (it was deleted here)."""
        with self._cond:
            for key in [k for k in self._pending if k[0] == id]:
                self._pending.pop(key, None)
                self._due.discard(key)
                self._errors.pop(key, None)

    def settle(self, timeout: float) -> bool:
        """Wait until every snapshot submitted or nudged so far has been tried; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._due and not self._busy, timeout)

    def wait_saved(self, id: str, timeout: float) -> bool:
        """Wait until nothing of this conversation is waiting to be written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: all(k[0] != id for k in self._pending), timeout)

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
                # In the order the snapshots first waited: the tab that typed first saves first.
                batch = [c for key, c in self._pending.items() if key in self._due]
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
            key = (conversation.id, conversation.writer)
            try:
                result = self.store.save(conversation)
            except StoreError as e:
                if refused_data(e):  # not an outage: these values will never be taken
                    self._refuse(conversation, e)
                    continue
                # The database is down or failing: the rest of the batch would wait the same
                # connect timeout for the same answer, so all of it waits for the retry.
                log.warning("conversations are not being saved: %s", e)
                with self._cond:
                    for c in batch[n:]:
                        if (c.id, c.writer) in self._pending:
                            self._errors[(c.id, c.writer)] = e
                    self._failures += 1
                    delay = self._backoff[min(self._failures, len(self._backoff)) - 1]
                    self._retry_at = self._clock() + delay
                return
            except Exception as e:  # noqa: BLE001 — a bug must not kill the writer; its page is told
                log.error("a conversation snapshot could not be written (%s)", type(e).__name__)
                result, bug = None, type(e).__name__
            with self._cond:
                self._errors.pop(key, None)
                if self._pending.get(key) is not conversation:
                    continue  # a newer snapshot came meanwhile: it is written next, with the same outcome
                del self._pending[key]
                self._saved += result is Saved.SAVED
                if result in (Saved.CONFLICT, Saved.NOT_YOURS):
                    # Another tab or replica saved this conversation since this snapshot was taken:
                    # both versions are kept, this one as a new conversation of the same owner.
                    moved = self._moved.get(key)
                    if moved is None or moved.kind != "forked" or moved.base != conversation.version:
                        moved = Moved("forked", new_id(), forked_title(conversation), base=conversation.version)
                        self._remember(key, moved)
                        log.info("a conversation changed in two places at once: one copy kept as a new one")
                    fork = self._into(conversation.with_(created_at=conversation.updated_at), moved)
                    if (fork.id, fork.writer) not in self._pending:  # one waiting there came later: newer
                        self._pending[(fork.id, fork.writer)] = fork
                        self._due.add((fork.id, fork.writer))
                elif result is Saved.DELETED:
                    self._remember(key, Moved("deleted"))
                elif result is None:
                    self._remember(key, Moved("refused", why=f"an error in this app ({bug})"))
        with self._cond:
            self._failures = 0
            if not self._errors:
                self._retry_at = None

    @staticmethod
    def _into(conversation: Conversation, fork: Moved) -> Conversation:
        return conversation.with_(id=fork.to, version=0, title=fork.title)

    def _refuse(self, conversation: Conversation, e: StoreError) -> None:
        """The database refused this snapshot's content: retrying can't help, so its page is told
        (the conversation stays on screen, to download) instead of showing "not saved yet" for ever."""
        key = (conversation.id, conversation.writer)
        log.warning("a conversation could not be saved: the database refused its content")
        with self._cond:
            self._errors.pop(key, None)
            if self._pending.get(key) is conversation:
                del self._pending[key]
                self._remember(key, Moved("refused", why=str(e)))

    def _remember(self, key: Key, moved: Moved) -> None:
        self._moved[key] = moved
        self._moved.move_to_end(key)
        while len(self._moved) > MOVES_KEPT:
            self._moved.popitem(last=False)
