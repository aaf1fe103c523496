"""One try at one provider: how it ended (`Outcome`, `Attempt`) and, while it is in flight, its
thread, the hand-over of its stream, reading it and cancelling it (`LiveAttempt`).

Each attempt starts in its own thread, so the router can keep the time while a provider is
silent. At its first text the thread hands the stream itself over: from then on the router's
thread reads it directly, so the per-chunk path of the answer being shown has no thread hop at
all (the idle deadline is then the SDK's read timeout).
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from . import cancel
from .breaker import Permit
from .errors import ErrorKind, ProviderError
from .messages import ChatRequest, TextDelta
from .providers.base import Provider

log = logging.getLogger("understudy")


class Outcome(enum.StrEnum):
    """How an attempt ended. The value is the stable name used in JSON, metrics and the UI."""

    OK = "ok"
    ERROR = "error"
    DECLINED = "declined"
    CANCELLED = "cancelled"  # by the router: a hedge that lost, a request that ended or timed out
    SKIPPED = "skipped"  # never called: its breaker was open, or the request deadline had passed

    @property
    def failed(self) -> bool:
        """The chain had to move past this provider because it could not answer. A decline is an
        answer, and a cancelled attempt did nothing wrong."""
        return self in (Outcome.ERROR, Outcome.SKIPPED)


@dataclass(frozen=True)
class Attempt:
    """One try at one provider, as shown in the failover timeline."""

    provider: str
    model: str
    outcome: Outcome
    error_kind: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    detail: str = ""  # a short reason for people; never message content or keys
    hedge: bool = False  # started in parallel because the one before it was slow
    stall: bool = False  # that hedge started because the answer being shown stalled
    status: int | None = None  # the HTTP status of its error, if it had one

    def as_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome.value}


HANDOFF = object()  # on the run's queue after an attempt's first text: "the stream is yours now"


@dataclass(eq=False)
class LiveAttempt:
    """One attempt in flight. Its thread puts `(id, item)` on `out`: stream items, then `HANDOFF`
    after the first text, or a `ProviderError`."""

    id: int
    provider: Provider
    is_hedge: bool  # started in parallel because the attempt before it was slow
    start: float
    permit: Permit  # the breaker's leave for this call; its outcome is reported with it
    scope: cancel.CancelScope = field(default_factory=cancel.CancelScope)
    first_at: float | None = None
    last_at: float = 0.0  # its last text, or when its reader began waiting for the item being handled
    pieces: list[str] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # seconds between its chunks: what is normal for its provider
    backed_up: bool = False  # a hedge was started against it already
    stall_after: float | None = None  # as the leader: silence that makes it stalling (None: only the hard limit)
    # Asked by its thread before its first text goes out: False, and it ends without sending it (a
    # backup started for a stalling answer asks whether it still may take that answer over).
    claim: Callable[[LiveAttempt], bool] | None = None
    for_stall: bool = False  # a backup started because the answer being shown stalled
    claimed: bool = False  # its first text is on its way to the reader: no racer may cancel it now
    error: ProviderError | None = None  # its thread sent this error (whoever handles it first: queue or watchdog)
    waiting_since: float | None = None  # its reader has waited on its socket since then (only then is silence a stall)
    note: str = ""  # for the timeline, when it ends without an error of its own
    _stream: Iterator | None = None
    _handed_over: bool = False  # set by its thread, under `_lock`, together with the cancel check
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def failed(self) -> bool:
        """It is over with an error, though the reader may not know yet."""
        return self.error is not None

    def run(self, request: ChatRequest, out: queue.SimpleQueue) -> None:
        threading.Thread(target=self._work, args=(request, out), name=f"attempt-{self.name}", daemon=True).start()

    def run_here(self, request: ChatRequest, out: queue.SimpleQueue) -> None:
        """The same, in the calling thread: it returns at the first text (handed over), an error or
        a cancel. A request's first attempt runs so: no thread to start, no hop to its reader."""
        self._work(request, out)

    def _work(self, request: ChatRequest, out: queue.SimpleQueue) -> None:
        with cancel.scope(self.scope):
            try:
                self._stream = stream = self.provider.stream(request)
                for item in stream:
                    if self.scope.cancelled or (isinstance(item, TextDelta) and self.claim is not None
                                                and not self.claim(self)):
                        stream.close()  # closes the SDK stream and its connection
                        return
                    out.put((self.id, item))
                    if isinstance(item, TextDelta):
                        if self._hand_over():
                            out.put((self.id, HANDOFF))
                        else:  # cancelled just now: the stream is still this thread's to close
                            stream.close()
                        return
            except ProviderError as e:
                self._fail(e, out)
            except Exception as e:  # noqa: BLE001 — an adapter bug still ends the attempt cleanly
                log.exception("adapter %s raised outside the taxonomy", self.name)
                self._fail(ProviderError(ErrorKind.SERVER, f"internal error ({type(e).__name__})", provider=self.name),
                           out)

    def _fail(self, e: ProviderError, out: queue.SimpleQueue) -> None:
        self.error = e
        out.put((self.id, e))

    def _hand_over(self) -> bool:
        with self._lock:
            if self.scope.cancelled:
                return False
            self._handed_over = True
            return True

    @property
    def next_item(self) -> Callable[[], object]:
        """Reads the next item of the handed-over stream; it raises what the stream raises (see
        `failure`). Its reader calls it under this attempt's cancel scope."""
        return self._stream.__next__

    def failure(self, e: Exception) -> ProviderError:
        """What reading the handed-over stream raised, as the error it means for this attempt."""
        if isinstance(e, ProviderError):
            return e
        if isinstance(e, StopIteration):  # pragma: no cover — stream() ends with StreamEnd or raises
            return ProviderError(ErrorKind.STREAM_BROKEN, "the stream ended early", provider=self.name)
        log.error("adapter %s raised outside the taxonomy", self.name, exc_info=e)
        return ProviderError(ErrorKind.SERVER, f"internal error ({type(e).__name__})", provider=self.name)

    def finish(self) -> None:
        """Its stream ended (its last item was read): close the generator now, from the reader, so
        its connection goes back to the pool. Left to the garbage collector, the close could run
        inside the pool's own lock on this very thread, which httpcore's lock does not allow
        (a deadlock seen in the bench)."""
        if self._handed_over and self._stream is not None:
            self._stream.close()

    def cancel(self) -> None:
        """Stop it and close its connection. Whoever holds the stream closes it: its thread, if it
        had not handed it over yet; else this call, at once, whether or not the hand-over has been
        read (a run that ended never reads it)."""
        with self._lock:
            self.scope.cancel()
            handed_over = self._handed_over
        if handed_over:
            self._stream.close()
