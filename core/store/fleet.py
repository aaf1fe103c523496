"""What else a fleet shares through Redis, besides breakers (core/store/breakers.py): chaos, the
answer cache, probe scheduling and the live metrics events.

Each piece keeps working on local state while Redis is down (`Shared.call` answers its default at
once) and catches up by itself when Redis is back. Nothing here is on the per-chunk path:

- `SharedChaos`: one versioned document; every replica applies it from pub/sub, so a fault set on
  one replica is in force on the others' next request. Reading it (every request) is local.
- `SharedAnswers`: complete answers under `answer:<key>`, expiring with the stale TTL, so an
  answer cached by one replica is a hit, or a stale stand-in, on every other.
- `ProbeLeases`: `SET NX PX` per provider and interval: one replica probes it per interval.
- `FleetEvents`: every metrics event goes to one capped stream (`XADD MAXLEN ~`), in batches from
  a background thread; the same thread reads the stream into `view`, the whole fleet's `Metrics`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..metrics import Event, Metrics, ProbeEvent, as_row, from_row
from .shared import Shared, wall_offset

if TYPE_CHECKING:
    from ..cache import CachedAnswer
    from ..chaos import Chaos

log = logging.getLogger("understudy")
TTL = 7 * 24 * 3600  # a metrics stream nobody writes to any more: gone after a week

# KEYS: document, channel. ARGV: data. Last writer wins; the version orders the messages. No
# expiry: with `volatile-lru` Redis never evicts it (chaos stays on until someone turns it off).
_WRITE = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
local v = (tonumber(redis.call('HGET', KEYS[1], 'v') or '0') or 0) + 1
redis.call('HSET', KEYS[1], 'v', v, 'data', ARGV[1])
redis.call('PUBLISH', KEYS[2], v .. '\\n' .. ARGV[1])
return v
"""


class SharedChaos:
    """Keeps one `Chaos` in step with the fleet's. A change made here is written to Redis and
    published; a change made elsewhere arrives by pub/sub (or the once-a-second resync). While
    Redis is down, changes apply here only, and are sent to the fleet when it is back."""

    def __init__(self, chaos: Chaos, shared: Shared, *, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.chaos, self.shared = chaos, shared
        self._clock, self._wall = clock, wall
        self._version = 0
        self._unsent = False  # a change made here while Redis was down
        self._bad = None  # the version of an unreadable setting already warned about
        self._lock = threading.Lock()
        self._write = shared.client.register_script(_WRITE)
        self.resync()
        chaos.watch(self._publish)
        shared.subscribe("chaos", self._message)
        shared.on_reconnect(self._reconnected)
        shared.every_second(self.resync)

    def _shift(self) -> float:
        return wall_offset(self._clock, self._wall)

    def _publish(self, _changed: dict | None = None) -> None:
        data = json.dumps(self.chaos.snapshot(self._shift()))  # its times on the wall clock
        version = self.shared.call(lambda r: self._write(keys=[self.shared.key("chaos"), self.shared.key("chaos")],
                                                         args=[data], client=r), None)
        with self._lock:
            if version is None:
                self._unsent = True  # sent when Redis is back: the latest change made anywhere wins
            else:
                self._unsent = False
                self._version = max(self._version, int(version))

    def _reconnected(self) -> None:
        if self._unsent:
            self._publish()
        else:
            self.resync()

    def _message(self, payload: bytes) -> None:
        try:
            version, data = payload.decode().split("\n", 1)
            self._take(int(version), data)
        except (UnicodeDecodeError, ValueError):
            log.warning("ignored a chaos message from the fleet that this version can't read")

    def resync(self) -> None:
        reply = self.shared.call(lambda r: r.hmget(self.shared.key("chaos"), "v", "data"), None)
        if reply is None:
            return
        try:
            version = int(reply[0] or 0)
            data = reply[1].decode() if reply[1] else None
        except (TypeError, ValueError, UnicodeDecodeError):
            return  # unreadable: the next write (Lua above) replaces it
        self._take(version, data)  # version 0: nothing shared yet, the fleet has no chaos on

    def _take(self, version: int, data: str | None) -> None:
        with self._lock:
            if version and version <= self._version:
                return
            if version == 0 and self._version == 0:
                return  # nothing was ever shared, and nothing here came from the fleet
            self._version = version
            try:
                self.chaos.restore(json.loads(data) if data else {"manual": {}, "playing": None}, self._shift())
            except ValueError as e:
                if version != self._bad:  # once per bad version, not once a second
                    self._bad = version
                    log.warning("ignored a chaos setting from the fleet that this version can't read: %s", e)


class SharedAnswers:
    """The answer cache's fleet side: complete answers as JSON under `answer:<key>`."""

    def __init__(self, shared: Shared, *, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.shared = shared
        self._clock, self._wall = clock, wall
        self._clear_pending = False  # Clear cache pressed while Redis was down
        shared.on_reconnect(self._reconnected)

    def _reconnected(self) -> None:
        if self._clear_pending:
            self._clear_pending = False
            self.clear()

    def get(self, key: str) -> CachedAnswer | None:
        from ..cache import CachedAnswer
        from ..messages import Usage

        data = self.shared.call(lambda r: r.get(self.shared.key("answer", key)), None)
        if not data:
            return None
        try:
            row = json.loads(data)
            text, provider, model = row["text"], row["provider"], row["model"]
            if not all(isinstance(x, str) for x in (text, provider, model)) or not text:
                raise TypeError("text, provider and model must be strings")
            usage = row.get("usage")
            usage = Usage(int(usage["input_tokens"]), int(usage["output_tokens"])) if usage else None
            stored_at = float(row["stored_at"])
            if not math.isfinite(stored_at):
                raise ValueError("stored_at")
            return CachedAnswer(text, provider, model, usage, stored_at - wall_offset(self._clock, self._wall))
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
            return None  # not an answer this version wrote: a miss

    def put(self, key: str, answer: CachedAnswer, keep_for: float) -> None:
        row = {"text": answer.text, "provider": answer.provider, "model": answer.model,
               "usage": answer.usage.__dict__ if answer.usage else None,
               "stored_at": answer.stored_at + wall_offset(self._clock, self._wall)}
        self.shared.call(lambda r: r.set(self.shared.key("answer", key), json.dumps(row),
                                         px=max(1, int(keep_for * 1000))))

    def clear(self) -> None:
        if not self.shared.available:
            self._clear_pending = True  # done when Redis is back, so a replica can't serve it again
            return

        def clear(r) -> bool:
            batch = []
            for k in r.scan_iter(match=self.shared.key("answer", "*"), count=500):
                batch.append(k)
                if len(batch) >= 500:
                    r.delete(*batch)
                    batch = []
            if batch:
                r.delete(*batch)
            return True

        if not self.shared.call(clear, False):
            self._clear_pending = True


class ProbeLeases:
    """Who probes a provider this interval: the first replica to take its lease."""

    def __init__(self, shared: Shared, replica: str) -> None:
        self.shared, self.replica = shared, replica

    def take(self, provider: str, seconds: float) -> bool:
        """True: probe it now. While Redis is down every replica probes for itself."""
        key = self.shared.key("probe-lease", provider)
        return bool(self.shared.call(lambda r: r.set(key, self.replica, nx=True, px=max(1, int(seconds * 1000))),
                                     True))

    def share(self, event: ProbeEvent) -> None:
        """The latest probe of a provider, for every replica's Status page."""
        self.shared.call(lambda r: r.hset(self.shared.key("probes"), event.provider, json.dumps(as_row(event))))

    def latest(self) -> dict[str, ProbeEvent]:
        rows = self.shared.call(lambda r: r.hgetall(self.shared.key("probes")), None) or {}
        out = {}
        for name, data in rows.items():
            try:
                event = from_row(json.loads(data))
            except ValueError:
                continue
            if isinstance(event, ProbeEvent):
                out[name.decode()] = event
        return out


class FleetEvents:
    """Sends this replica's metrics events to the fleet's stream and reads everyone's into `view`.

    `record()` (a `Metrics` listener) only appends to a bounded deque: the request thread never
    waits on Redis. One thread sends them in batches and reads what the fleet sent since last time.
    While Redis is down, up to `backlog` events wait here (the oldest are dropped past that)."""

    def __init__(self, shared: Shared, *, max_events: int, wall: Callable[[], float], every: float = 0.1,
                 backlog: int = 10_000) -> None:
        self.shared = shared
        self.key = shared.key("events")
        self.max_events = max_events
        self.every = every
        # The whole fleet, for the Status page; each event was logged by the replica that recorded it.
        self.view = Metrics(max_events=max_events, wall=wall, log_events=False)
        self._outbox: deque[str] = deque(maxlen=backlog)
        self._stop = threading.Event()
        self._last_id = None  # the last stream entry read into `view`
        self._thread = threading.Thread(target=self._run, name="understudy-fleet-events", daemon=True)
        self._thread.start()

    def record(self, event: Event) -> None:
        self._outbox.append(json.dumps(as_row(event)))  # sent by the thread within `every` seconds

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._send()  # what is still queued, if Redis answers

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._send()
                self._read()
            except Exception:  # noqa: BLE001 — a bad entry must not end the thread
                log.exception("fleet events")
            self._stop.wait(self.every)

    def _send(self) -> None:
        if not self._outbox or not self.shared.available:
            return
        batch = []
        while self._outbox and len(batch) < 1000:
            batch.append(self._outbox.popleft())

        def send(r) -> bool:
            pipe = r.pipeline(transaction=False)
            for data in batch:
                pipe.xadd(self.key, {"e": data}, maxlen=self.max_events, approximate=True)
            pipe.expire(self.key, TTL)
            pipe.execute()
            return True

        if not self.shared.call(send, False):
            self._outbox.extendleft(reversed(batch))  # sent again when Redis is back

    def _read(self) -> None:
        if not self.shared.available:
            return
        if self._last_id is None:  # start: the most recent events, oldest first
            entries = self.shared.call(lambda r: r.xrevrange(self.key, count=self.max_events), None)
            if entries is None:
                return
            entries.reverse()
            self._last_id = entries[-1][0] if entries else b"0-0"
        else:
            reply = self.shared.call(lambda r: r.xread({self.key: self._last_id}, count=5000), None)
            if not reply:
                return
            entries = reply[0][1]
            if entries:
                self._last_id = entries[-1][0]
        for _, fields in entries:
            try:
                self.view.record(from_row(json.loads(fields[b"e"])))
            except (ValueError, KeyError):
                continue
