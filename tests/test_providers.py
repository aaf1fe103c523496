"""Each adapter, through its real SDK, against a simulated server speaking that provider's wire format."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import pytest

from core.config import Config
from core.errors import ErrorKind, ProviderError
from core.messages import ChatRequest, Message, StreamEnd, TextDelta
from core.router import Router
from core.simulator import Fault
from tests.conftest import FAULTS, KEY, KINDS, ROOT, drain

# In-band refusals: Anthropic stop_reason "refusal", OpenAI finish_reason "content_filter",
# Gemini finishReason SAFETY (after=3) or a blocked prompt (after=0). Ollama has no content
# filter of its own: a local model refuses in plain text, which is an ordinary answer.
REFUSERS = ("anthropic", "openai", "gemini")

REQUEST = ChatRequest.ask("What is a circuit breaker?")


@pytest.mark.parametrize("kind", KINDS)
def test_streams_text_then_end_with_usage_and_model(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    items = list(provider.stream(REQUEST))
    assert all(isinstance(i, TextDelta) for i in items[:-1]) and isinstance(items[-1], StreamEnd)
    text = "".join(i.text for i in items[:-1])
    assert "What is a circuit breaker?" in text and text.rstrip().endswith("w49")
    end = items[-1]
    assert end.finish_reason == "stop"
    assert end.model == f"{kind}-test"
    assert end.usage.input_tokens == 5
    assert end.usage.output_tokens == len(items) - 1  # the simulator sends one token per piece


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(FAULTS))
def test_every_fault_maps_to_its_error_kind(kind, name, sims, adapters):
    fault, expected = FAULTS[name]
    server = sims(kind)
    provider = adapters(server)
    server.push(fault)
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    err = caught.value
    assert err.kind is expected, f"{kind} {name}: {err}"
    assert err.provider == kind
    assert err.__cause__ is not None or err.kind is ErrorKind.STREAM_BROKEN  # raised `from` the original
    if fault.kind == "status":
        assert err.status == fault.status
    # The adapter is still usable afterwards: the next request succeeds on the same client.
    text, end = drain(provider, REQUEST)
    assert end.finish_reason == "stop" and text


@pytest.mark.parametrize("kind", KINDS)
def test_retry_after_is_read_from_the_response(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    server.push(Fault.http(429, retry_after=7))
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.retry_after == pytest.approx(7)


@pytest.mark.parametrize("hint", ["retry-after-ms", "reset", "text"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_hint_in_any_form_is_read_through_the_real_sdk(kind, hint, sims, adapters):
    """retry-after-ms; each protocol's rate-limit reset headers (OpenAI's durations, Anthropic's
    timestamps; the others have none and send Retry-After); or only the message text."""
    server = sims(kind)
    provider = adapters(server)
    server.push(Fault.http(429, retry_after=7, hint=hint))
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    if kind == "anthropic" and hint == "reset":
        # A timestamp to the second, 7 s from when it was written (rounded up), read back later:
        # never more than 8 s whatever the machine's load, and found at all only in that header.
        assert caught.value.retry_after is not None and caught.value.retry_after <= 8
    else:
        assert caught.value.retry_after == pytest.approx(7)


def test_gemini_retry_delay_comes_from_retryinfo_in_the_body(sims, adapters):
    server = sims("gemini")
    provider = adapters(server)
    server.push(Fault.http(429, retry_after=3.5, retry_after_header=False))
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == pytest.approx(3.5)


@pytest.mark.parametrize("kind", REFUSERS)
@pytest.mark.parametrize("after", [0, 3])
def test_in_band_refusal_is_content_filtered(kind, after, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    server.push(Fault("refusal", after=after))
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.CONTENT_FILTERED
    assert not caught.value.kind.fails_over and not caught.value.kind.health


@pytest.mark.parametrize("kind", KINDS)
def test_complete_stream_without_optional_sentinel_is_complete(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    server.push(Fault("no_sentinel"))
    text, end = drain(provider, REQUEST)
    assert end.finish_reason == "stop" and end.usage.output_tokens > 0 and text


@pytest.mark.parametrize("kind", KINDS)
def test_max_tokens_stop_is_reported_as_length(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    server.push(Fault("length"))
    _, end = drain(provider, REQUEST)
    assert end.finish_reason == "length"


@pytest.mark.parametrize("kind", KINDS)
def test_empty_answer_is_not_a_success(kind, sims, adapters):
    server = sims(kind, responder=lambda q, m: "")
    provider = adapters(server)
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.STREAM_BROKEN


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
def test_missing_key_is_auth_and_sends_nothing(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server, api_key=None)
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.AUTH and "no API key" in caught.value.message
    assert server.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_key_is_auth(kind, sims, adapters):
    from core.config import Secret

    server = sims(kind)
    provider = adapters(server, api_key=Secret("sk-wrong-000000000000"))
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.AUTH


def test_connection_refused_is_connection(sims, adapters):
    for kind in KINDS:
        server = sims(kind)
        provider = adapters(server)
        server.close()  # nothing listens on that port any more
        with pytest.raises(ProviderError) as caught:
            drain(provider, REQUEST)
        assert caught.value.kind is ErrorKind.CONNECTION, kind


CONVERSATION = ChatRequest(
    messages=(Message("system", "Answer in French."), Message("user", "Hi"), Message("assistant", "Bonjour"),
              Message("user", "How are you?"), Message("user", "And the weather?")),
    system="You are terse.",
    temperature=0.3,
    max_tokens=77,
)


def _sent(kind, sims, adapters):
    server = sims(kind)
    drain(adapters(server), CONVERSATION)
    (request,) = server.chat_requests()
    return request


def test_anthropic_request_mapping(sims, adapters):
    req = _sent("anthropic", sims, adapters)
    assert req.path == "/v1/messages"
    assert req.headers.get("x-api-key") == KEY or req.headers.get("authorization") == f"Bearer {KEY}"
    body = req.body
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bonjour"},
                                {"role": "user", "content": "How are you?\n\nAnd the weather?"}]
    assert body["max_tokens"] == 77 and body["stream"] is True and body["model"] == "anthropic-test"
    assert "temperature" not in body  # the Messages API in SDK 2.14 has no such parameter


def test_openai_request_mapping(sims, adapters):
    req = _sent("openai", sims, adapters)
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    body = req.body
    assert body["messages"][0] == {"role": "system", "content": "You are terse.\n\nAnswer in French."}
    assert [m["role"] for m in body["messages"][1:]] == ["user", "assistant", "user"]
    assert body["temperature"] == 0.3
    # base_url is set (a compatible server), so the widely supported name is used
    assert body["max_tokens"] == 77
    assert body["stream_options"] == {"include_usage": True}


def test_gemini_request_mapping(sims, adapters):
    req = _sent("gemini", sims, adapters)
    assert req.path.startswith("/v1/models/gemini-test:streamGenerateContent") and "alt=sse" in req.path
    assert req.headers["x-goog-api-key"] == KEY
    body = req.body
    assert body["systemInstruction"]["parts"][0]["text"] == "You are terse.\n\nAnswer in French."
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"][0]["text"] == "Bonjour"
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 77}


def test_ollama_request_mapping(sims, adapters):
    req = _sent("ollama", sims, adapters)
    assert req.path == "/api/chat" and req.headers["authorization"] == f"Bearer {KEY}"
    body = req.body
    assert body["messages"][0] == {"role": "system", "content": "You are terse.\n\nAnswer in French."}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["options"]["temperature"] == 0.3 and body["options"]["num_predict"] == 77
    assert body["stream"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_probe_uses_a_list_models_call_that_costs_no_tokens(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server)
    provider.probe()
    assert [r.method for r in server.requests] == ["GET"]
    server.set_default(Fault.http(503))
    with pytest.raises(ProviderError) as caught:
        provider.probe()
    assert caught.value.kind is ErrorKind.OVERLOADED


@pytest.mark.parametrize("seconds", [5.0, 7.0])
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_the_sdk_runs_on_the_entrys_timeouts_even_when_they_equal_httpxs_default(kind, seconds, sims, adapters):
    # Every phase at 5 s is httpx's default Timeout(5.0): these SDKs took such a client timeout for
    # "none set" and put their own 600 s in, which they also tell the server.
    server = sims(kind)
    provider = adapters(server, connect_timeout=seconds, first_token_timeout=seconds, idle_timeout=seconds)
    drain(provider, REQUEST)
    provider.probe()
    assert [float(r.headers["x-stainless-read-timeout"]) for r in server.requests] == [seconds, seconds]


@pytest.mark.timeout(60)  # without the entry's limit the SDK's own (600 s) would end the stall
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_stall_ends_at_an_idle_timeout_of_five_seconds(kind, sims, adapters):
    # The one real 5 s wait here: no other value meets httpx's default, and the SDK's read
    # timeout is the only limit on a stream read outside the router.
    server = sims(kind)
    provider = adapters(server, connect_timeout=5.0, first_token_timeout=5.0, idle_timeout=5.0)
    server.push(Fault("stall", after=5))  # silent until the client gives up
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    assert caught.value.kind is ErrorKind.STREAM_BROKEN and caught.value.stalled


@pytest.mark.parametrize("kind", KINDS)
def test_a_probe_waits_no_longer_than_its_own_timeout_whatever_the_entrys(kind, sims, adapters):
    server = sims(kind)
    provider = adapters(server, first_token_timeout=300.0, idle_timeout=300.0)  # a slow model's
    server.set_default(Fault("silence"))  # list-models never answers
    with pytest.raises(ProviderError) as caught:
        provider.probe(timeout=0.3)
    assert caught.value.kind is ErrorKind.TIMEOUT and [r.method for r in server.requests] == ["GET"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_client_serves_many_threads_at_once(kind, sims, adapters):
    server = sims(kind, chunk_delay=0.002)
    provider = adapters(server)
    results, errors = [], []
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        try:
            results.append(drain(provider, ChatRequest.ask(f"question {i}"))[0])
        except Exception as e:  # noqa: BLE001 — collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(r.split("'")[1] for r in results) == sorted(f"question {i}" for i in range(8))


@pytest.mark.parametrize("kind", KINDS)
def test_abandoning_a_stream_releases_the_connection(kind, sims, adapters):
    server = sims(kind, chunk_delay=0.001)
    provider = adapters(server)
    for _ in range(3):  # more than a handful of leaked connections would exhaust nothing, so check reuse works
        stream = provider.stream(REQUEST)
        assert isinstance(next(stream), TextDelta)
        stream.close()
    text, end = drain(provider, REQUEST)
    assert end.finish_reason == "stop" and text


def test_the_kinds_are_read_without_loading_any_sdk():
    # Config and the CLI read every kind's record; an SDK loads only when its first client is made.
    code = ("import sys, core.cli, core.config\n"
            "config = core.config.from_environment(env={'ANTHROPIC_API_KEY': 'k', 'OLLAMA_HOST': 'localhost:1'})\n"
            "assert [e.kind for e in config.providers] == ['anthropic', 'ollama']\n"
            "print(sorted(m for m in ('anthropic', 'openai', 'google.genai', 'ollama') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def _bare_sdk(kind, server):
    """The same streamed request through the SDK alone, with its own HTTP client, as its users write it."""
    import anthropic
    import ollama
    import openai
    from google import genai
    from google.genai import types

    msgs = [{"role": "user", "content": "hi"}]
    if kind == "anthropic":
        c = anthropic.Anthropic(api_key=KEY, base_url=server.url, max_retries=0)
        return lambda: list(c.messages.create(model="m", max_tokens=512, messages=msgs, stream=True))
    if kind == "openai":
        c = openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0)
        return lambda: list(c.chat.completions.create(model="m", messages=msgs, stream=True))
    if kind == "gemini":
        c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=server.url))
        return lambda: list(c.models.generate_content_stream(model="m", contents="hi"))
    c = ollama.Client(host=server.url, headers={"authorization": f"Bearer {KEY}"})
    return lambda: list(c.chat(model="m", messages=msgs, stream=True))


@pytest.mark.parametrize("kind", KINDS)
def test_a_complete_answer_leaves_its_connection_as_the_sdk_alone_would(kind, sims, adapters):
    # Three of the four SDKs read a stream to the end of its HTTP body and keep the connection for
    # the next request (no new TCP and TLS handshake); openai's closes it after [DONE]. An adapter
    # that stopped at the end marker would drop it every time.
    server = sims(kind)
    provider = adapters(server)
    for _ in range(3):
        drain(provider, REQUEST)
    ours = {r.client for r in server.chat_requests()}
    bare = _bare_sdk(kind, server)
    for _ in range(3):
        bare()
    theirs = {r.client for r in server.chat_requests()[3:]}
    assert len(ours) == len(theirs), f"ours came on {len(ours)} connections, the SDK's on {len(theirs)}"
    assert len(ours) == (3 if kind == "openai" else 1)


@pytest.mark.timeout(60)
def test_a_server_that_streams_on_after_the_end_marker_does_not_hold_the_answer(adapters):
    # After message_stop it sends pings as fast as it can, for ever: reading "the rest of the
    # body" must end anyway (a firehose never makes a read wait, so the read timeouts can't).
    import http.server
    import json as _json

    def frame(event: str, data: dict) -> bytes:
        body = f"event: {event}\ndata: {_json.dumps({'type': event, **data})}\n\n".encode()
        return b"%x\r\n%s\r\n" % (len(body), body)

    class Firehose(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            message = {"id": "m", "type": "message", "role": "assistant", "model": "m", "content": [],
                       "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
            self.wfile.write(frame("message_start", {"message": message}))
            self.wfile.write(frame("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
            self.wfile.write(frame("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello."}}))
            self.wfile.write(frame("content_block_stop", {"index": 0}))
            self.wfile.write(frame("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}))
            self.wfile.write(frame("message_stop", {}))
            pings = frame("ping", {}) * 20_000  # about 1 MB a write: the client never finds the socket empty
            try:
                while True:
                    self.wfile.write(pings)
            except OSError:
                pass  # the client hung up: what it should do

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Firehose)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake = type("Fake", (), {"kind": "anthropic", "url": f"http://127.0.0.1:{server.server_port}"})()
        provider = adapters(fake)
        text, end = drain(provider, REQUEST)
        assert text == "Hello." and end.finish_reason == "stop" and end.usage.output_tokens == 1
    finally:
        server.shutdown()
        server.server_close()


# -- error bodies of shapes no SDK expects --------------------------------------------------------
def _echo(headers) -> str:
    """The request's credential header, quoted as a proxy in front of the provider may."""
    lower = {k.lower(): v for k, v in headers.items()}
    return next(lower[h] for h in ("authorization", "x-api-key", "x-goog-api-key") if h in lower)


RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
# (protocol, status, the body given the request's headers, the kind it means, the retry hint readable
# in it). Each message (Ollama's `error`) is not text, or its hint can't be read. A str body is sent
# as an event stream: OpenAI's status errors are safe (its SDK makes `code` text, and a message
# object is written out), but an error event inside the stream keeps its message as it came.
ODD_BODIES = {
    "anthropic message is an object": ("anthropic", 429, lambda h: {"type": "error", "error": {
        "type": "rate_limit_error", "message": {"text": "Please try again in 2s", "seen": _echo(h)}}},
        ErrorKind.RATE_LIMITED, 2.0),
    "openai stream error message is an object": ("openai", 200, lambda h: "data: " + json.dumps({"error": {
        "message": {"text": "Please try again in 1.5s", "seen": _echo(h)}, "type": "server_error"}}) + "\n\n",
        ErrorKind.STREAM_BROKEN, 1.5),
    "gemini message is an object": ("gemini", 429, lambda h: {"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": {"text": "Please retry in 3s.", "seen": _echo(h)}}},
        ErrorKind.RATE_LIMITED, 3.0),
    "gemini retryDelay 1.2.3s": ("gemini", 429, lambda h: {"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": f"Quota exceeded (saw {_echo(h)})",
        "details": [{"@type": RETRY_INFO, "retryDelay": "1.2.3s"}]}}, ErrorKind.RATE_LIMITED, None),
    "gemini retryDelay .s": ("gemini", 429, lambda h: {"error": {
        "code": 429, "message": f"Quota exceeded (saw {_echo(h)})",
        "details": [{"@type": RETRY_INFO, "retryDelay": ".s"}]}}, ErrorKind.RATE_LIMITED, None),
    "ollama error is an object": ("ollama", 429, lambda h: {"error": {"message": f"try again in 2s ({_echo(h)})"}},
                                  ErrorKind.RATE_LIMITED, 2.0),
    "ollama error is a list": ("ollama", 429, lambda h: {"error": ["busy", {"seen": _echo(h)}]},
                               ErrorKind.RATE_LIMITED, None),
    "ollama error is a number": ("ollama", 429, lambda h: {"error": 5}, ErrorKind.RATE_LIMITED, None),
    "ollama error is null": ("ollama", 429, lambda h: {"error": None, "seen": _echo(h)}, ErrorKind.RATE_LIMITED, None),
}


class FixedReply:
    """A provider that answers every request with one HTTP status and a JSON body made from the
    request's headers, speaking no protocol beyond that."""

    def __init__(self, kind: str, status: int, body) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                reply = body(dict(self.headers))
                stream = isinstance(reply, str)
                data = (reply if stream else json.dumps(reply)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.kind = kind
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{self.server.server_port}"
        self.url = root + "/v1" if kind == "openai" else root

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fixed_reply():
    started: list[FixedReply] = []

    def start(kind, status, body):
        started.append(FixedReply(kind, status, body))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.mark.parametrize("case", list(ODD_BODIES))
def test_an_error_body_of_any_shape_keeps_its_status_and_hint_and_no_key(case, fixed_reply, sims, adapters, caplog):
    kind, status, body, expected, hint = ODD_BODIES[case]
    caplog.set_level(logging.DEBUG, logger="understudy")
    provider = adapters(fixed_reply(kind, status, body), name="odd")
    with pytest.raises(ProviderError) as caught:
        drain(provider, REQUEST)
    err = caught.value
    assert err.kind is expected and err.status == (status if status != 200 else None), str(err)
    assert err.retry_after == (pytest.approx(hint) if hint is not None else None), str(err)
    assert KEY not in str(err) and KEY not in repr(err.args)

    # Through the router: the attempt says the same, and nothing it logs or returns holds the key.
    backup = adapters(sims("openai"), name="backup")
    router = Router(Config(providers=(provider.entry, backup.entry)), providers=[provider, backup])
    try:
        result = router.ask(REQUEST)
    finally:
        router.close()
    assert result.provider == "backup"
    assert {a.error_kind for a in result.attempts if a.provider == "odd"} == {expected.value}
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert KEY not in json.dumps(result.as_dict()) + logged
