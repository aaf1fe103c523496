"""A store's calls with a time limit, for the pages: a database that stops answering without
closing its connections (a frozen server, a dropped network) must not freeze a browser session.

Each call runs on its own daemon thread and is waited for at most `timeout` seconds; past that the
caller gets the store's own `StoreError` (the page says history is unavailable and the chat goes
on) while the stuck call waits on its own. Daemon threads: a call stuck on a dead server never holds
up the app's exit. At most `workers` calls may be stuck at once; past that, calls fail at once
instead of piling up threads behind a dead server.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import StoreError


class Bounded:
    """Wraps `store`: every method call is bounded by `timeout` seconds."""

    def __init__(self, store: Any, *, timeout: float = 2.0, workers: int = 4) -> None:
        self._store = store
        self._timeout = timeout
        self._free = threading.Semaphore(workers)  # calls that may still be running at once

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def bounded(*args, **kwargs):
            if not self._free.acquire(timeout=0):
                raise StoreError("the database is not answering (every connection is waiting on it)")
            done = threading.Event()
            outcome: list = []

            def run() -> None:
                try:
                    outcome.append((True, attr(*args, **kwargs)))
                except BaseException as e:  # noqa: BLE001 — handed to the caller as raised
                    outcome.append((False, e))
                finally:
                    self._free.release()
                    done.set()

            threading.Thread(target=run, name=f"understudy-store-{name}", daemon=True).start()
            if not done.wait(self._timeout):
                raise StoreError(f"the database did not answer within {self._timeout:g} s")
            ok, value = outcome[0]
            if ok:
                return value
            raise value

        return bounded

    def close(self) -> None:
        """Nothing to stop: a call still running ends with its own connection."""
