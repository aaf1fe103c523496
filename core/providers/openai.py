"""OpenAI Chat Completions, through the official `openai` SDK; also any OpenAI-compatible server
(vLLM, LM Studio, other gateways) through `base_url`."""

from __future__ import annotations

import httpx2

from ..errors import ErrorKind, error_text, kind_for_status, retry_after_from_text, retry_hint
from ..faults import OpenAIDialect
from ..messages import StreamEnd, TextDelta, Usage
from .base import Provider, ProviderKind

KIND = ProviderKind("openai", label="gpt", default_model="gpt-5-mini", key_envs=("OPENAI_API_KEY",), sdk="openai",
                    dialect=OpenAIDialect(), public_url="https://api.openai.com/v1")

# The allow-list of endings. Anything else (tool_calls, a compatible server's "error" or "abort")
# is a broken stream.
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
# OpenAI's error codes say more than its statuses (both are 400s).
_CODES = {"context_length_exceeded": ErrorKind.CONTEXT_LENGTH, "content_filter": ErrorKind.CONTENT_FILTERED,
          "content_policy_violation": ErrorKind.CONTENT_FILTERED, "model_not_found": ErrorKind.NOT_FOUND,
          "invalid_api_key": ErrorKind.AUTH}


class OpenAIProvider(Provider):
    info = KIND

    def _make_client(self):
        # max_retries=0: retries and deadlines belong to the router (field notes §1).
        return self.sdk.OpenAI(
            api_key=self.entry.api_key.reveal() if self.entry.api_key else "unused",
            base_url=self.entry.base_url,
            max_retries=0,
            # Given outright, not only through the HTTP client: the SDK takes a client timeout equal
            # to httpx's default (5 s for every phase) for "none set" and puts its own 600 s instead.
            timeout=self._timeout(),
            http_client=self._http_client(),
        )

    def _stream(self, request, state):
        messages = []
        if system := request.system_text():
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.content} for m in request.turns()]
        params = {"model": self.model, "messages": messages, "stream": True,
                  "stream_options": {"include_usage": True}}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens:
            # The official API renamed it; self-hosted compatible servers still expect the old name.
            params["max_tokens" if self.entry.base_url else "max_completion_tokens"] = request.max_tokens
        stream = self._client.chat.completions.create(**params)
        model, usage, finish = self.model, None, None
        try:
            for chunk in stream:
                state.opened = True
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                if finish is not None:
                    break
            # After the finish reason come only the usage chunk and [DONE]: a server slow to send
            # them must not turn a whole answer into a stalled one.
            for chunk in self._read_rest(stream) if finish is not None else ():
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        finally:
            stream.close()
        # finish_reason is the end marker; [DONE] is optional (field notes §3).
        if finish is not None:
            yield StreamEnd(_FINISH.get(finish, "other"), model, usage, finish)

    def _probe(self):
        self._client.models.list()

    def _sdk_errors(self, e, state):
        openai = self.sdk
        if isinstance(e, openai.APIStatusError):
            body = e.body if isinstance(e.body, dict) else {}
            message = error_text(body.get("message")) or error_text(e.message) or str(e)
            kind = _CODES.get(_code(e)) or kind_for_status(e.status_code, message)
            return self._error(kind, message, status=e.status_code,
                               retry_after=retry_hint(e.response.headers, message, status=e.status_code))
        if isinstance(e, openai.APITimeoutError):
            return self._transport_error(httpx2.ReadTimeout(str(e)), state)
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ if isinstance(e.__cause__, Exception) else httpx2.ConnectError(str(e))
            return self._transport_error(cause, state)
        if isinstance(e, openai.APIError):  # an error object inside the stream (no status)
            kind = _CODES.get(_code(e), ErrorKind.STREAM_BROKEN)
            # The SDK puts a stock phrase in place of a message that is not text: read it from the body.
            body = e.body if isinstance(e.body, dict) else {}
            message = error_text(body.get("message")) or error_text(e.message)
            return self._error(kind, f"error event in the stream: {message}",
                               retry_after=retry_after_from_text(message))
        if isinstance(e, openai.OpenAIError):
            return self._error(ErrorKind.BAD_REQUEST, str(e))
        return None


def _code(e: Exception) -> str:
    """The error's `code`, if it is text (a compatible server may send an object or a list there)."""
    code = getattr(e, "code", None)
    return code if isinstance(code, str) else ""
