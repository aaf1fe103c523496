"""Metrics history: every metrics event, written in batches off the request thread, so the
dashboard's history survives a restart (and, on PostgreSQL, is the whole fleet's).

`HistoryStore` is the interface a backend implements (one contract suite runs against each);
`SqlHistory` is the backend, on the app's `Database`. `History` joins it to a process's `Metrics`:
at start it seeds them with the events of the metrics window from before the start, then it hands
every event this process records to a `BatchWriter`, and prunes what is older than the retention.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import sqlalchemy as sa

from ..metrics import EVENT_TYPES, Event, Metrics, as_row, from_row
from .errors import StoreError
from .sql import Database, create, metadata, migration
from .writer import BatchWriter

log = logging.getLogger("understudy")
DAY = 86400.0
PRUNE_EVERY = 3600.0  # seconds (wall clock) between prunes while events keep coming

events_table = sa.Table(
    "metrics_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),  # wall-clock seconds
    sa.Column("replica", sa.Text, nullable=False, default=""),
    sa.Column("kind", sa.String(16), nullable=False),  # attempt | request | probe | transition
    sa.Column("data", sa.Text, nullable=False),  # the event's fields as JSON
    sa.Index("ix_metrics_events_at", "at"),
)
migration(3)(create(events_table))


class HistoryStore(Protocol):
    """Every method either does what it says or raises StoreError."""

    def write(self, events: Sequence[Event]) -> None:
        """Append these events, all or none (one transaction)."""

    def read(self, *, since: float, until: float | None = None, limit: int | None = None,
             kinds: Sequence[str] | None = None) -> list[Event]:
        """Events with `since <= at < until`, oldest first; with `limit`, the newest `limit` of them;
        with `kinds`, only events of those types ("attempt", "request", "probe", "transition")."""

    def prune(self, *, before: float) -> int:
        """Delete events older than `before`; how many."""

    def close(self) -> None: ...


class SqlHistory:
    """Metrics history in the database (a `Database`, or a URL to open one). Thread-safe."""

    def __init__(self, db: Database | str) -> None:
        self._owned = not isinstance(db, Database)
        self.db = Database(db) if self._owned else db
        self.where = self.db.where

    def write(self, events: Sequence[Event]) -> None:
        rows = []
        for e in events:
            row = as_row(e)
            rows.append({"at": e.at, "replica": e.replica, "kind": row["type"], "data": json.dumps(row)})
        if not rows:
            return
        with self._errors("write"), self.db.begin() as conn:
            conn.execute(events_table.insert(), rows)

    def read(self, *, since: float, until: float | None = None, limit: int | None = None,
             kinds: Sequence[str] | None = None) -> list[Event]:
        t = events_table
        q = sa.select(t.c.data).where(t.c.at >= since).order_by(t.c.at.desc(), t.c.id.desc())
        if until is not None:
            q = q.where(t.c.at < until)
        if kinds is not None:
            q = q.where(t.c.kind.in_(list(kinds)))
        if limit is not None:
            q = q.limit(limit)
        with self._errors("read"), self.db.connect() as conn:
            data = list(conn.scalars(q))
        events = []
        for text in reversed(data):
            try:
                events.append(from_row(json.loads(text)))
            except ValueError:  # a row no reader could use (json's errors are ValueErrors too): skip it
                continue
        return events

    def prune(self, *, before: float) -> int:
        with self._errors("prune"), self.db.begin() as conn:
            return conn.execute(events_table.delete().where(events_table.c.at < before)).rowcount

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def _errors(self, doing: str):
        return self.db.errors(doing, "the metrics history")


class History:
    """A process's metrics history: seeds `metrics` from `store` and writes what it records there.

    Only events this process recorded (its `replica`) are written: events from other replicas are
    theirs to write, and the seeded ones are already there, so nothing is counted twice. Seeding
    reads only events from before this process started, and runs before the first write: at
    construction, or, if the database is down then, on the writer's thread when it is back. With
    `keep_days` 0 nothing is read or written."""

    def __init__(self, store: HistoryStore, metrics: Metrics, *, keep_days: float, window: float,
                 wall: Callable[[], float] = time.time, max_backlog: int = 10_000, batch: int = 200,
                 interval: float = 0.5) -> None:
        self.store, self.metrics = store, metrics
        self.keep_days, self.window, self.wall = keep_days, window, wall
        self.replica = metrics.replica
        self.started_at = wall()
        self.seeded = 0  # events read back at start
        self._pruned_at = -float("inf")
        self._writer: BatchWriter[Event] | None = None
        if keep_days > 0:
            # Seeded now, so the dashboard's first view after a restart has its history; if the
            # database can't be read yet, the writer tries again before it writes anything.
            try:
                self._seed()
                retry: Callable[[], None] | None = None
            except StoreError as e:
                log.warning("metrics history not read at start (tried again in the background): %s", e)
                retry = self._seed
            self._writer = BatchWriter(self._write, name="metrics history", prepare=retry,
                                       max_backlog=max_backlog, batch=batch, interval=interval)
            metrics.add_sink(self._record)

    def health(self) -> dict:
        """The writer's health ("status": "ok" | "failing", "backlog", "dropped", "last_error"), or
        {"status": "off"}."""
        return self._writer.health() if self._writer is not None else {"status": "off"}

    def period(self, since: float, kinds: Sequence[str], also: Iterable[Event] = ()) -> list[Event]:
        """Events of these kinds since `since`, oldest first: the stored ones (every replica's, on a
        shared database) with `also` (what is in memory now, not all written yet), each once. With
        no history kept, or the database unreadable, `also` alone: what is shown is still right, it
        just starts later."""
        wanted = tuple(EVENT_TYPES[k] for k in kinds)
        fresh = {e for e in also if isinstance(e, wanted) and e.at >= since}
        stored: list[Event] = []
        if self.keep_days > 0:
            try:
                stored = self.store.read(since=since, kinds=kinds)
            except StoreError as e:
                log.warning("metrics history not read: %s", e)
        return sorted(fresh.union(stored), key=lambda e: e.at)

    def flush(self, timeout: float = 10.0) -> bool:
        """Seeded, and every event recorded so far written (see BatchWriter.flush)."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self, timeout: float = 5.0) -> None:
        if self._writer is not None:
            self._writer.close(timeout)

    def _record(self, event: Event) -> None:
        if event.replica == self.replica:
            self._writer.put(event)

    def _seed(self) -> None:
        events = self.store.read(since=self.wall() - self.window, until=self.started_at,
                                 limit=self.metrics.max_events or None)
        self.seeded = self.metrics.seed(events)
        self._prune()

    def _write(self, events: list[Event]) -> None:
        self.store.write(events)
        if self.wall() - self._pruned_at >= PRUNE_EVERY:
            self._prune()

    def _prune(self) -> None:
        try:
            self.store.prune(before=self.wall() - self.keep_days * DAY)
        except StoreError as e:  # the events are written; pruning is tried again next time
            log.warning("could not prune the metrics history: %s", e)
            return
        self._pruned_at = self.wall()
