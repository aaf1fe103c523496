"""How an answer got here, in one plain line: "claude overloaded (529) → gpt answered · 1.3 s".

Read from an answer's meta, the dict the chat keeps with each answer (`Result.as_dict()` plus its
`switches`), so a reloaded conversation tells the same story. For people: the badge and the
timeline keep the details. None when there is nothing to tell (the first provider simply answered).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .attempt import Outcome
from .tiers import Tier

# How a failed attempt reads, by error kind.
_FAILED = {
    "rate_limited": "rate-limited", "overloaded": "overloaded", "server": "had a server error",
    "timeout": "timed out", "connection": "could not be reached", "stream_broken": "broke off",
    "auth": "refused its key", "not_found": "does not know the model", "context_length": "found it too long",
    "bad_request": "refused the request",
}


def story(meta: Mapping) -> str | None:
    tier = Tier(meta.get("tier", "provider"))
    took = _seconds(meta.get("elapsed_ms"))
    who = meta.get("provider")
    if meta.get("stopped"):
        return f"Stopped by you · the words so far are {who}'s" if who else "Stopped by you before any text arrived"
    switches = meta.get("switches") or []
    if tier is Tier.CACHE:
        return "Served from the cache" + (f" · {_age(meta.get('notice', ''))}" if _age(meta.get("notice", "")) else "")
    failed = [a for a in meta.get("attempts") or [] if Outcome(a.get("outcome", "error")).failed]
    steps = [_failure(a) for a in failed if not _is_switch(a, switches)]
    steps += [f"{s['failed']} {'stalled' if s.get('reason') == 'stalled' else 'broke off'} mid-answer"
              for s in switches if s.get("provider") or tier is not Tier.PROVIDER]
    if tier is Tier.PROVIDER:
        if not steps:
            return None
        verb = "restarted the answer" if switches else "answered"
        if any(s.get("reason") == "stalled" for s in switches):
            verb = "took the answer over"
        if not switches and all(a.get("provider") == who for a in failed):
            return f"{', '.join(_dedupe(steps))} → retried, {who} answered · {took}"
        return f"{', '.join(_dedupe(steps))} → {who} {verb} · {took}"
    ending = {Tier.STALE_CACHE: "an earlier answer from the cache", Tier.OFFLINE: "the offline FAQ answered",
              Tier.UNAVAILABLE: "no provider could answer; your question is kept",
              Tier.DECLINED: f"{who} declined to answer"}[tier]
    return f"{', '.join(_dedupe(steps))} → {ending}" if steps else ending[0].upper() + ending[1:]


def _failure(attempt: Mapping) -> str:
    name = attempt.get("provider", "?")
    if attempt.get("outcome") == Outcome.SKIPPED.value:
        return f"{name} skipped (breaker open)" if "breaker" in attempt.get("detail", "") else f"{name} skipped"
    kind = attempt.get("error_kind") or ""
    status = attempt.get("status")
    return f"{name} {_FAILED.get(kind, 'failed')}" + (f" ({status})" if status else "")


def _is_switch(attempt: Mapping, switches: list) -> bool:
    """A mid-answer failure is told by its switch, not twice."""
    return attempt.get("error_kind") == "stream_broken" and any(s.get("failed") == attempt.get("provider")
                                                                for s in switches)


def _dedupe(steps: list[str]) -> list[str]:
    """A retried failure reads once: "claude overloaded (529)", not twice."""
    seen: list[str] = []
    for step in steps:
        if step not in seen:
            seen.append(step)
    return seen


def _seconds(ms: object) -> str:
    if not isinstance(ms, (int, float)):
        return "–"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _age(notice: str) -> str:
    match = re.search(r"answered (.+?) ago", notice)
    return f"asked {match.group(1)} ago" if match else ""
