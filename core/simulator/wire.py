"""Each provider's wire format, as the simulated servers speak it.

Bodies, stream frames and error shapes follow the providers' documented APIs and the field notes
(shared/reference/sdk-and-streamlit.md §2–§6), so the real SDKs parse them exactly as they would
parse the real thing — including the ways the real thing breaks.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

# Error flavours a simulated server can answer with, and the status each one uses by default.
FLAVOUR_STATUS = {
    "rate_limit": 429,
    "overloaded": 529,
    "unavailable": 503,
    "server": 500,
    "auth": 401,
    "forbidden": 403,
    "not_found": 404,
    "context_length": 400,
    "content_filter": 400,
    "bad_request": 400,
    "prefill": 400,
}
STATUS_FLAVOUR = {429: "rate_limit", 529: "overloaded", 503: "unavailable", 502: "server", 500: "server",
                  401: "auth", 403: "forbidden", 404: "not_found", 400: "bad_request"}

_MESSAGES = {
    "rate_limit": "Rate limit reached for requests. Please try again later.",
    "overloaded": "Overloaded",
    "unavailable": "The service is temporarily unavailable.",
    "server": "Internal server error",
    "auth": "Invalid API key provided.",
    "forbidden": "Your API key does not have permission to use this model.",
    "not_found": "The model '{model}' does not exist or you do not have access to it.",
    "context_length": "This model's maximum context length is 8192 tokens. However, your messages resulted in 250000 tokens.",
    "content_filter": "The request was rejected because it was flagged by the content policy.",
    "bad_request": "messages: text content blocks must be non-empty",
    "prefill": "This model does not support assistant message prefill. The conversation must end with a user message.",
}


def sse(data: dict | str, event: str | None = None, sep: str = "\n") -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}{sep}" if event else ""
    return f"{head}data: {body}{sep}{sep}".encode()


@dataclass(frozen=True)
class Frames:
    """A stream in three parts, so faults can cut it anywhere: before, between or after text."""

    preamble: list[bytes]
    text: list[bytes]
    epilogue: list[bytes]


class Wire:
    """One provider's protocol. Subclasses fill in the shapes."""

    kind = ""
    stream_type = "text/event-stream"

    def route(self, method: str, path: str) -> tuple[str, str | None] | None:
        """("chat" | "stream" | "models", model from the path or None), or None if unknown."""
        raise NotImplementedError

    def base_url(self, root: str) -> str:
        return root

    def prompt(self, body: dict) -> tuple[str, bool, str]:
        """(model, stream?, the last user text) from a request body."""
        raise NotImplementedError

    def authorised(self, headers: dict[str, str], key: str) -> bool:
        return headers.get("authorization") == f"Bearer {key}"

    def message(self, flavour: str, model: str) -> str:
        return _MESSAGES[flavour].format(model=model)

    def error(self, status: int, flavour: str, model: str, retry_after: float | None) -> dict:
        raise NotImplementedError

    def with_note(self, error: dict, note: str) -> dict:
        """An error body with `note` appended to its message."""
        return {**error, "error": {**error["error"], "message": error["error"]["message"] + note}}

    def full(self, text: str, model: str, usage: tuple[int, int], finish: str) -> dict:
        raise NotImplementedError

    def frames(self, pieces: list[str], model: str, usage: tuple[int, int], finish: str) -> Frames:
        raise NotImplementedError

    def without_sentinel(self, frames: Frames) -> Frames:
        """The complete stream minus its optional end sentinel (catalogue S11)."""
        return frames

    def stream_error(self, model: str) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        raise NotImplementedError

    def models(self, model: str) -> dict:
        raise NotImplementedError

    def refusal_finish(self) -> str:
        """The finish reason this protocol uses for a content-policy refusal."""
        raise NotImplementedError


class AnthropicWire(Wire):
    kind = "anthropic"
    _types = {"rate_limit": "rate_limit_error", "overloaded": "overloaded_error", "unavailable": "api_error",
              "server": "api_error", "auth": "authentication_error", "forbidden": "permission_error",
              "not_found": "not_found_error", "context_length": "invalid_request_error",
              "content_filter": "invalid_request_error", "bad_request": "invalid_request_error",
              "prefill": "invalid_request_error"}

    def route(self, method, path):
        if method == "POST" and path.endswith("/v1/messages"):
            return "chat", None
        if method == "GET" and re.search(r"/v1/models$", path):
            return "models", None
        return None

    def prompt(self, body):
        return body.get("model", ""), bool(body.get("stream")), _last_user(body.get("messages", []))

    def authorised(self, headers, key):
        return headers.get("x-api-key") == key or super().authorised(headers, key)

    def message(self, flavour, model):
        if flavour == "context_length":
            return "prompt is too long: 250000 tokens > 200000 maximum"
        if flavour == "content_filter":
            return "Output blocked by content filtering policy"
        return super().message(flavour, model)

    def error(self, status, flavour, model, retry_after):
        return {"type": "error", "error": {"type": self._types[flavour], "message": self.message(flavour, model)}}

    def full(self, text, model, usage, finish):
        return {"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": finish, "stop_sequence": None,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}

    def frames(self, pieces, model, usage, finish):
        start = {"type": "message_start", "message": {
            "id": "msg_sim", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage[0], "output_tokens": 1}}}
        return Frames(
            preamble=[sse(start, "message_start"),
                      sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                          "content_block_start"),
                      sse({"type": "ping"}, "ping")],
            text=[sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                      "content_block_delta") for p in pieces],
            epilogue=[sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                      sse({"type": "message_delta", "delta": {"stop_reason": finish, "stop_sequence": None},
                           "usage": {"output_tokens": usage[1]}}, "message_delta"),
                      sse({"type": "message_stop"}, "message_stop")],
        )

    def without_sentinel(self, frames):
        return Frames(frames.preamble, frames.text, frames.epilogue[:-1])

    def stream_error(self, model):
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    def malformed(self):
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'

    def models(self, model):
        return {"data": [{"type": "model", "id": model, "display_name": model,
                          "created_at": "2025-01-01T00:00:00Z"}],
                "has_more": False, "first_id": model, "last_id": model}

    def refusal_finish(self):
        return "refusal"


class OpenAIWire(Wire):
    kind = "openai"
    _codes = {"rate_limit": ("requests", "rate_limit_exceeded"), "overloaded": ("server_error", "overloaded"),
              "unavailable": ("server_error", "service_unavailable"), "server": ("server_error", None),
              "auth": ("invalid_request_error", "invalid_api_key"), "forbidden": ("invalid_request_error", None),
              "not_found": ("invalid_request_error", "model_not_found"),
              "context_length": ("invalid_request_error", "context_length_exceeded"),
              "content_filter": ("invalid_request_error", "content_filter"),
              "bad_request": ("invalid_request_error", None), "prefill": ("invalid_request_error", None)}

    def base_url(self, root):
        return root + "/v1"

    def route(self, method, path):
        if method == "POST" and path.endswith("/chat/completions"):
            return "chat", None
        if method == "GET" and path.endswith("/models"):
            return "models", None
        return None

    def prompt(self, body):
        return body.get("model", ""), bool(body.get("stream")), _last_user(body.get("messages", []))

    def error(self, status, flavour, model, retry_after):
        type_, code = self._codes[flavour]
        return {"error": {"message": self.message(flavour, model), "type": type_, "param": None, "code": code}}

    def _chunk(self, model, delta, finish=None, usage=None, choices=True):
        body = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage:
            body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                             "total_tokens": usage[0] + usage[1]}
        return sse(body)

    def full(self, text, model, usage, finish):
        return {"id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}

    def frames(self, pieces, model, usage, finish):
        return Frames(
            preamble=[self._chunk(model, {"role": "assistant", "content": ""})],
            text=[self._chunk(model, {"content": p}) for p in pieces],
            epilogue=[self._chunk(model, {}, finish), self._chunk(model, {}, usage=usage, choices=False),
                      sse("[DONE]")],
        )

    def without_sentinel(self, frames):
        return Frames(frames.preamble, frames.text, frames.epilogue[:-1])

    def stream_error(self, model):
        return sse({"error": {"message": "server overloaded", "type": "server_error", "code": "overloaded"}})

    def malformed(self):
        return b'data: {"id":"chatcmpl-sim","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x\n\n'

    def models(self, model):
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "sim"}]}

    def refusal_finish(self):
        return "content_filter"


class GeminiWire(Wire):
    kind = "gemini"
    _status = {"rate_limit": "RESOURCE_EXHAUSTED", "overloaded": "UNAVAILABLE", "unavailable": "UNAVAILABLE",
               "server": "INTERNAL", "auth": "UNAUTHENTICATED", "forbidden": "PERMISSION_DENIED",
               "not_found": "NOT_FOUND", "context_length": "INVALID_ARGUMENT", "content_filter": "INVALID_ARGUMENT",
               "bad_request": "INVALID_ARGUMENT", "prefill": "INVALID_ARGUMENT"}

    def route(self, method, path):
        m = re.search(r"/models/([^/:]+):(generateContent|streamGenerateContent)$", path)
        if method == "POST" and m:
            return ("stream" if m.group(2) == "streamGenerateContent" else "chat"), m.group(1)
        if method == "GET" and re.search(r"/v1(beta)?/models$", path):
            return "models", None
        return None

    def prompt(self, body):
        contents = body.get("contents", [])
        users = [c for c in contents if c.get("role", "user") == "user"]
        text = "".join(p.get("text", "") for p in users[-1].get("parts", [])) if users else ""
        return "", False, text

    def authorised(self, headers, key):
        return headers.get("x-goog-api-key") == key

    def message(self, flavour, model):
        if flavour == "context_length":
            return "The input token count (250000) exceeds the maximum number of tokens allowed (32768)."
        if flavour == "overloaded":
            return "The model is overloaded. Please try again later."
        return super().message(flavour, model)

    def error(self, status, flavour, model, retry_after):
        error = {"code": status, "message": self.message(flavour, model), "status": self._status[flavour]}
        if retry_after is not None:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{retry_after:g}s"}]
        return {"error": error}

    def _usage(self, usage, done):
        u = {"promptTokenCount": usage[0], "totalTokenCount": usage[0] + (usage[1] if done else 0)}
        if done:
            u["candidatesTokenCount"] = usage[1]
        return u

    def _chunk(self, text, model, usage, finish=None):
        cand = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        return sse({"candidates": [cand], "usageMetadata": self._usage(usage, finish is not None),
                    "modelVersion": model, "responseId": "resp-sim"}, sep="\r\n")

    def full(self, text, model, usage, finish):
        return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish,
                                "index": 0}], "usageMetadata": self._usage(usage, True),
                "modelVersion": model, "responseId": "resp-sim"}

    def frames(self, pieces, model, usage, finish):
        if finish == "SAFETY" and not pieces:
            # A blocked prompt: no candidates at all, only the feedback saying why.
            return Frames([], [], [sse({"promptFeedback": {"blockReason": "SAFETY"},
                                        "usageMetadata": self._usage(usage, False), "modelVersion": model},
                                       sep="\r\n")])
        return Frames([], [self._chunk(p, model, usage) for p in pieces],
                      [self._chunk("", model, usage, finish)])

    def stream_error(self, model):
        return sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}, sep="\r\n")

    def malformed(self):
        return b'data: {"candidates": [{"content": {"parts": [{"te\r\n\r\n'

    def models(self, model):
        return {"models": [{"name": f"models/{model}", "displayName": model,
                            "supportedGenerationMethods": ["generateContent"]}]}

    def refusal_finish(self):
        return "SAFETY"


class OllamaWire(Wire):
    kind = "ollama"
    stream_type = "application/x-ndjson"

    def route(self, method, path):
        if method == "POST" and path == "/api/chat":
            return "chat", None
        if method == "GET" and path == "/api/tags":
            return "models", None
        return None

    def prompt(self, body):
        return body.get("model", ""), bool(body.get("stream", True)), _last_user(body.get("messages", []))

    def message(self, flavour, model):
        if flavour == "not_found":
            return f"model '{model}' not found, try pulling it first"
        if flavour == "context_length":
            return "the input length exceeds the context length"
        return super().message(flavour, model)

    def error(self, status, flavour, model, retry_after):
        return {"error": self.message(flavour, model)}

    def with_note(self, error, note):
        return {"error": error["error"] + note}

    def _line(self, body):
        return (json.dumps(body, separators=(",", ":")) + "\n").encode()

    def _msg(self, model, text, done, **extra):
        return {"model": model, "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text}, "done": done, **extra}

    def _done(self, model, usage, finish, text=""):
        return self._msg(model, text, True, done_reason=finish, total_duration=1_000_000,
                         prompt_eval_count=usage[0], eval_count=usage[1])

    def full(self, text, model, usage, finish):
        return self._done(model, usage, finish, text)

    def frames(self, pieces, model, usage, finish):
        return Frames([], [self._line(self._msg(model, p, False)) for p in pieces],
                      [self._line(self._done(model, usage, finish))])

    def stream_error(self, model):
        return self._line({"error": "model runner crashed"})

    def malformed(self):
        return b'{"model":"sim","message":{"role":"assistant","content":"x\n'

    def models(self, model):
        return {"models": [{"name": model, "model": model, "size": 1, "digest": "sim",
                            "modified_at": "2025-01-01T00:00:00Z"}]}

    def refusal_finish(self):
        # Ollama has no content filter of its own; a local model refuses in plain text.
        return "stop"


# What each protocol calls a normal finish and a length cut.
STOP = {"anthropic": "end_turn", "openai": "stop", "gemini": "STOP", "ollama": "stop"}

WIRES: dict[str, Wire] = {w.kind: w for w in (AnthropicWire(), OpenAIWire(), GeminiWire(), OllamaWire())}


def _last_user(messages: list) -> str:
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content", "")
            if isinstance(content, list):
                return "".join(b.get("text", "") for b in content if isinstance(b, dict))
            return str(content)
    return ""
