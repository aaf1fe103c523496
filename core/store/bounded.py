"""A store's calls with a time limit, for the pages: a database that stops answering without
closing its connections (a frozen server, a dropped network) must not freeze a browser session.

Each call runs on a small shared pool of worker threads and is waited for at most `timeout`
seconds; past that the caller gets the store's own `StoreError` (the page says history is
unavailable and the chat goes on) while the stuck worker waits on its own. With every worker
stuck, later calls time out at once instead of queueing behind them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .errors import StoreError


class Bounded:
    """Wraps `store`: every method call is bounded by `timeout` seconds."""

    def __init__(self, store: Any, *, timeout: float = 2.0, workers: int = 4) -> None:
        self._store = store
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="understudy-store")
        self._free = threading.Semaphore(workers)  # workers not stuck on a call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def bounded(*args, **kwargs):
            if not self._free.acquire(timeout=0):
                raise StoreError("the database is not answering (every connection is waiting on it)")

            def run():
                try:
                    return attr(*args, **kwargs)
                finally:
                    self._free.release()

            future = self._pool.submit(run)
            try:
                return future.result(timeout=self._timeout)
            except FutureTimeout:
                raise StoreError(f"the database did not answer within {self._timeout:g} s") from None

        return bounded

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
