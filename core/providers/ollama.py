"""Ollama's /api/chat, through the official `ollama` client (which uses httpx, not httpx2)."""

from __future__ import annotations

from ..errors import ErrorKind, error_text, kind_for_status, retry_after_from_text, retry_hint
from ..faults import OllamaDialect
from ..messages import StreamEnd, TextDelta, Usage
from .base import Provider, ProviderKind

# No key of its own (a proxy in front may want one); OLLAMA_HOST names the server, as for the ollama CLI.
KIND = ProviderKind("ollama", label="ollama", default_model="llama3.2", key_envs=("OLLAMA_API_KEY",), sdk="ollama",
                    dialect=OllamaDialect(), http="httpx", needs_key=False,
                    default_base_url="http://127.0.0.1:11434", host_env="OLLAMA_HOST")

# The allow-list of endings (anything else, e.g. "unload", is a broken stream).
_FINISH = {"stop": "stop", "length": "length"}


class OllamaProvider(Provider):
    info = KIND

    def _make_client(self):
        # ollama.ResponseError keeps only the status and the text: the response hook keeps the
        # headers (per thread, as calls are) so a proxy's Retry-After is not lost.
        e = self.entry
        headers = {"authorization": f"Bearer {e.api_key.reveal()}"} if e.api_key else None
        return self.sdk.Client(host=e.endpoint, timeout=self._timeout(), headers=headers,
                             transport=self._transport_or_scoped(), event_hooks={"request": [self._on_request], "response": [self._on_response]})

    def _stream(self, request, state):
        self._last_headers.value = None
        messages = []
        if system := request.system_text():
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.content} for m in request.turns()]
        options = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens:
            options["num_predict"] = request.max_tokens
        stream = self._client.chat(model=self.model, messages=messages, stream=True, options=options or None)
        try:
            for part in stream:
                state.opened = True
                if part.message and part.message.content:
                    yield TextDelta(part.message.content)
                if part.done:  # the end marker
                    for _ in self._read_rest(stream):  # nothing is left but the body's end: the connection is kept
                        pass
                    # Servers older than done_reason send none on a normal end.
                    yield StreamEnd(_FINISH.get(part.done_reason or "stop", "other"), part.model or self.model,
                                    Usage(part.prompt_eval_count, part.eval_count), part.done_reason or "")
                    return
        finally:
            stream.close()

    def _probe(self):
        self._client.list()

    def _sdk_errors(self, e, state):
        ollama = self.sdk
        if isinstance(e, ollama.ResponseError):
            # The body's `error`: text, normally, but a proxy's may be an object, a list, a number.
            message = error_text(e.error)
            if e.status_code == -1:  # an {"error": ...} line inside the stream
                return self._error(ErrorKind.STREAM_BROKEN, f"error in the stream: {message}",
                                   retry_after=retry_after_from_text(message))
            headers = self.last_headers()
            return self._error(kind_for_status(e.status_code, message), message, status=e.status_code,
                               retry_after=retry_hint(headers, message, status=e.status_code))
        return None
