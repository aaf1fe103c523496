"""The bare-SDK twin of `python -m core ask --jsonl`, for the overhead bench (bench/overhead.py):

    python -m bench.bare KIND=URL [KIND=URL ...]

The same loop with no router in it: read a line (the kind to ask) from stdin, stream the bench's
one request through that kind's official SDK (harness.direct_caller), write one JSON line with the
text, flush. The difference between the two processes' times is then the router's cost alone.
One process serves every kind: each imports in a second or two, and a quick run starts them all.
"""

from __future__ import annotations

import json
import sys

from .harness import direct_caller


def _text(kind: str, event) -> str:
    """The answer text one stream event carries, read the way a user of that SDK would."""
    if kind == "anthropic":
        return event.delta.text if event.type == "content_block_delta" else ""
    if kind == "openai":
        return "".join(c.delta.content or "" for c in event.choices if c.delta)
    if kind == "gemini":
        return event.text or ""
    return event.message.content or ""


def main(argv: list[str]) -> int:
    callers = {kind: direct_caller(kind, url) for kind, url in (a.split("=", 1) for a in argv)}
    out = sys.stdout
    while line := sys.stdin.buffer.readline():
        kind = line.decode("utf-8", "replace").strip()  # decoded, as the CLI reads its lines
        text = "".join(_text(kind, e) for e in callers[kind]())
        out.write(json.dumps({"text": text, "complete": True, "provider": kind}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
