"""The Status page's colours, one table per concept, so every chart agrees.

A provider keeps one colour everywhere, chosen by its place in the chain (not by the order a chart
happens to meet it in), from a set with no two alike and no green: green means "it worked".
Outcomes: success is green; a failure is never green or teal but a warm red, orange or magenta; the
neutral endings (cancelled, skipped, declined) are greys. Breakers and uptime bars use the traffic
lights people read on any public status page.
"""

from __future__ import annotations

from collections.abc import Sequence

OK, WARN, BAD, NONE = "#2e9e5b", "#e8a33d", "#d64545", "#d5d8dc"

# Blue, orange, purple, brown, pink, grey, olive, navy: distinct at a glance, and none reads as a status.
PROVIDERS = ("#3366cc", "#ff9900", "#8e44ad", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#1f3a93")

OUTCOMES = {
    "ok": OK,
    "declined": "#5b7083",
    "cancelled": "#9aa0a6",
    "skipped": "#c4c8cc",
    # failures, by error kind: warm colours only
    "rate_limited": "#f0a202",
    "overloaded": "#e4572e",
    "server": "#c0392b",
    "timeout": "#d35400",
    "connection": "#a93226",
    "stream_broken": "#c2185b",
    "auth": "#7b241c",
    "not_found": "#922b21",
    "context_length": "#b9770e",
    "bad_request": "#a04000",
    "content_filtered": "#884ea0",
}
FAILED = "#b03a2e"  # a failure of a kind not listed above

BREAKER = {"closed": OK, "half-open": WARN, "open": BAD}
UPTIME = {"ok": OK, "degraded": WARN, "down": BAD, "none": NONE}


def provider_colours(chain: Sequence[str]) -> dict[str, str]:
    """Each provider's colour, by its place in the chain (the same on every chart)."""
    return {name: PROVIDERS[i % len(PROVIDERS)] for i, name in enumerate(chain)}


def outcome_colour(result: str) -> str:
    """"ok", a neutral ending, or an error kind."""
    return OUTCOMES.get(result, FAILED)
