"""Breaker states shared by the fleet through Redis (the `BreakerStore` seam of core/breaker.py).

Reads never leave the process: each replica keeps a local copy of every breaker's record, kept
fresh by a pub/sub message on every write (and a resync once a second and on reconnect, in case
one is missed). An `update` whose change leaves the record as it is (a closed breaker admitting a
call, a success with nothing to forget) costs nothing either. Only real changes go to Redis, as a
compare-and-set on the record's version in one Lua script that also publishes the new record: if
another replica wrote first, the local copy takes its record and the change runs again on it. So
claiming the half-open trial (`trial` going from None to a token) succeeds on exactly one replica.

Times in Redis are wall-clock seconds, converted from and to each replica's own monotonic clock.
While Redis is down, the local copy carries on alone (the replica answers on local state); when
Redis is back, Redis's record wins.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from ..breaker import BreakerState
from .shared import Shared

# KEYS: record, channel. ARGV: expected version, new data, breaker name, ttl seconds.
# Returns {1, new version} or {0, current version, current data}.
_CAS = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then
  return {0, v, redis.call('HGET', KEYS[1], 'data') or ''}
end
v = v + 1
redis.call('HSET', KEYS[1], 'v', v, 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[3] .. '\\n' .. v .. '\\n' .. ARGV[2])
return {1, v}
"""
CHANNEL = "breakers"
TTL = 7 * 24 * 3600  # a breaker nobody touched for a week is closed (its key expires)
_CLOSED = BreakerState()


class RedisBreakerStore:
    """Thread-safe. Reads from the local copy; real changes by compare-and-set on Redis."""

    def __init__(self, shared: Shared, *, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.shared = shared
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()  # one writer per process at a time: writes are rare
        self._local: dict[str, tuple[int, BreakerState]] = {}  # name -> (version, record)
        self._cas = shared.client.register_script(_CAS)
        shared.subscribe(CHANNEL, self._message)
        shared.on_reconnect(self._reconnected)
        shared.every_second(self.resync)

    # -- BreakerStore --------------------------------------------------------------------------------
    def read(self, name: str) -> BreakerState:
        entry = self._local.get(name)
        if entry is None:
            entry = self._fetch(name)
        return entry[1]

    def update(self, name: str, change: Callable[[BreakerState], BreakerState]) -> tuple[BreakerState, BreakerState]:
        with self._lock:
            version, old = self._local.get(name) or self._fetch(name)
            for conflicts in itertools.count():  # another replica wrote first: take its record, change that
                if conflicts >= 3:  # a burst of writers (rare: only real changes write); step aside
                    time.sleep(random.uniform(0, 0.001 * min(conflicts, 20)))
                new = change(old)
                if new is old:
                    return old, new
                if not self.shared.available:
                    self._local[name] = (version, new)  # alone until Redis is back; then Redis wins
                    return old, new
                reply = self.shared.call(lambda r, v=version, s=new: self._cas(
                    keys=[self.shared.key("breaker", name), self.shared.key(CHANNEL)],
                    args=[v, self._encode(s), name, TTL], client=r), default=None)
                if reply is None:  # Redis failed just now
                    self._local[name] = (version, new)
                    return old, new
                if int(reply[0]) == 1:
                    self._store(name, int(reply[1]), new)
                    return old, new
                version, old = int(reply[1]), self._decode(reply[2])
                self._store(name, version, old)
        raise AssertionError("unreachable")

    # -- keeping the local copy fresh ------------------------------------------------------------------
    def resync(self) -> None:
        """Read every breaker this replica knows from Redis (a missed message, a reconnect)."""
        names = list(self._local)
        if not names:
            return
        replies = self.shared.call(lambda r: _pipeline(r, [self.shared.key("breaker", n) for n in names]), None)
        if replies is None:
            return
        for name, (version, data) in zip(names, replies):
            self._take(name, int(version or 0), self._decode(data))

    def _reconnected(self) -> None:
        """Redis is back. If it lost everything (a restart: it keeps nothing on disk), the breakers
        this replica kept open or half-open while it was gone are written back before anyone reads
        them as closed; otherwise Redis's records win."""
        names = [n for n, (_, s) in list(self._local.items()) if s.state != _CLOSED.state]
        for name in names:
            with self._lock:
                state = self._local[name][1]
                self.shared.call(lambda r, s=state, n=name: self._cas(
                    keys=[self.shared.key("breaker", n), self.shared.key(CHANNEL)],
                    args=[0, self._encode(s), n, TTL], client=r))  # only where Redis has no record
        self.resync()

    def _fetch(self, name: str) -> tuple[int, BreakerState]:
        reply = self.shared.call(lambda r: r.hmget(self.shared.key("breaker", name), "v", "data"), None)
        entry = (0, _CLOSED) if reply is None else (int(reply[0] or 0), self._decode(reply[1]))
        self._local.setdefault(name, entry)
        return self._local[name]

    def _message(self, payload: bytes) -> None:
        name, version, data = payload.decode().split("\n", 2)
        self._take(name, int(version), self._decode(data))

    def _take(self, name: str, version: int, state: BreakerState) -> None:
        """Newer news from Redis replaces the local copy; a key that expired (version 0) closes it."""
        with self._lock:
            current = self._local.get(name)
            # Equal versions too: a record changed here while Redis was down gives way to Redis's.
            if current is None or version >= current[0] or version == 0:
                self._store(name, version, state)

    def _store(self, name: str, version: int, state: BreakerState) -> None:
        self._local[name] = (version, state)

    # -- the record in Redis ------------------------------------------------------------------------------
    def _encode(self, s: BreakerState) -> str:
        row = asdict(s)
        if s.open_until:
            row["open_until"] = s.open_until - self._clock() + self._wall()
        return json.dumps(row)

    def _decode(self, data: bytes | str | None) -> BreakerState:
        if not data:
            return _CLOSED
        try:
            row = json.loads(data)
            s = BreakerState(**row)
        except (ValueError, TypeError):
            return _CLOSED  # a record this version can't read: start closed rather than crash
        if s.open_until:
            s = replace(s, open_until=s.open_until - self._wall() + self._clock())
        return s


def _pipeline(r, keys: list[str]) -> list:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "v", "data")
    return pipe.execute()
