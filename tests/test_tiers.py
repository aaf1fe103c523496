"""One vocabulary for where an answer came from (`Tier`) and how an attempt ended (`Outcome`)."""

from __future__ import annotations

import json

from core.answer import Result
from core.attempt import Attempt, Outcome
from core.tiers import Tier


def test_only_model_output_goes_back_as_context():
    assert {t for t in Tier if t.model_output} == {Tier.PROVIDER, Tier.CACHE, Tier.STALE_CACHE}


def test_the_cli_exits_1_only_when_no_provider_could_answer():
    assert {t: t.exit_status for t in Tier} == {t: int(t is Tier.UNAVAILABLE) for t in Tier}


def test_every_degraded_tier_is_labelled_and_a_normal_answer_is_not():
    assert Tier.PROVIDER.label == "" and all(t.label for t in Tier if t is not Tier.PROVIDER)
    assert Tier.CACHE.label == "🗄️ cached"


def test_failed_means_the_chain_had_to_move_past_the_provider():
    assert {o for o in Outcome if o.failed} == {Outcome.ERROR, Outcome.SKIPPED}


def test_a_result_as_a_dict_holds_plain_json_values():
    result = Result("hi", True, Tier.STALE_CACHE, attempts=(Attempt("a", "m", Outcome.SKIPPED),))
    d = json.loads(json.dumps(result.as_dict()))
    assert d["tier"] == "stale_cache" and d["attempts"][0]["outcome"] == "skipped"
    assert type(result.as_dict()["tier"]) is str and type(result.as_dict()["attempts"][0]["outcome"]) is str
