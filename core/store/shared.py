"""The fleet's Redis: one client with short timeouts, a breaker of its own, and pub/sub.

Every use goes through `call(op, default)`, which never raises and never waits on a Redis that is
known to be down: the first failure marks it unavailable, and from then on calls return their
default at once (each store keeps working on its local copy) while a background thread pings
Redis every `cooldown` seconds. When a ping answers, the store is available again, its pub/sub
channels are subscribed again, and every `on_reconnect` hook runs so the stores bring their local
copies up to date. The same thread delivers pub/sub messages and runs the `every_second` hooks
(a safety net against a missed message). No request ever waits on a reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import describe

log = logging.getLogger("understudy")
T = TypeVar("T")
Handler = Callable[[bytes], None]


def wall_offset(clock: Callable[[], float], wall: Callable[[], float]) -> float:
    """Seconds to add to a time on `clock` (this process's monotonic clock) to put it on `wall`,
    the clock every replica shares: what a time in Redis is written on."""
    return wall() - clock()


def shown_redis_url(url: str) -> str:
    """The URL for people: no password, no user name."""
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        auth = "***@" if parts.password or parts.username else ""
        return f"{parts.scheme}://{auth}{host}{port}{parts.path}"
    except ValueError:
        return "(a malformed Redis URL)"


class Shared:
    """Thread-safe. `prefix` namespaces every key and channel (one Redis can hold several fleets,
    and tests each get their own)."""

    def __init__(self, url: str, *, prefix: str = "understudy", timeout: float = 0.1, cooldown: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.where = shown_redis_url(url)
        self.prefix = prefix
        self.cooldown = cooldown
        self.clock = clock
        self.wall = wall
        # No retries inside the client: a dead Redis must cost a request one short timeout at most,
        # and only the first request to meet it (then the store's own breaker answers at once).
        options = dict(socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
                       health_check_interval=0, client_name=f"{prefix}-understudy")
        self.client = redis.Redis.from_url(url, **options)
        self._pubsub_client = redis.Redis.from_url(url, **options)
        self._lock = threading.Lock()
        self._available = True
        self._since = wall()
        self._last_error: str | None = None
        self._failures = 0
        self._skipped = 0  # calls answered with their default while Redis was down
        self._refusals = 0  # commands Redis answered with an error (it was up)
        self._handlers: dict[str, list[Handler]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._every_second: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- using it ----------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        return self._available

    def call(self, op: Callable[[redis.Redis], T], default: Any = None) -> T | Any:
        """`op(client)`, or `default` when Redis is down or fails now (it is then marked down)."""
        if not self._available:
            self._skipped += 1  # answered at once: no request waits on a Redis known to be down
            return default
        try:
            return op(self.client)
        except redis.ResponseError as e:
            # Redis answered, with an error for this command (e.g. a key someone made of another
            # type): not an outage. The caller gets its default; Redis stays in use.
            self._refused(e)
            return default
        except redis.RedisError as e:
            self._down(e)
            return default

    def publish(self, channel: str, data: bytes | str) -> None:
        self.call(lambda r: r.publish(self.key(channel), data))

    # -- hooks ------------------------------------------------------------------------------------
    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call `handler(data)` (on the listener thread) for each message on `channel`."""
        with self._lock:
            self._handlers.setdefault(self.key(channel), []).append(handler)
        self.start()

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        with self._lock:
            self._on_reconnect.append(hook)

    def every_second(self, hook: Callable[[], None]) -> None:
        """Run `hook` about once a second on the listener thread while Redis is available."""
        with self._lock:
            self._every_second.append(hook)
        self.start()

    def health(self) -> dict:
        """{"status": "ok" | "unavailable", "where": URL without password, "since": unix time of the
        last change, "last_error": one line or None, "failures": times it went down, "skipped": calls answered
        at once, without Redis, while it was down}."""
        with self._lock:
            return {"status": "ok" if self._available else "unavailable", "where": self.where, "since": self._since,
                    "last_error": self._last_error, "failures": self._failures, "skipped": self._skipped}

    # -- the listener thread -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="understudy-redis", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        for client in (self.client, self._pubsub_client):
            try:
                client.close()
            except redis.RedisError:
                pass

    def _run(self) -> None:
        pubsub, subscribed, next_tick = None, set(), 0.0
        while not self._stop.is_set():
            try:
                if not self._available:
                    if self._stop.wait(self.cooldown):
                        return
                    self._pubsub_client.ping()  # raises while it is still down
                    self._up()
                    pubsub, subscribed = None, set()
                    continue
                with self._lock:
                    channels = set(self._handlers)
                if pubsub is None and channels:
                    pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)
                if channels - subscribed:
                    pubsub.subscribe(*(channels - subscribed))
                    subscribed |= channels
                message = pubsub.get_message(timeout=0.2) if pubsub is not None else None
                if pubsub is None:
                    self._stop.wait(0.2)
                if message is not None and message.get("type") == "message":
                    self._dispatch(message["channel"].decode(), message["data"])
                if self.clock() >= next_tick:
                    next_tick = self.clock() + 1.0
                    self._pubsub_client.ping()
                    for hook in self._hooks(self._every_second):
                        hook()
            except redis.RedisError as e:
                self._down(e)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except redis.RedisError:
                        pass
                pubsub, subscribed = None, set()
            except Exception:  # noqa: BLE001 — a hook's bug must not end the listener
                log.exception("shared state listener")

    def _dispatch(self, channel: str, data: bytes) -> None:
        with self._lock:
            handlers = list(self._handlers.get(channel, ()))
        for handler in handlers:
            handler(data)

    def _hooks(self, hooks: list) -> list:
        with self._lock:
            return list(hooks)

    def _refused(self, e: BaseException) -> None:
        with self._lock:
            self._refusals += 1
            first = self._refusals == 1 or self._refusals % 1000 == 0
        if first:  # once, then every thousandth: a bad key must not flood the log
            log.warning("shared state refused a command (%s, %d so far) at %s; using local state for it",
                        describe(e), self._refusals, self.where)

    def _down(self, e: BaseException) -> None:
        with self._lock:
            was, self._available = self._available, False
            self._last_error = describe(e)
            if was:
                self._since = self.wall()
                self._failures += 1
        if was:
            log.warning("shared state unavailable (%s at %s); answering on local state", self._last_error,
                        self.where)
        self.start()

    def _up(self) -> None:
        with self._lock:
            self._available = True
            self._since = self.wall()
        log.warning("shared state available again at %s", self.where)
        for hook in self._hooks(self._on_reconnect):
            try:
                hook()
            except Exception:  # noqa: BLE001
                log.exception("shared state resync")
