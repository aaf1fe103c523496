"""Anthropic Messages API, through the official `anthropic` SDK."""

from __future__ import annotations

import httpx2

from ..errors import ErrorKind, error_text, kind_for_status, retry_after_from_text, retry_hint
from ..faults import AnthropicDialect
from ..messages import StreamEnd, TextDelta, Usage
from .base import DEFAULT_MAX_TOKENS, Provider, ProviderKind

KIND = ProviderKind("anthropic", label="claude", default_model="claude-sonnet-4-5", key_envs=("ANTHROPIC_API_KEY",),
                    sdk="anthropic", dialect=AnthropicDialect(), public_url="https://api.anthropic.com")

# The allow-list of endings. Anything else (pause_turn, model_context_window_exceeded, tool_use,
# a reason added after this was written) is a broken stream: "length" is only the caller's own limit.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


class AnthropicProvider(Provider):
    info = KIND

    def _make_client(self):
        # max_retries=0: retries and deadlines belong to the router. The SDK's own would honour
        # Retry-After with no cap and multiply our timeouts (field notes §1).
        return self.sdk.Anthropic(
            api_key=self.entry.api_key.reveal() if self.entry.api_key else None,
            base_url=self.entry.base_url,
            max_retries=0,
            # Given outright, not only through the HTTP client: the SDK takes a client timeout equal
            # to httpx's default (5 s for every phase) for "none set" and puts its own 600 s instead.
            timeout=self._timeout(),
            http_client=self._http_client(),
        )

    def _stream(self, request, state):
        params = {
            "model": self.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": m.content} for m in request.turns()],
            "stream": True,
        }
        # No temperature: the Messages API as of SDK 2.14 has none any more (nor does the SDK
        # accept one); the setting is dropped for this kind rather than sent and rejected.
        if system := request.system_text():
            params["system"] = system
        stream = self._client.messages.create(**params)
        model, usage_in, usage_out, finish = self.model, None, None, None
        try:
            for event in stream:
                state.opened = True
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield TextDelta(event.delta.text)
                elif event.type == "message_start":
                    model = event.message.model or model
                    usage_in = event.message.usage.input_tokens
                elif event.type == "message_delta":
                    finish = event.delta.stop_reason
                    usage_out = event.usage.output_tokens
                elif event.type == "message_stop":
                    break
            if finish is not None:
                for _ in self._read_rest(stream):  # nothing is left but the body's end: the connection is kept
                    pass
        finally:
            stream.close()
        # message_stop is the end marker; a stop_reason in message_delta also says the model
        # finished (its sentinel alone missing is catalogue S11, a complete answer).
        if finish is not None:
            yield StreamEnd(_FINISH.get(finish, "other"), model, Usage(usage_in, usage_out), finish)

    def _probe(self):
        self._client.models.list(limit=1)

    def _sdk_errors(self, e, state):
        anthropic = self.sdk
        if isinstance(e, anthropic.APIStatusError):
            message = error_text(getattr(e, "api_message", None)) or error_text(getattr(e, "message", "")) or str(e)
            if e.status_code == 200:  # an `event: error` inside the stream (field notes §2)
                kind = ErrorKind.CONTENT_FILTERED if "content filtering" in message else ErrorKind.STREAM_BROKEN
                what = error_text(getattr(e, "type", ""))
                return self._error(kind, f"error event in the stream: {what} {message}".strip(),
                                   retry_after=retry_after_from_text(message))
            return self._error(kind_for_status(e.status_code, message), message, status=e.status_code,
                               retry_after=retry_hint(e.response.headers, message, status=e.status_code))
        if isinstance(e, anthropic.APITimeoutError):
            return self._transport_error(httpx2.ReadTimeout(str(e)), state)
        if isinstance(e, anthropic.APIConnectionError):
            return self._transport_error(httpx2.ConnectError(str(e)), state)
        return None
