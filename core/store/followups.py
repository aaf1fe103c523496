"""Kept questions: what nobody could answer, saved so someone can get back to the user.

`FollowUpStore` is the interface every backend implements (the same contract tests run against
each); `SqlFollowUpStore` is the one backend, on the app's `Database` (SQLite by default,
PostgreSQL by URL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import sqlalchemy as sa

from .sql import Database, create, metadata, migration


@dataclass(frozen=True)
class FollowUp:
    id: int
    question: str
    asked_at: float  # unix seconds
    why: str = ""  # why nothing could answer
    conversation_id: str = ""
    who: str = ""
    answered_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def as_dict(self) -> dict:
        return {**asdict(self), "answered": self.answered}


class FollowUpStore(Protocol):
    """Every method either does what it says, durably, or raises StoreError."""

    def add(self, question: str, *, asked_at: float, why: str = "", conversation_id: str = "",
            who: str = "") -> int:
        """Keep a question (one transaction); its id."""

    def list(self, *, answered: bool | None = None, search: str = "", limit: int | None = None) -> list[FollowUp]:
        """Newest first. `answered` None: all; `search`: case-insensitive substring of the question."""

    def mark_answered(self, id: int, *, at: float) -> bool:
        """False when there is no such question (marking an answered one again keeps the first time)."""

    def close(self) -> None: ...


_followups = sa.Table(
    "followups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("asked_at", sa.Float, nullable=False),
    sa.Column("why", sa.Text, nullable=False, default=""),
    sa.Column("conversation_id", sa.Text, nullable=False, default=""),
    sa.Column("who", sa.Text, nullable=False, default=""),
    sa.Column("answered_at", sa.Float, nullable=True),
    sa.Index("ix_followups_asked_at", "asked_at"),
)
migration(1)(create(_followups))
followups_table = _followups  # a conversation's delete takes its kept questions with it


class SqlFollowUpStore:
    """Kept questions in the database (a `Database`, or a URL to open one). Thread-safe."""

    def __init__(self, db: Database | str) -> None:
        self._owned = not isinstance(db, Database)  # a URL: this store opened the database, and closes it
        self.db = Database(db) if self._owned else db
        self.where = self.db.where

    def migrate(self) -> None:
        self.db.migrate()

    def schema_version(self) -> int:
        return self.db.schema_version()

    def add(self, question: str, *, asked_at: float, why: str = "", conversation_id: str = "",
            who: str = "") -> int:
        with self._errors("save a question in"), self.db.begin() as conn:
            row = conn.execute(_followups.insert().values(
                question=question, asked_at=asked_at, why=why, conversation_id=conversation_id, who=who,
            ).returning(_followups.c.id))
            return int(row.scalar_one())

    def list(self, *, answered: bool | None = None, search: str = "", limit: int | None = None) -> list[FollowUp]:
        q = sa.select(_followups).order_by(_followups.c.asked_at.desc(), _followups.c.id.desc())
        if answered is not None:
            q = q.where(_followups.c.answered_at.is_not(None) if answered else _followups.c.answered_at.is_(None))
        if search.strip():
            q = q.where(_followups.c.question.icontains(search.strip(), autoescape=True))
        if limit is not None:
            q = q.limit(limit)
        with self._errors("read"), self.db.connect() as conn:
            return [FollowUp(**row._mapping) for row in conn.execute(q)]

    def mark_answered(self, id: int, *, at: float) -> bool:
        t = _followups
        with self._errors("update"), self.db.begin() as conn:
            found = conn.execute(sa.select(t.c.id).where(t.c.id == id)).first() is not None
            conn.execute(t.update().where(t.c.id == id, t.c.answered_at.is_(None)).values(answered_at=at))
            return found

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def _errors(self, doing: str):
        return self.db.errors(doing, "the follow-up store")
