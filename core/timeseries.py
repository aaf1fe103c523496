"""Time axes for the Status page's charts: a bucket size fitted to the time shown, and where a
line should break because nothing happened for a while."""

from __future__ import annotations

from collections.abc import Sequence

# Sizes people read at a glance, seconds.
NICE = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def bucket_seconds(span_s: float, bars: int = 30) -> int:
    """The smallest nice size that draws at most `bars` buckets over `span_s` seconds, so bars are
    never hairlines (10 s buckets over an hour made 360 of them)."""
    for size in NICE:
        if span_s / size <= bars:
            return size
    return NICE[-1]


def breaks(times: Sequence[float], *, idle_s: float | None = None) -> list[int]:
    """Indexes `i` where the gap from times[i-1] to times[i] is idle time, not a trend: a line
    must stop there instead of drawing straight across. Idle means longer than `idle_s`, by default
    five times the median gap and at least 30 s."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    if not gaps:
        return []
    if idle_s is None:
        median = sorted(gaps)[len(gaps) // 2]
        idle_s = max(30.0, 5 * median)
    return [i + 1 for i, gap in enumerate(gaps) if gap > idle_s]
