"""`/metrics` is valid Prometheus text whatever a provider is called (issue 8, item 10): every
label survives a round trip through prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import Config
from core.endpoints import prometheus
from core.messages import ChatRequest
from core.metrics import AttemptEvent
from core.router import Router
from core.simulator import Fault
from tests.conftest import policy

# A colon (the old keys were joined with it and split back), and each character the text format escapes.
NAMES = ("colon:in:name", 'quote"name', "back\\slash\\", "new\nline", 'all:"\\\n:of them')
SICK = NAMES[:-1]  # every provider but the last answers 503
HEALTHY = NAMES[-1]


@pytest.fixture
def router(sims, adapters):
    kinds = ("anthropic", "openai", "gemini", "ollama", "openai")
    servers = [sims(kind) for kind in kinds]
    for server in servers[:-1]:
        server.set_default(Fault.http(503))
    providers = [adapters(s, name=name, first_token_timeout=5.0, idle_timeout=5.0)
                 for s, name in zip(servers, NAMES)]
    config = Config(providers=tuple(p.entry for p in providers),
                    policy=policy(breaker__fail_max=1, retries__max_attempts=1, hedging__enabled=False))
    r = Router(config, providers=providers)
    yield r
    r.close()


def parsed(router) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(prometheus(router))}


def test_every_label_survives_the_prometheus_parser(router):
    result = router.ask(ChatRequest.ask("What is an understudy?"))
    assert result.provider == HEALTHY and result.complete
    families = parsed(router)

    attempts = {(s.labels["provider"], s.labels["outcome"], s.labels["error_kind"]): s.value
                for s in families["understudy_attempts"]}
    assert attempts == {**{(name, "error", "overloaded"): 1 for name in SICK}, (HEALTHY, "ok", "none"): 1}

    transitions = {(s.labels["provider"], s.labels["state"]) for s in families["understudy_breaker_transitions"]}
    assert transitions == {(name, "open") for name in SICK}

    states = {s.labels["provider"]: s.value for s in families["understudy_breaker_state"]}
    assert states == {**{name: 2 for name in SICK}, HEALTHY: 0}

    tokens = {(s.labels["provider"], s.labels["direction"]): s.value for s in families["understudy_tokens"]}
    assert tokens[(HEALTHY, "input")] == result.usage.input_tokens
    assert tokens[(HEALTHY, "output")] == result.usage.output_tokens

    latency = {s.labels["provider"] for s in families["understudy_latency_seconds"]}
    assert latency == {HEALTHY}
    assert [(s.labels, s.value) for s in families["understudy_requests"]] == [({"tier": "provider"}, 1)]


def test_large_counts_are_exact(router):
    router.metrics.record(AttemptEvent(0.0, HEALTHY, "m", "ok", None, 1.0, 1.0, False, 123_456_789, 987_654_321))
    tokens = {(s.labels["provider"], s.labels["direction"]): s.value for s in parsed(router)["understudy_tokens"]}
    assert tokens == {(HEALTHY, "input"): 123_456_789, (HEALTHY, "output"): 987_654_321}
