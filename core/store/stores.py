"""One process's stores, one per kind of state, chosen from the `[store]` settings.

Embedded (no setup): the `Database` is SQLite in the data directory; breakers, the fresh answer
cache, chaos and probe scheduling live in this process. Fleet: a Redis URL adds `shared`, and the
in-process kinds move to Redis, so every replica on that Redis sees the same breakers, cache,
chaos and probes, and the Status page sees every replica's traffic. A `Database` URL moves the
durable kinds to PostgreSQL. Whatever the backend, each kind answers the same small interface.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import database_url, redis_url, replica_name
from .answers import AnswerStore, SqlAnswerStore
from .history import HistoryStore, SqlHistory
from .shared import Shared
from .sql import Database

# Namespaces every key and channel: several fleets (or test runs) can share one Redis.
REDIS_PREFIX_ENV = "UNDERSTUDY_REDIS_PREFIX"

if TYPE_CHECKING:
    from ..breaker import BreakerStore
    from ..config import Store


@dataclass
class Stores:
    database: Database  # conversations, kept questions, metrics history, stale answers
    replica: str  # this process's name in the fleet's metrics
    shared: Shared | None = None  # the fleet's Redis; None: one process
    breakers: BreakerStore | None = None  # None: in this process (core.breaker.MemoryBreakerStore)
    extras: dict[str, Any] = field(default_factory=dict)
    history: HistoryStore | None = None  # the metrics history; None: on `database`
    answers: AnswerStore | None = None  # stale answers that outlive the process; None: on `database`

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = SqlHistory(self.database)
        if self.answers is None:
            self.answers = SqlAnswerStore(self.database)

    @property
    def fleet(self) -> bool:
        return self.shared is not None

    def health(self) -> dict:
        """{"database": where, "shared": {"status": "off"} or the Redis health}."""
        return {"database": self.database.where,
                "shared": self.shared.health() if self.shared is not None else {"status": "off"}}

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        self.database.close()


def open_stores(settings: Store | Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                replica: str | None = None, prefix: str = "understudy", clock: Callable[[], float] = time.monotonic,
                wall: Callable[[], float] = time.time) -> Stores:
    """The stores these settings name. Never raises for a server that is down: each store reports
    its failures when used, and Redis reconnects by itself."""
    raw = settings if isinstance(settings, Mapping) or settings is None else asdict(settings)
    database = Database(database_url(raw, env))
    stores = Stores(database=database, replica=replica or replica_name(env))
    url = redis_url(raw, env)
    if url:
        prefix = ((env if env is not None else os.environ).get(REDIS_PREFIX_ENV) or prefix).strip() or prefix
        stores.shared = Shared(url, prefix=prefix, clock=clock, wall=wall)
    return stores
