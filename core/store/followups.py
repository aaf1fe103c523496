"""Kept questions: what nobody could answer, saved so someone can get back to the user.

`FollowUpStore` is the interface every backend implements (the same contract tests run against
each); `SqlFollowUpStore` is the one backend so far, SQLAlchemy Core over SQLite (the zero-setup
default, a file in the app's data directory) or PostgreSQL (a `postgresql+psycopg://` URL).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy import event

from .errors import StoreError, describe


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


_metadata = sa.MetaData()
_migrations = sa.Table(
    "understudy_migrations", _metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
_followups = sa.Table(
    "followups", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("asked_at", sa.Float, nullable=False),
    sa.Column("why", sa.Text, nullable=False, default=""),
    sa.Column("conversation_id", sa.Text, nullable=False, default=""),
    sa.Column("who", sa.Text, nullable=False, default=""),
    sa.Column("answered_at", sa.Float, nullable=True),
    sa.Index("ix_followups_asked_at", "asked_at"),
)


def _v1(conn: sa.Connection) -> None:
    _followups.create(conn, checkfirst=True)


# (version, step): each runs once, in order, in the same transaction that records it.
MIGRATIONS = ((1, _v1),)


class SqlFollowUpStore:
    """Thread-safe (the engine's pool hands each thread its own connection). The schema is created
    or brought up to date by itself on first use; until that succeeds every call retries it."""

    def __init__(self, url: str, *, clock=None) -> None:
        self.where = shown_url(url)
        self._clock = clock or time.time
        self._ready = False
        self._lock = threading.Lock()
        try:
            self.url = sa.make_url(url)
            self.engine = _engine(self.url)
        except Exception as e:  # noqa: BLE001 — a malformed URL, a missing driver
            raise StoreError(f"can't use the follow-up store at {self.where} ({describe(e)})") from e

    def migrate(self) -> None:
        with self._lock:
            if self._ready:
                return
            with self._errors("open"):
                if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
                    Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
                with self.engine.begin() as conn:
                    _migrations.create(conn, checkfirst=True)
                    done = set(conn.scalars(sa.select(_migrations.c.version)))
                    for version, step in MIGRATIONS:
                        if version not in done:
                            step(conn)
                            conn.execute(_migrations.insert().values(version=version, applied_at=self._clock()))
            self._ready = True

    def schema_version(self) -> int:
        self.migrate()
        with self._errors("read"), self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.max(_migrations.c.version))) or 0

    def add(self, question: str, *, asked_at: float, why: str = "", conversation_id: str = "",
            who: str = "") -> int:
        self.migrate()
        with self._errors("save a question in"), self.engine.begin() as conn:
            row = conn.execute(_followups.insert().values(
                question=question, asked_at=asked_at, why=why, conversation_id=conversation_id, who=who,
            ).returning(_followups.c.id))
            return int(row.scalar_one())

    def list(self, *, answered: bool | None = None, search: str = "", limit: int | None = None) -> list[FollowUp]:
        self.migrate()
        q = sa.select(_followups).order_by(_followups.c.asked_at.desc(), _followups.c.id.desc())
        if answered is not None:
            q = q.where(_followups.c.answered_at.is_not(None) if answered else _followups.c.answered_at.is_(None))
        if search.strip():
            q = q.where(_followups.c.question.icontains(search.strip(), autoescape=True))
        if limit is not None:
            q = q.limit(limit)
        with self._errors("read"), self.engine.connect() as conn:
            return [FollowUp(**row._mapping) for row in conn.execute(q)]

    def mark_answered(self, id: int, *, at: float) -> bool:
        self.migrate()
        t = _followups
        with self._errors("update"), self.engine.begin() as conn:
            found = conn.execute(sa.select(t.c.id).where(t.c.id == id)).first() is not None
            conn.execute(t.update().where(t.c.id == id, t.c.answered_at.is_(None)).values(answered_at=at))
            return found

    def close(self) -> None:
        self.engine.dispose()

    def _errors(self, doing: str):
        return _map_errors(f"can't {doing} the follow-up store at {self.where}")


class _map_errors:
    """Any database or file-system failure becomes one StoreError with a short reason."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, StoreError) or not isinstance(e, (sa.exc.SQLAlchemyError, OSError)):
            return False
        raise StoreError(f"{self.what} ({describe(e)})") from e


def shown_url(url: str) -> str:
    """A store URL for people: the password is never shown."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — malformed: show nothing of it rather than a secret
        return "(a malformed database URL)"


def _engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    # A file database: QueuePool, check_same_thread off (SQLAlchemy's default for files). Wait up to
    # 10 s for another writer (another process on the same file) rather than fail at once.
    engine = sa.create_engine(url, connect_args={"timeout": 10})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        # Take transaction control from Python 3.11's sqlite3 (which skips BEGIN before DDL and
        # SELECT) so every transaction, schema changes included, is real and atomic.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cur.execute("PRAGMA synchronous=FULL")  # a kept question survives a power cut, not only a crash
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # IMMEDIATE takes the write lock up front: two processes migrating or writing at once wait
        # for each other (busy timeout) instead of failing on a lock upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
