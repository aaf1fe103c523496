"""Google Gemini, through the official `google-genai` SDK (not the deprecated google-generativeai)."""

from __future__ import annotations

import math
import warnings

from ..errors import (
    ErrorKind,
    error_text,
    kind_for_status,
    retry_after_from_google_details,
    retry_after_from_text,
    retry_hint,
)
from ..faults import GeminiDialect
from ..messages import StreamEnd, TextDelta, Usage
from .base import Provider, ProviderKind

# google-genai itself prefers GOOGLE_API_KEY when both are set; so do we.
KIND = ProviderKind("gemini", label="gemini", default_model="gemini-2.5-flash",
                    key_envs=("GOOGLE_API_KEY", "GEMINI_API_KEY"), sdk="google.genai", dialect=GeminiDialect(),
                    public_url="https://generativelanguage.googleapis.com")

# The SDK warns "X is not a valid FinishReason" for an ending its enum doesn't know. `_finish` below
# already makes such an ending a broken stream, so the warning only adds noise to a user's terminal.
warnings.filterwarnings("ignore", message=r".* is not a valid \w+$", category=UserWarning,
                        module=r"google\.genai\._common")

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
# The allow-list of endings. Anything else (OTHER, MALFORMED_FUNCTION_CALL, LANGUAGE, a value the
# SDK's enum doesn't know yet) is a broken stream.
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_FILTERED, "content_filter")}


def _finish(reason) -> str:
    return _FINISH.get(getattr(reason, "value", reason) or "", "other")


class GeminiProvider(Provider):
    info = KIND

    def _make_client(self):
        # google-genai has no timeout by default and its per-request timeout (which overrides the
        # client's) covers every phase: the idle limit is the one that bounds a silent peer.
        # Keep a reference to the client: its __del__ closes the connection pool (field notes §1.6).
        self._timeout_ms = math.ceil(max(self.entry.idle_timeout, self.entry.first_token_timeout) * 1000)
        genai = self.sdk
        options = genai.types.HttpOptions(
            base_url=self.entry.base_url,
            timeout=self._timeout_ms,
            httpx_client=self._http_client(),
        )
        return genai.Client(api_key=self.entry.api_key.reveal(), http_options=options)

    def _stream(self, request, state):
        # Only what is set: an empty config still costs the SDK ~2 ms of conversion per request.
        config = {k: v for k, v in (("system_instruction", request.system_text() or None),
                                    ("temperature", request.temperature),
                                    ("max_output_tokens", request.max_tokens)) if v is not None}
        contents = [{"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
                    for m in request.turns()]
        # A lazy generator: nothing is sent until the first next() (field notes §4).
        stream = self._client.models.generate_content_stream(model=self.model, contents=contents,
                                                             config=config or None)
        # Every chunk carries the usage so far: the last one seen is made a Usage once, at the end.
        model, counts, finish = self.model, None, None
        try:
            for chunk in stream:
                state.opened = True
                model = chunk.model_version or model
                if chunk.usage_metadata is not None:
                    counts = chunk.usage_metadata
                if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason:
                    finish = "SAFETY"  # the prompt itself was blocked: no candidates will come
                for candidate in chunk.candidates or ():
                    for part in (candidate.content.parts if candidate.content else None) or ():
                        if part.text and not part.thought:
                            yield TextDelta(part.text)
                    if candidate.finish_reason:
                        finish = candidate.finish_reason
                if finish is not None:
                    break
            # The finish reason is the end marker: a server slow to end its body after it must not
            # turn a whole answer into a stalled one.
            for chunk in self._read_rest(stream) if finish is not None else ():
                model = chunk.model_version or model
                if chunk.usage_metadata is not None:
                    counts = chunk.usage_metadata
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
        if finish is not None:
            usage = Usage(counts.prompt_token_count, counts.candidates_token_count) if counts is not None else None
            yield StreamEnd(_finish(finish), model, usage, str(getattr(finish, "value", finish)))

    def _probe(self):
        next(iter(self._client.models.list(config={"page_size": 1})), None)

    def _close(self):
        self._client.close()

    def _sdk_errors(self, e, state):
        errors = self.sdk.errors
        if isinstance(e, errors.APIError):
            message = error_text(e.message) or str(e)
            if state.opened:  # an error object inside the stream
                what = f"error event in the stream: {error_text(e.code)} {message}"
                return self._error(ErrorKind.STREAM_BROKEN, what, retry_after=retry_after_from_text(message))
            headers = getattr(e.response, "headers", None)
            # The HTTP status, normally; read from the body when there was none, so it may be anything.
            status = e.code if type(e.code) is int else None
            retry_after = retry_after_from_google_details(e.details)
            if retry_after is None:
                retry_after = retry_hint(headers, message, status=status)
            return self._error(kind_for_status(status or 500, message), message, status=status,
                               retry_after=retry_after)
        if isinstance(e, errors.UnknownApiResponseError):
            return self._error(ErrorKind.STREAM_BROKEN if state.opened else ErrorKind.SERVER,
                               f"unreadable response: {e}")
        return None
