"""What every provider adapter is: a small class with one streaming method.

`stream()` yields `TextDelta`s and then exactly one `StreamEnd`, or raises `ProviderError`.
It checks the protocol's end marker itself: none of the four SDKs raises when a stream simply
stops early (field notes §1.3), so an adapter that saw no end marker raises `stream_broken`.
An end marker counts only with a normal finish reason: the `StreamEnd` it yields says "stop"
(complete) or "length" (the caller's own limit); a policy ending raises `content_filtered` and
any other ending raises `stream_broken`, exactly as a cut stream does.
Everything else is derived from the stream by its consumer.

What a kind of provider is (its SDK, default model, key variables, wire dialect) each adapter
declares as data, in a `ProviderKind` record: config, the CLI and the chaos transport read those
records without loading any SDK, since an adapter imports its SDK only when it makes a client.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import httpx2

from .. import cancel
from ..config import Health, ProviderEntry
from ..errors import ErrorKind, ProviderError, kind_for_status, retry_hint
from ..messages import ChatRequest, StreamEnd, TextDelta
from ..redact import redact, remember

if TYPE_CHECKING:
    from ..faults import Dialect

TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)
TRANSPORT_ERRORS = (httpx.HTTPError, httpx2.HTTPError, httpx.StreamError, httpx2.StreamError)
# Garbage on the wire surfaces as a decode error from whichever layer parses it.
DECODE_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires a value; the others get it only when asked
PROBE_TIMEOUT = Health().probe_timeout  # seconds each phase of a probe may take: the setting's default
REST_WAIT = 0.05  # seconds the end of an HTTP body may take to arrive after the stream's end marker
_HTTP = {"httpx": httpx, "httpx2": httpx2}


@dataclass(frozen=True)
class ProviderKind:
    """What a provider kind is, declared as data by its adapter."""

    kind: str
    label: str  # the entry name used when the chain is built from the environment
    default_model: str
    key_envs: tuple[str, ...]  # first one set wins
    sdk: str  # the module the adapter drives, imported when the first client is made
    dialect: Dialect  # how its wire frames a stream and words an error (core/faults.py)
    http: str = "httpx2"  # the HTTP library under its SDK ("httpx" or "httpx2"): where chaos goes in
    needs_key: bool = True
    default_base_url: str | None = None  # passed to the client when the entry has none (ollama)
    host_env: str | None = None  # a variable naming the server when the entry has no base_url (OLLAMA_HOST)
    public_url: str = ""  # where the SDK goes by default: shown, never passed


class StreamState:
    """How far a call got, so one exception type can map to different kinds by phase."""

    __slots__ = ("sent", "opened", "started", "timeouts")

    def __init__(self, timeouts: dict[str, float] | None = None) -> None:
        self.timeouts = timeouts  # per phase, for the transport; None: the entry's (see `_on_request`)
        self.sent = False  # the SDK handed the request to the HTTP client (see `_on_request`)
        self.opened = False  # the provider accepted the request (its first stream event arrived)
        self.started = False  # answer text arrived


class Provider:
    """Base class of the four adapters. Subclasses declare `info` and implement `_stream`."""

    info: ClassVar[ProviderKind]

    def __init__(self, entry: ProviderEntry, *, transport: Any = None) -> None:
        self.entry = entry
        self.name = entry.name
        self.model = entry.model
        self._transport = transport
        self._last_headers = threading.local()
        self._calls = threading.local()  # the StreamState of the call this thread is making
        if entry.api_key:
            remember(entry.api_key.reveal())  # masked in the package's log as in its errors
        self._timeouts = self._timeout().as_dict()  # what `_on_request` hands the transport
        self._client = self._make_client() if (entry.api_key or not self.info.needs_key) else None

    @property
    def kind(self) -> str:
        return self.info.kind

    @functools.cached_property
    def sdk(self) -> ModuleType:
        """The SDK's module, imported on first use (each takes 0.5–1.2 s; a chain rarely needs all four)."""
        return importlib.import_module(self.info.sdk)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} model={self.model!r} endpoint={self._redact(self.entry.endpoint)!r}>"

    # -- the one method --------------------------------------------------------------------------
    def stream(self, request: ChatRequest) -> Iterator[TextDelta | StreamEnd]:
        """Yield the answer as it arrives, then a `StreamEnd`. Raises `ProviderError`."""
        self._require_key()
        state = StreamState()
        with self._map_errors(state):
            for item in self._stream(request, state):
                if type(item) is TextDelta:  # nearly every item, so looked at first
                    if item.text:
                        state.started = True
                        yield item
                    continue
                if isinstance(item, StreamEnd):
                    if item.finish_reason == "content_filter":
                        why = f" ({item.native_reason})" if item.native_reason else ""
                        raise self._error(ErrorKind.CONTENT_FILTERED,
                                          f"declined under the provider's content policy{why}")
                    if item.finish_reason not in ("stop", "length"):
                        # An allow-list, not a deny-list: an ending we don't know (OTHER, pause_turn,
                        # a server's "error" or "abort") may have cut the answer anywhere.
                        raise self._error(ErrorKind.STREAM_BROKEN, "the stream ended abnormally "
                                          f"(finish reason {item.native_reason or item.finish_reason!r})")
                    if not state.started:
                        # An empty answer is no answer (pydantic-ai #2837): let the next provider try.
                        raise self._error(ErrorKind.STREAM_BROKEN, "the provider returned an empty answer")
                    yield item
                    return
        raise self._error(ErrorKind.STREAM_BROKEN, "the stream ended without its end marker (truncated)")

    def probe(self, *, timeout: float = PROBE_TIMEOUT) -> None:
        """A cheap health check that costs no tokens (a list-models call). Raises `ProviderError`.
        No phase of it waits longer than `timeout`, whatever the entry's own timeouts (minutes,
        for a slow model): a probe of a silent provider must not hold its caller that long."""
        self._require_key()
        with self._map_errors(StreamState({k: min(v, timeout) for k, v in self._timeouts.items()})):
            self._probe()

    def close(self) -> None:
        if self._client is not None:
            self._close()

    # -- for subclasses ---------------------------------------------------------------------------
    def _make_client(self) -> Any:
        raise NotImplementedError

    def _stream(self, request: ChatRequest, state: StreamState) -> Iterator[TextDelta | StreamEnd]:
        raise NotImplementedError

    def _probe(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        self._client.close()

    def _read_rest(self, stream: Iterator) -> Iterator:
        """After the stream's end marker: the rest of it, read as the SDK's own loop would (a
        trailing usage chunk, the body's last bytes), so the connection goes back to the pool
        rather than being dropped and the next request needs no new TCP and TLS handshake. The
        answer is whole already, so a server slow to end its body costs at most `REST_WAIT`, and
        a failure here only that connection: neither fails the answer."""
        until = time.monotonic() + REST_WAIT
        try:
            with cancel.reading_rest(REST_WAIT):  # a read waits no longer than that
                for item in stream:
                    if time.monotonic() > until:
                        return  # still more, and quickly: not an end, the connection is dropped
                    yield item
        except Exception:  # noqa: BLE001 — whatever it was, it only costs the connection
            return

    def _sdk_errors(self, e: Exception, state: StreamState) -> ProviderError | None:
        """Map this SDK's own exception types; None for anything it doesn't know."""
        return None

    # -- shared plumbing --------------------------------------------------------------------------
    def _require_key(self) -> None:
        if self._client is None:
            names = " or ".join((self.entry.api_key_env,) if self.entry.api_key_env else self.info.key_envs)
            raise ProviderError(ErrorKind.AUTH, f"no API key: set {names}", provider=self.name)

    def _error(self, kind: ErrorKind, message: str, **kw) -> ProviderError:
        return ProviderError(kind, self._redact(message), provider=self.name, **kw)

    def _redact(self, text: str) -> str:
        # The one boundary: provider text (which a proxy may fill with our request headers)
        # leaves the adapter only with the key, and anything shaped like one, masked.
        return redact(text, (self.entry.api_key.reveal(),) if self.entry.api_key else ())

    @contextmanager
    def _map_errors(self, state: StreamState) -> Iterator[None]:
        self._calls.state = state
        try:
            yield
        except ProviderError as e:
            e.message = self._redact(e.message)  # also when built without _error()
            e.args = (e.message,)
            raise
        except Exception as e:  # noqa: BLE001 — every SDK failure becomes one of our kinds, here and only here
            try:
                mapped = self._unsent_error(e, state) or self._sdk_errors(e, state) or self._transport_error(e, state)
            except Exception as bug:  # noqa: BLE001 — a mapper's bug must not let the raw SDK error out
                mapped = self._unmapped_error(e, bug)
            raise mapped from e

    def _unmapped_error(self, e: Exception, bug: Exception) -> ProviderError:
        """When mapping `e` itself failed (an error body of a shape no mapper expected): a plain
        error of the kind its HTTP status says, if it has one. Its text is not used: it is what
        could not be read, and may quote our request's headers."""
        response = getattr(e, "response", None)
        found = (getattr(response, "status_code", None), getattr(e, "status_code", None), getattr(e, "code", None))
        status = next((s for s in found if type(s) is int and 100 <= s <= 599), None)
        headers = getattr(response, "headers", None)
        try:
            retry_after = retry_hint(headers, status=status)
        except Exception:  # noqa: BLE001 — no hint, then
            retry_after = None
        return self._error(kind_for_status(status) if status else ErrorKind.SERVER,
                           f"the provider's error could not be read ({type(e).__name__}; "
                           f"{type(bug).__name__} while mapping it)", status=status, retry_after=retry_after)

    def _unsent_error(self, e: Exception, state: StreamState) -> ProviderError | None:
        """An SDK that fails before sending a byte is refusing the request (a NaN it can't encode,
        a value its own validation rejects): the request's fault, never the provider's health."""
        if state.sent:
            return None
        first_line = (str(e).strip().splitlines() or [""])[0]
        return self._error(ErrorKind.BAD_REQUEST, f"the request could not be sent ({type(e).__name__}"
                                                  f"{': ' + first_line if first_line else ''})")

    def _transport_error(self, e: Exception, state: StreamState) -> ProviderError:
        """Raw transport and parse failures, which three of the four SDKs let escape unwrapped."""
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if isinstance(e, TIMEOUTS):
            if state.started:
                return self._error(ErrorKind.STREAM_BROKEN, f"the stream stalled ({text})", stalled=True)
            return self._error(ErrorKind.TIMEOUT, f"no answer in time ({text})")
        if isinstance(e, TRANSPORT_ERRORS + (ConnectionError,)):
            if state.opened:
                return self._error(ErrorKind.STREAM_BROKEN, f"the stream broke ({text})")
            return self._error(ErrorKind.CONNECTION, f"could not reach the provider ({text})")
        if isinstance(e, DECODE_ERRORS) or isinstance(e, ValueError):
            return self._error(ErrorKind.STREAM_BROKEN, f"malformed data from the provider ({text})")
        return self._error(ErrorKind.SERVER, f"unexpected failure ({text})")

    def _timeout(self) -> Any:
        # Per phase, not a total: the router owns the request deadline and the first-token and
        # idle timers. The read timeout is a backstop that also frees an abandoned thread.
        e = self.entry
        read = max(e.idle_timeout, e.first_token_timeout)
        return _HTTP[self.info.http].Timeout(connect=e.connect_timeout, read=read, write=read, pool=e.connect_timeout)

    def _transport_or_scoped(self) -> Any:
        """The transport given (the chaos one), or else one whose sockets a cancel can shut before
        any response exists: a request's first attempt runs in its reader's thread, which a silent
        provider must never keep."""
        return self._transport or cancel.scoped_transport(_HTTP[self.info.http])

    def _http_client(self, **kwargs: Any) -> Any:
        """The HTTP client under the SDK: our transport (fault injection) and response hook."""
        return _HTTP[self.info.http].Client(
            transport=self._transport_or_scoped(), timeout=self._timeout(),
            event_hooks={"request": [self._on_request], "response": [self._on_response]}, **kwargs)

    def _on_request(self, request: Any) -> None:
        # Runs in the calling thread once the SDK has built and encoded the request, just before
        # the transport connects: from here on a failure is the network's or the provider's.
        state = getattr(self._calls, "state", None)
        if state is not None:
            state.sent = True
        # The transport reads each phase's timeout from this extension, set here whatever the SDK
        # made of ours: google-genai gives every phase one value (so its connect timeout would be
        # the read one), and a probe's are shorter than the entry's.
        request.extensions = {**request.extensions,
                              "timeout": state.timeouts if state is not None and state.timeouts else self._timeouts}

    def _on_response(self, response: Any) -> None:
        # Runs in the attempt's thread as soon as headers arrive: let the router cancel it,
        # and keep the headers for SDKs whose errors drop them (ollama).
        self._last_headers.value = response.headers
        if (s := cancel.current()) is not None:
            s.adopt(response)

    def last_headers(self) -> Any:
        return getattr(self._last_headers, "value", None)
