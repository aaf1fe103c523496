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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import database_url, redis_url, replica_name
from .breakers import RedisBreakerStore
from .fleet import FleetEvents, ProbeLeases, SharedAnswers, SharedChaos
from .answers import AnswerStore, SqlAnswerStore
from .history import HistoryStore, SqlHistory
from .shared import Shared
from .sql import Database

# Namespaces every key and channel: several fleets (or test runs) can share one Redis.
REDIS_PREFIX_ENV = "UNDERSTUDY_REDIS_PREFIX"

if TYPE_CHECKING:
    from ..breaker import BreakerStore
    from ..chaos import Chaos
    from ..config import Store
    from ..metrics import Metrics


@dataclass
class Stores:
    database: Database  # conversations, kept questions, metrics history, stale answers
    replica: str  # this process's name in the fleet's metrics
    shared: Shared | None = None  # the fleet's Redis; None: one process
    breakers: BreakerStore | None = None  # None: in this process (core.breaker.MemoryBreakerStore)
    cached: SharedAnswers | None = None  # the fleet's answer cache in Redis; None: this process's only
    leases: ProbeLeases | None = None  # who probes which provider this interval; None: this process does
    events: FleetEvents | None = None  # the fleet's metrics stream (`share_metrics`)
    chaos: SharedChaos | None = None  # keeps this process's chaos in step (`share_chaos`)
    history: HistoryStore | None = None  # the metrics history; None: on `database`
    answers: AnswerStore | None = None  # stale answers that outlive the process; None: on `database`
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = SqlHistory(self.database)
        if self.answers is None:
            self.answers = SqlAnswerStore(self.database)

    def share_chaos(self, chaos: Chaos) -> None:
        """In a fleet, keep `chaos` the same on every replica."""
        if self.shared is not None and self.chaos is None:
            self.chaos = SharedChaos(chaos, self.shared, clock=self.clock, wall=self.wall)

    def share_metrics(self, metrics: Metrics, *, max_events: int) -> Metrics:
        """In a fleet, send `metrics`' events to the fleet's stream; the Metrics that shows the whole
        fleet (just `metrics` for one process)."""
        if self.shared is None:
            return metrics
        if self.events is None:
            self.events = FleetEvents(self.shared, max_events=max_events, wall=self.wall)
            metrics.add_sink(self.events.record)
        return self.events.view

    @property
    def fleet(self) -> bool:
        return self.shared is not None

    def health(self) -> dict:
        """{"database": where, "shared": {"status": "off"} or the Redis health}."""
        return {"database": self.database.where,
                "shared": self.shared.health() if self.shared is not None else {"status": "off"}}

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
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
    stores = Stores(database=database, replica=replica or replica_name(env), clock=clock, wall=wall)
    url = redis_url(raw, env)
    if url:
        prefix = ((env if env is not None else os.environ).get(REDIS_PREFIX_ENV) or prefix).strip() or prefix
        shared = stores.shared = Shared(url, prefix=prefix, clock=clock, wall=wall)
        stores.breakers = RedisBreakerStore(shared, clock=clock, wall=wall)
        stores.cached = SharedAnswers(shared, clock=clock, wall=wall)
        stores.leases = ProbeLeases(shared, stores.replica)
    return stores
