"""A GGUF model on this machine (`kind = "local"`, `model_path = "…"`): llama.cpp's server in a
child process (core/local_model.py), reached through the official `openai` SDK on 127.0.0.1.

It is the OpenAI adapter with one difference: the server's address is the child's, known once
the model has loaded and new after a restart, so each call follows it. A model that is not
running is a connection failure: it counts against the provider's health like any outage.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .. import local_model
from ..errors import ErrorKind
from ..faults import OpenAIDialect
from .base import ProviderKind
from .openai import OpenAIProvider

KIND = ProviderKind("local", label="local", default_model=local_model.BUNDLED_MODEL, key_envs=(), sdk="openai",
                    dialect=OpenAIDialect(), needs_key=False)
_NOT_YET = "http://127.0.0.1:9/v1"  # the client's address until the model has loaded (nothing listens there)


class LocalProvider(OpenAIProvider):
    info = KIND

    def __init__(self, entry, *, transport=None) -> None:
        self.process = local_model.acquire(Path(entry.model_path), threads=entry.threads, alias=entry.model)
        self._url_lock = threading.Lock()
        super().__init__(entry, transport=transport)

    def _make_client(self):
        return self.sdk.OpenAI(api_key=self.process.key, base_url=_NOT_YET, max_retries=0,
                               http_client=self._http_client())

    def _stream(self, request, state):
        # A model still loading (about 1.5 s; longer on a busy machine) is a slow first token: the
        # router's own first-token timer and cancels bound this wait, as they bound a silent socket.
        self._follow(self.entry.first_token_timeout)
        yield from super()._stream(request, state)

    def _probe(self):
        # The app probes at start, while the model is loading: that is no outage, so the first
        # load gets its own allowance (probes run off the request path).
        self._follow(self.entry.connect_timeout if self.process.loaded_once else local_model.LOAD_WAIT)
        super()._probe()

    def _follow(self, wait: float) -> None:
        url = self.process.wait_ready(wait)
        if url is None:
            raise self._error(ErrorKind.CONNECTION, self.process.why_down())
        if str(self._client.base_url) != url + "/":
            with self._url_lock:
                self._client.base_url = url  # the SDK's own setter; requests read it when they are built

    def close(self) -> None:
        try:
            super().close()
        finally:
            local_model.release(self.process)
