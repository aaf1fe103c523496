"""API keys never leave an adapter: provider and proxy error text that echoes the request's
headers is masked once, at the adapter's edge, so attempts, breaker reasons, logs, metrics and
the CLI's JSON carry no key material."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import cli
from core.config import Config, Policy, Secret
from core.errors import ProviderError
from core.messages import ChatRequest
from core.metrics import TransitionEvent, as_row
from core.redact import looks_like_key, mask, redact
from core.router import Router
from core.simulator import Fault, SimServer
from tests.conftest import KEY, KINDS, drain, toml_for

Q = ChatRequest.ask("What is an understudy?")
# Built from pieces so that no secret scanner mistakes the test file for a leak.
ANT = "sk-" + "ant-api03-Zx9fake0fake1fake2fake3fake4-7f3c"
GOOGLE = "AI" + "zaFAKE0fake1fake2fake3fake4fake5fak"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlLXVzZXIifQ.ZmFrZS1zaWduYXR1cmU"


# -- the redaction function ---------------------------------------------------------------------
ECHOES = {
    "python dict": f"{{'authorization': 'Bearer {KEY}', 'x-api-key': '{ANT}', 'x-goog-api-key': '{GOOGLE}'}}",
    "json": json.dumps({"authorization": f"Bearer {KEY}", "x-api-key": ANT}),
    "raw http": f"Authorization: Bearer {KEY}\r\nx-goog-api-key: {GOOGLE}\r\nX-Api-Key: {ANT}",
    "query string": f"GET /v1beta/models?key={GOOGLE}&alt=sse",
    "bare shapes": f"keys {KEY}, {ANT} and {GOOGLE} and {JWT}",
    "bearer alone": "proxy said: bearer Zm9vYmFyYmF6cXV4MTIzNDU2",
}


@pytest.mark.parametrize("case", list(ECHOES))
def test_credentials_in_echoed_text_are_masked(case):
    out = redact(ECHOES[case])
    for secret in (KEY, ANT, GOOGLE, JWT, "Zm9vYmFyYmF6cXV4MTIzNDU2"):
        assert secret not in out, out
    assert redact(out) == out  # masking twice changes nothing


def test_masks_keep_the_kind_and_last_four():
    assert mask(ANT) == "sk-ant-…7f3c" and mask(GOOGLE) == "AIza…5fak" and mask("short1") == "[redacted]"
    assert "'authorization': 'Bearer sk-…cdef'" in redact(ECHOES["python dict"])


def test_a_configured_key_of_no_known_shape_is_masked_anywhere():
    opaque = "proxy-tok-00aa11bb22cc"
    assert redact(f"upstream rejected {opaque}!", [opaque]) == "upstream rejected …22cc!"


ORDINARY = [
    "Invalid API key provided.",
    "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.",
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 250000 tokens.",
    "Rate limit reached for gpt-4 in organization org-abc123 on tokens per min (TPM): Limit 10000",
    "model 'llama3.2' not found, try pulling it first",
    "could not reach the provider (ConnectError: [Errno 111] Connection refused)",
    "request-id: req_011CSHoEeqs5C35K2UUqR7Fy",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_error_text_is_left_readable(text):
    assert redact(text) == text


def test_what_looks_like_a_key():
    assert looks_like_key(KEY) and looks_like_key(GOOGLE) and looks_like_key("aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z")
    assert not any(looks_like_key(n) for n in ("OPENAI_API_KEY", "SIM_KEY", "my_proxy_key", "GEMINI_API_KEY"))


# -- through each real SDK ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_an_error_body_echoing_the_request_headers_leaves_no_key(kind, sims, adapters):
    server = sims(kind)
    server.push(Fault.http(500, echo_headers=True))
    with pytest.raises(ProviderError) as caught:
        drain(adapters(server), Q)
    err = caught.value
    assert "request headers" in err.message  # the echo got through the SDK...
    assert "…cdef" in err.message  # ...with the key masked, not dropped
    assert KEY not in err.message and KEY not in str(err) and KEY not in repr(err.args)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_key_of_no_known_shape_is_masked_too(kind, adapters):
    opaque = "opaque0proxy0credential0x1y2"
    with SimServer(kind, api_key=opaque) as server:
        server.push(Fault.http(401, echo_headers=True))
        with pytest.raises(ProviderError) as caught:
            drain(adapters(server, api_key=Secret(opaque)), Q)
    assert "request headers" in caught.value.message and opaque not in str(caught.value)


# -- everything derived from the error ----------------------------------------------------------
def _policy(**sections) -> Policy:
    return Policy.defaults().with_(**{f"{section}__{key}": value for section, settings in sections.items()
                                      for key, value in settings.items()})


def test_attempts_breaker_reasons_metrics_and_logs_carry_no_key(sims, adapters, caplog):
    failing, backup = sims("openai"), sims("gemini")
    failing.set_default(Fault.http(500, echo_headers=True))
    providers = [adapters(failing, name="gpt"), adapters(backup, name="gemini")]
    config = Config(providers=tuple(p.entry for p in providers),
                    policy=_policy(breaker={"fail_max": 1}, health={"probe_interval": 0}))
    router = Router(config, providers=providers)
    caplog.set_level(logging.INFO, logger="understudy")
    try:
        result = router.ask(Q)
        router.probe()
    finally:
        router.close()
    assert result.provider == "gemini"
    failed = [a for a in result.attempts if a.provider == "gpt"]
    assert failed and all("request headers" in a.detail for a in failed)
    transitions = router.metrics.events(TransitionEvent)
    assert any("request headers" in t.reason for t in transitions)  # the reason quotes the error...
    exported = json.dumps(result.as_dict()) + json.dumps([as_row(e) for e in router.metrics.events()])
    exported += repr(router.metrics.summary()) + caplog.text
    assert "breaker provider=gpt" in caplog.text
    assert KEY not in exported  # ...and nothing anywhere holds the key


def test_ask_json_carries_no_key(sims, tmp_path, monkeypatch):
    servers = [sims(k) for k in KINDS]
    for s in servers:
        s.set_default(Fault.http(503, echo_headers=True))
    path = tmp_path / "chain.toml"
    path.write_text(toml_for(servers), encoding="utf-8")
    monkeypatch.setenv("SIM_KEY", KEY)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["ask", "--json", "--config", str(path), "What is a hedge?"], stdout=out, stderr=err)
    assert code == 1, err.getvalue()
    result = json.loads(out.getvalue())
    assert sum("request headers" in a["detail"] for a in result["attempts"]) >= len(KINDS)
    assert KEY not in out.getvalue() + err.getvalue()


def test_status_shows_the_key_masked_and_probe_errors_without_it(sims, tmp_path, monkeypatch):
    servers = [sims(k) for k in KINDS]
    for s in servers:
        s.set_default(Fault.http(500, echo_headers=True))
    path = tmp_path / "chain.toml"
    path.write_text(toml_for(servers), encoding="utf-8")
    monkeypatch.setenv("SIM_KEY", KEY)
    for extra in ([], ["--json"]):
        out = io.StringIO()
        assert cli.main(["status", "--config", str(path), *extra], stdout=out, stderr=io.StringIO()) == 0
        assert "sk-…cdef" in out.getvalue() and KEY not in out.getvalue()


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path):
    for pasted in (KEY, GOOGLE, "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z",
                   # no known prefix: lowercase hex (Together-style), Groq, Hugging Face
                   "3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2",
                   "gsk_fakeR4nd0mK3yB0dy0123456789abcdef", "hf_fakeR4nd0mK3yB0dy0123456789ab"):
        path = tmp_path / "chain.toml"
        path.write_text(f'[[providers]]\nname="a"\nkind="openai"\nmodel="m"\napi_key_env="{pasted}"\n',
                        encoding="utf-8")
        for command in (["status", "--no-probe"], ["ask", "--json", "hi"]):
            out, err = io.StringIO(), io.StringIO()
            code = cli.main([command[0], "--config", str(path), *command[1:]], stdout=out, stderr=err)
            assert code == 2
            assert "api_key_env" in err.getvalue() and err.getvalue().count("\n") == 1
            assert pasted not in out.getvalue() + err.getvalue()
            assert pasted[-4:] not in err.getvalue()


def test_status_masks_a_password_in_the_endpoint(sims, tmp_path, monkeypatch):
    server = sims("ollama")
    url = server.url.replace("http://", "http://proxyuser:pr0xy-pa55word@")
    path = tmp_path / "chain.toml"
    path.write_text(f'[[providers]]\nname="local"\nkind="ollama"\nmodel="m"\nbase_url="{url}"\n', encoding="utf-8")
    out = io.StringIO()
    assert cli.main(["status", "--no-probe", "--json", "--config", str(path)], stdout=out, stderr=io.StringIO()) == 0
    (row,) = json.loads(out.getvalue())
    assert row["endpoint"] == url.replace("pr0xy-pa55word", "[redacted]")


def test_a_key_pasted_anywhere_in_the_file_is_not_echoed_by_the_config_error(tmp_path):
    path = tmp_path / "chain.toml"
    path.write_text(f'[[providers]]\nname="a"\nkind="{KEY}"\nmodel="m"\n', encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", "--no-probe", "--config", str(path)], stdout=out, stderr=err) == 2
    assert "providers[0].kind" in err.getvalue() and KEY not in err.getvalue()


@pytest.mark.parametrize("bad_key", ["sk-fake-first-half\r\nsecond-half-Zx9Qm2Lp7", "sk-fake key with spaces 0123",
                                     "\u201csk-fake-smart-quotes-0123456789\u201d", "sk-fake-tab\tinside-0123456789"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_key_with_a_line_break_space_or_non_ascii_is_refused_at_load(bad_key, kind, sims, tmp_path, monkeypatch):
    """Sent in a header, such a key makes the HTTP library raise with the key in its text (and, with
    nothing sent, count against the provider's health): refuse it when the chain is loaded."""
    server = sims(kind)
    path = tmp_path / "chain.toml"
    path.write_text(toml_for([server]), encoding="utf-8")
    monkeypatch.setenv("SIM_KEY", bad_key)
    for command in (["status", "--no-probe"], ["ask", "--json", "hi"]):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main([command[0], "--config", str(path), *command[1:]], stdout=out, stderr=err)
        assert code == 2, err.getvalue()
        assert "SIM_KEY" in err.getvalue() and err.getvalue().count("\n") == 1
        shown = out.getvalue() + err.getvalue()
        assert not any(part in shown for part in ("first-half", "second-half", "spaces", "smart", "inside"))
    assert server.requests == []  # nothing was sent


@pytest.mark.parametrize("spelling", ["url-encoded", "json-escaped"])
def test_a_configured_key_is_masked_however_the_error_body_spells_it(spelling):
    import urllib.parse
    key = "opaque/Key+With=Symbols0123"
    quoted = urllib.parse.quote(key, safe="") if spelling == "url-encoded" else key.replace("/", "\\/")
    out = redact(f"upstream rejected {quoted} for this model", [key])
    assert quoted not in out and "Symbols" not in out and out.startswith("upstream rejected ")


@pytest.mark.parametrize("text, secret_part", [
    ("Cookie: session=fakeSessionValue0123", "fakeSessionValue"),
    ("Ocp-Apim-Subscription-Key: 0123456789abcdef0123", "0123456789abcdef"),
    ("X-Custom-Token: fakeTokenValue0123", "fakeTokenValue"),
    ("proxy https://user:p@ss-w0rd@proxy.example/v1 refused", "ss-w0rd"),
])
def test_more_credential_headers_and_passwords_are_masked(text, secret_part):
    assert secret_part not in redact(text)


def test_the_package_log_masks_configured_keys_and_credentials_in_messages_and_tracebacks(sims, adapters, caplog):
    # A traceback prints each chained exception's own text: under a ProviderError, the SDK's error
    # with the raw body. Whatever logs one (a bug's "raised outside the taxonomy", a probe's
    # failure), the line carries no key: neither one an adapter was built with, of no known shape,
    # nor anything shaped like one.
    opaque = "opaque0proxy0credential0x1y2"
    adapters(sims("anthropic"), api_key=Secret(opaque))
    caplog.set_level(logging.DEBUG, logger="understudy")
    log = logging.getLogger("understudy")
    try:
        try:
            raise RuntimeError(f"Error code: 429 - {{'message': {{'m': 'x Bearer {KEY}'}}, 'proxy': '{opaque}'}}")
        except RuntimeError as sdk:
            raise TypeError(f"expected string, got {opaque!r}") from sdk
    except TypeError:
        log.exception("adapter %s raised outside the taxonomy", f"proxy-{opaque}")
        log.error("again, with its stack", exc_info=True, stack_info=True)
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError: Error code: 429" in text and "TypeError: expected string" in text  # the traceback is kept...
    assert "Traceback" in text and "Stack (most recent call last)" in text
    assert "…cdef" in text and "…x1y2" in text  # ...masked, not dropped
    assert KEY not in text and opaque not in text
