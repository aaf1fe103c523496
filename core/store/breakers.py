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
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from ..breaker import CLOSED, HALF_OPEN, OPEN, BreakerState
from .shared import Shared, wall_offset

# KEYS: record, channel. ARGV: expected version (-1: whatever is there), new data, breaker name.
# Returns {1, new version} or {0, current version, current data}. A key that isn't a readable
# record (another type, a version that isn't a number) counts as no record: it is overwritten.
_CAS = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') or 0
local expected = tonumber(ARGV[1])
if expected ~= -1 and v ~= expected then
  return {0, v, redis.call('HGET', KEYS[1], 'data') or ''}
end
v = v + 1
redis.call('HSET', KEYS[1], 'v', v, 'data', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3] .. '\\n' .. v .. '\\n' .. ARGV[2])
return {1, v}
"""
CHANNEL = "breakers"
STATES = (CLOSED, OPEN, HALF_OPEN)
_CLOSED = BreakerState()


class RedisBreakerStore:
    """Thread-safe. Reads from the local copy; real changes by compare-and-set on Redis."""

    def __init__(self, shared: Shared, *, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.shared = shared
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()  # one writer per process at a time: writes are rare
        self._local: dict[str, tuple[int, BreakerState]] = {}  # name -> (version, record)
        self._unsent: set[str] = set()  # changed here while Redis was down: sent when it is back
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
                reply = self._write(name, version, new) if self.shared.available else None
                if reply is None:  # Redis is down, or failed just now: alone until it is back
                    self._local[name] = (version, new)
                    self._unsent.add(name)
                    return old, new
                if reply[0] == 1:
                    self._local[name] = (reply[1], new)
                    return old, new
                version, old = reply[1], reply[2]
                self._local[name] = (version, old)
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
        for name, reply in zip(names, replies):
            if isinstance(reply, list):  # else an error for that key alone (e.g. another type)
                self._take(name, *self._parse(*reply))

    def _reconnected(self) -> None:
        """Redis is back. What this replica changed while it was gone (an operator's reset, a
        breaker it opened) is sent first, the latest change winning; so are the breakers it keeps
        open while Redis, restarted empty, has no record of them. Then the local copies resync."""
        with self._lock:
            for name, (_, state) in list(self._local.items()):
                if name in self._unsent:
                    reply = self._write(name, -1, state)  # over whatever is there
                elif state.state != CLOSED:
                    reply = self._write(name, 0, state)  # only where Redis has no record
                else:
                    continue
                if reply is None:
                    return  # down again: the next reconnect tries again
                self._unsent.discard(name)
                if reply[0] == 1:
                    self._local[name] = (reply[1], state)
        self.resync()

    def _write(self, name: str, version: int, state: BreakerState) -> tuple | None:
        """Compare-and-set: (1, new version), (0, their version, their record), or None (Redis failed)."""
        reply = self.shared.call(lambda r: self._cas(
            keys=[self.shared.key("breaker", name), self.shared.key(CHANNEL)],
            args=[version, self._encode(state), name], client=r), None)
        if reply is None:
            return None
        if int(reply[0]) == 1:
            return 1, int(reply[1])
        return (0, *self._parse(reply[1], reply[2]))

    def _fetch(self, name: str) -> tuple[int, BreakerState]:
        reply = self.shared.call(lambda r: r.hmget(self.shared.key("breaker", name), "v", "data"), None)
        entry = (0, _CLOSED) if reply is None else self._parse(*reply)
        self._local.setdefault(name, entry)
        return self._local[name]

    def _message(self, payload: bytes) -> None:
        try:
            name, version, data = payload.decode().split("\n", 2)
        except (UnicodeDecodeError, ValueError):
            return  # not ours: a breaker message always has three lines
        self._take(name, *self._parse(version, data))

    def _take(self, name: str, version: int, state: BreakerState) -> None:
        """Newer news from Redis replaces the local copy; a key that expired (version 0) closes it."""
        with self._lock:
            if name in self._unsent:
                return  # sent over it when the reconnect hook runs
            current = self._local.get(name)
            # Equal versions too: a record changed here while Redis was down gives way to Redis's.
            if current is None or version >= current[0] or version == 0:
                self._local[name] = (version, state)

    # -- the record in Redis ------------------------------------------------------------------------------
    def _encode(self, s: BreakerState) -> str:
        row = asdict(s)
        for field in ("open_until", "asked_until"):
            if row[field]:
                row[field] = row[field] + wall_offset(self._clock, self._wall)
        return json.dumps(row)

    def _parse(self, version, data) -> tuple[int, BreakerState]:
        """(version, record) from what Redis holds. Anything this version can't read — a version
        that isn't a number, a record of the wrong shape or state — is no record (closed)."""
        try:
            v = int(version or 0)
        except (TypeError, ValueError):
            return 0, _CLOSED
        return v, self._decode(data)

    def _decode(self, data: bytes | str | None) -> BreakerState:
        if not data:
            return _CLOSED
        try:
            row = json.loads(data)
            s = BreakerState(state=str(row["state"]), failures=int(row["failures"]),
                             open_until=float(row["open_until"]), cooldown=float(row["cooldown"]),
                             reason=str(row["reason"]), trial=None if row["trial"] is None else str(row["trial"]),
                             asked_until=float(row.get("asked_until") or 0.0))  # absent: from an older replica
            if s.state not in STATES or not all(map(math.isfinite, (s.open_until, s.cooldown, s.asked_until))):
                raise ValueError(s.state)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            return _CLOSED  # a record this version can't read: start closed rather than crash
        offset = wall_offset(self._clock, self._wall)
        if s.open_until:
            s = replace(s, open_until=s.open_until - offset)
        if s.asked_until:
            s = replace(s, asked_until=s.asked_until - offset)
        return s


def _pipeline(r, keys: list[str]) -> list:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "v", "data")
    return pipe.execute(raise_on_error=False)  # a key of the wrong type fails alone
