"""The durable store's database: one SQLAlchemy Core engine per URL, SQLite (the zero-setup
default, a file in the app's data directory) or PostgreSQL, and the schema migrations that bring
it up to date by themselves on first use.

Each kind of state declares its tables on `metadata` in its own module and registers the step that
creates them with `migration(version)`; `Database.migrate` runs the ones not applied yet, in version
order, each in the transaction that records it, so two processes starting together apply each
step once (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock).
"""

from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from .errors import StoreError, describe

metadata = sa.MetaData()
migrations_table = sa.Table(
    "understudy_migrations", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

# version -> step. Versions are taken in this order: 1 followups, 2 conversations, 3 metrics
# history, 4 stale answers, 5 conversation versions and tombstones. A new step gets the next number and never changes once released.
_STEPS: dict[int, Callable[[sa.Connection], None]] = {}
# The modules that register steps; imported before migrating so every table is known.
_MODULES = ("followups", "conversations", "history", "answers")
_ADVISORY_KEY = 0x756E6465  # "unde": serialises migrations across PostgreSQL clients


def migration(version: int):
    """Register `step(conn)` as schema version `version`."""
    def register(step: Callable[[sa.Connection], None]):
        if version in _STEPS and _STEPS[version] is not step:
            raise RuntimeError(f"two migrations claim version {version}")
        _STEPS[version] = step
        return step
    return register


def create(*tables: sa.Table) -> Callable[[sa.Connection], None]:
    """A step that creates these tables (and their indexes) if they don't exist."""
    def step(conn: sa.Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)
    return step


def add_columns(table: sa.Table, *names: str) -> Callable[[sa.Connection], None]:
    """A step that adds these columns of `table` (as declared there) where they are missing. A
    database created after the columns were declared has them already (its create step made them)."""
    def step(conn: sa.Connection) -> None:
        have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for name in names:
            if name not in have:
                column = sa.schema.CreateColumn(table.c[name]).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} "
                                     f"ADD COLUMN {column}"))
    return step


class Database:
    """Thread-safe (the engine's pool hands each thread its own connection). Until the schema is
    up to date, every use tries to bring it there again, so a database that was down at start
    is used as soon as it answers."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.where = shown_url(url)
        self._clock = clock
        self._ready = False
        self._lock = threading.Lock()
        self._unusable: StoreError | None = None
        try:
            self.url = sa.make_url(url)
            self.engine = _engine(self.url)
        except Exception as e:  # noqa: BLE001 — a malformed URL, a missing driver
            # Raised at every use rather than here, so whoever holds the database can report it.
            self._unusable = StoreError(f"can't use the database at {self.where} ({describe(e)})")
            self.url, self.engine = sa.make_url("sqlite://"), None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def migrate(self) -> None:
        if self._unusable is not None:
            raise self._unusable
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            for name in _MODULES:
                importlib.import_module(f"{__package__}.{name}")
            with self.errors("open"):
                if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
                    Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
                with self.engine.begin() as conn:
                    if not self.is_sqlite:
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
                    migrations_table.create(conn, checkfirst=True)
                    done = set(conn.scalars(sa.select(migrations_table.c.version)))
                    for version in sorted(_STEPS):
                        if version not in done:
                            _STEPS[version](conn)
                            conn.execute(migrations_table.insert().values(version=version, applied_at=self._clock()))
            self._ready = True

    def schema_version(self) -> int:
        self.migrate()
        with self.errors("read"), self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.max(migrations_table.c.version))) or 0

    def begin(self):
        """A transaction, after making sure the schema is there. Use inside `errors(...)`."""
        self.migrate()
        return self.engine.begin()

    def connect(self):
        self.migrate()
        return self.engine.connect()

    def errors(self, doing: str, what: str = "the store") -> _map_errors:
        return _map_errors(f"can't {doing} {what} at {self.where}")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


class _map_errors:
    """Any database or file-system failure becomes one StoreError with a short reason."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        # UnicodeError: text the connection's encoding can't carry (also raised by the driver itself).
        if e is None or isinstance(e, StoreError) or not isinstance(e, (sa.exc.SQLAlchemyError, OSError,
                                                                         UnicodeError)):
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
        # A dead server must not hold a user's request for long: connect within 3 s, and check a
        # pooled connection before use (it may be from before a restart). A connection whose peer
        # went silent (a failover, a lost NAT entry) fails within about 15 s instead of the
        # kernel's 15 minutes: TCP keepalives, and a limit on unacknowledged sends. Text goes as
        # UTF-8 whatever the server's default, so a non-UTF-8 server refuses what it can't hold
        # (a clear error) rather than the driver failing to encode it.
        return sa.create_engine(url, pool_pre_ping=True, connect_args={
            "connect_timeout": 3, "client_encoding": "utf8", "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15_000})
    # A file database: QueuePool, check_same_thread off (SQLAlchemy's default for files). Wait up to
    # 10 s for another writer (another process on the same file) rather than fail at once.
    engine = sa.create_engine(url, connect_args={"timeout": 10})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        # Take transaction control from Python 3.11's sqlite3 (which skips BEGIN before DDL and
        # SELECT) so every transaction, schema changes included, is real and atomic.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _wal(cur)  # readers never block the writer
        cur.execute("PRAGMA synchronous=FULL")  # a kept question survives a power cut, not only a crash
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # IMMEDIATE takes the write lock up front: two processes migrating or writing at once wait
        # for each other (busy timeout) instead of failing on a lock upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(cur, *, wait: float = 10.0) -> None:
    """Put the file in WAL mode. SQLite answers "database is locked" at once, without its busy
    timeout, when two connections switch a new file to WAL together (two processes starting on a
    fresh data directory): wait and try again, as the busy timeout would."""
    end = time.monotonic() + wait
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > end:
                raise
            time.sleep(0.01)
