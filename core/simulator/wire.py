"""Each provider's wire format, as the simulated servers speak it.

Bodies and stream frames follow the providers' documented APIs and the field notes
(shared/reference/sdk-and-streamlit.md §2–§6), so the real SDKs parse them exactly as they would
parse the real thing. Error shapes and broken frames are the protocol's `Dialect` (core/faults.py),
declared in its provider kind's record.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..faults import Dialect, ndjson, sse
from ..providers import kinds


@dataclass(frozen=True)
class Frames:
    """A stream in three parts, so faults can cut it anywhere: before, between or after text."""

    preamble: list[bytes]
    text: list[bytes]
    epilogue: list[bytes]


class Wire:
    """One provider's protocol. Subclasses fill in the shapes; how it frames its stream and words its
    errors is its `dialect` (core/faults.py), shared with the chaos transport."""

    kind = ""
    stop = "stop"  # the finish reason of a normal end
    length = "length"  # ... of an answer cut by max_tokens
    refusal = "content_filter"  # ... of a content-policy refusal

    @property
    def dialect(self) -> Dialect:
        return kinds()[self.kind].dialect

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

    def full(self, text: str, model: str, usage: tuple[int, int], finish: str) -> dict:
        raise NotImplementedError

    def frames(self, pieces: list[str], model: str, usage: tuple[int, int], finish: str) -> Frames:
        raise NotImplementedError

    def without_sentinel(self, frames: Frames) -> Frames:
        """The complete stream minus its optional end sentinel (catalogue S11)."""
        return frames

    def models(self, model: str) -> dict:
        raise NotImplementedError


class AnthropicWire(Wire):
    kind = "anthropic"
    stop, length, refusal = "end_turn", "max_tokens", "refusal"

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

    def models(self, model):
        return {"data": [{"type": "model", "id": model, "display_name": model,
                          "created_at": "2025-01-01T00:00:00Z"}],
                "has_more": False, "first_id": model, "last_id": model}


class OpenAIWire(Wire):
    kind = "openai"

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

    def models(self, model):
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "sim"}]}


class GeminiWire(Wire):
    kind = "gemini"
    stop, length, refusal = "STOP", "MAX_TOKENS", "SAFETY"

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

    def models(self, model):
        return {"models": [{"name": f"models/{model}", "displayName": model,
                            "supportedGenerationMethods": ["generateContent"]}]}


class OllamaWire(Wire):
    kind = "ollama"
    refusal = "stop"  # Ollama has no content filter of its own; a local model refuses in plain text.

    def route(self, method, path):
        if method == "POST" and path == "/api/chat":
            return "chat", None
        if method == "GET" and path == "/api/tags":
            return "models", None
        return None

    def prompt(self, body):
        return body.get("model", ""), bool(body.get("stream", True)), _last_user(body.get("messages", []))

    def _msg(self, model, text, done, **extra):
        return {"model": model, "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text}, "done": done, **extra}

    def _done(self, model, usage, finish, text=""):
        return self._msg(model, text, True, done_reason=finish, total_duration=1_000_000,
                         prompt_eval_count=usage[0], eval_count=usage[1])

    def full(self, text, model, usage, finish):
        return self._done(model, usage, finish, text)

    def frames(self, pieces, model, usage, finish):
        return Frames([], [ndjson(self._msg(model, p, False)) for p in pieces],
                      [ndjson(self._done(model, usage, finish))])

    def models(self, model):
        return {"models": [{"name": model, "model": model, "size": 1, "digest": "sim",
                            "modified_at": "2025-01-01T00:00:00Z"}]}


WIRES: dict[str, Wire] = {w.kind: w for w in (AnthropicWire(), OpenAIWire(), GeminiWire(), OllamaWire())}


def _last_user(messages: list) -> str:
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content", "")
            if isinstance(content, list):
                return "".join(b.get("text", "") for b in content if isinstance(b, dict))
            return str(content)
    return ""
