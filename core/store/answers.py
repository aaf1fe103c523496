"""Stale answers kept on disk, so stale-if-error still has something to stand in with after a
restart. Only complete answers are written, keyed like the cache (core/cache.py `cache_key`).

`AnswerStore` is the interface a backend implements (one contract suite runs against each);
`SqlAnswerStore` is the backend, on the app's `Database`. `StaleAnswers` is what the router uses:
`put()` hands an answer to a `BatchWriter` (the request thread never writes), `stale()` reads one
back when no provider can answer and the memory cache has nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..messages import Usage, clean_text
from .errors import StoreError
from .sql import Database, create, metadata, migration
from .writer import BatchWriter

log = logging.getLogger("understudy")
_CLEAR: Any = object()  # queued by StaleAnswers.clear()
PRUNE_EVERY = 600.0  # seconds (wall clock) between prunes while answers keep coming

answers_table = sa.Table(
    "answers", metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 hex of the request
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("usage", sa.Text, nullable=True),  # JSON {input_tokens, output_tokens} or null
    sa.Column("stored_at", sa.Float, nullable=False),  # wall-clock seconds
    sa.Index("ix_answers_stored_at", "stored_at"),
)
migration(4)(create(answers_table))


@dataclass(frozen=True)
class StoredAnswer:
    key: str
    text: str
    provider: str
    model: str
    usage: Usage | None
    stored_at: float  # wall-clock seconds


class AnswerStore(Protocol):
    """Every method either does what it says or raises StoreError."""

    def write(self, answers: Sequence[StoredAnswer]) -> None:
        """Keep these answers, all or none (one transaction); a key's newest answer replaces its older one."""

    def get(self, key: str) -> StoredAnswer | None: ...

    def clear(self) -> None:
        """Delete every answer."""

    def prune(self, *, before: float, max_rows: int) -> int:
        """Delete answers stored before `before`, then the oldest beyond `max_rows`; how many."""

    def close(self) -> None: ...


class SqlAnswerStore:
    """Stale answers in the database (a `Database`, or a URL to open one). Thread-safe."""

    def __init__(self, db: Database | str) -> None:
        self._owned = not isinstance(db, Database)
        self.db = Database(db) if self._owned else db
        self.where = self.db.where

    def write(self, answers: Sequence[StoredAnswer]) -> None:
        newest: dict[str, StoredAnswer] = {}
        for a in answers:  # one row per key: an upsert may not touch a row twice
            if a.key not in newest or a.stored_at >= newest[a.key].stored_at:
                newest[a.key] = a
        if not newest:
            return
        rows = [{"key": a.key, "text": a.text, "provider": a.provider, "model": a.model,
                 "usage": json.dumps(a.usage.as_dict()) if a.usage is not None else None, "stored_at": a.stored_at}
                for a in newest.values()]
        insert = (sqlite if self.db.is_sqlite else postgresql).insert(answers_table)
        t = insert.excluded
        upsert = insert.on_conflict_do_update(
            index_elements=[answers_table.c.key],
            set_={"text": t.text, "provider": t.provider, "model": t.model, "usage": t.usage, "stored_at": t.stored_at},
            where=answers_table.c.stored_at <= t.stored_at)  # another replica's newer answer stays
        with self._errors("write"), self.db.begin() as conn:
            conn.execute(upsert, rows)

    def get(self, key: str) -> StoredAnswer | None:
        with self._errors("read"), self.db.connect() as conn:
            row = conn.execute(sa.select(answers_table).where(answers_table.c.key == key)).first()
        if row is None:
            return None
        m = row._mapping
        usage = Usage(**json.loads(m["usage"])) if m["usage"] else None
        return StoredAnswer(m["key"], m["text"], m["provider"], m["model"], usage, m["stored_at"])

    def clear(self) -> None:
        with self._errors("clear"), self.db.begin() as conn:
            conn.execute(answers_table.delete())

    def prune(self, *, before: float, max_rows: int) -> int:
        t = answers_table
        with self._errors("prune"), self.db.begin() as conn:
            n = conn.execute(t.delete().where(t.c.stored_at < before)).rowcount
            cutoff = conn.scalar(sa.select(t.c.stored_at).order_by(t.c.stored_at.desc(), t.c.key.desc())
                                 .offset(max_rows).limit(1))
            if cutoff is not None:  # more than max_rows: the oldest go (ties at the cutoff too)
                n += conn.execute(t.delete().where(t.c.stored_at <= cutoff)).rowcount
            return n

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def _errors(self, doing: str):
        return self.db.errors(doing, "the answer store")


class StaleAnswers:
    """The router's durable stale answers: written off the request thread, read when no provider
    can answer. At most `max_rows` are kept, none older than `stale_ttl` seconds (judged from wall
    time, so it holds across restarts); with `stale_ttl` 0 nothing is kept."""

    def __init__(self, store: AnswerStore, *, stale_ttl: float, max_rows: int, wall: Callable[[], float] = time.time,
                 max_backlog: int = 1000, batch: int = 100, interval: float = 0.5) -> None:
        self.store, self.stale_ttl, self.max_rows, self.wall = store, stale_ttl, max_rows, wall
        self._pruned_at = -float("inf")
        self._writer: BatchWriter[StoredAnswer] | None = None
        if stale_ttl > 0:
            self._writer = BatchWriter(self._write, name="stale answers", max_backlog=max_backlog, batch=batch,
                                       interval=interval)

    def put(self, key: str, text: str, provider: str, model: str, usage: Usage | None) -> None:
        """Keep a complete answer (queued: never blocks, never raises)."""
        if self._writer is not None:
            # A provider may answer with a lone surrogate (a JSON escape): no database takes it raw.
            self._writer.put(StoredAnswer(key, clean_text(text), provider, model, usage, self.wall()))

    def clear(self) -> None:
        """Forget every kept answer (the Status page's Clear cache): queued in order with the
        answers before it, so none of those comes back after it."""
        if self._writer is not None:
            self._writer.put(_CLEAR, force=True)

    def stale(self, key: str) -> tuple[StoredAnswer, float] | None:
        """(answer, its age in seconds) if one younger than `stale_ttl` is kept; None otherwise,
        also when the store can't be read (logged: the caller carries on to the next tier)."""
        if self._writer is None:
            return None
        try:
            answer = self.store.get(key)
        except StoreError as e:
            log.warning("stale answers unavailable: %s", e)
            return None
        if answer is None:
            return None
        age = max(0.0, self.wall() - answer.stored_at)
        return (answer, age) if age < self.stale_ttl else None

    def health(self) -> dict:
        return self._writer.health() if self._writer is not None else {"status": "off"}

    def flush(self, timeout: float = 10.0) -> bool:
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self, timeout: float = 5.0) -> None:
        if self._writer is not None:
            self._writer.close(timeout)

    def _write(self, items: list[StoredAnswer]) -> None:
        answers: list[StoredAnswer] = []
        for item in items:
            if item is _CLEAR:  # written again on a retry: both steps are idempotent
                self.store.write(answers)
                answers = []
                self.store.clear()
            else:
                answers.append(item)
        self.store.write(answers)
        if self.wall() - self._pruned_at >= PRUNE_EVERY:
            try:
                self.store.prune(before=self.wall() - self.stale_ttl, max_rows=self.max_rows)
            except StoreError as e:  # the answers are written; pruning is tried again next time
                log.warning("could not prune the stale answers: %s", e)
                return
            self._pruned_at = self.wall()
