"""One process of the overhead bench's many-sessions row (bench/overhead.py): the same rounds on
this checkout's code and on an earlier revision's, each in a process of its own.

    python3 -P bench/sessions_child.py URL SESSIONS      (PYTHONPATH names the code to measure)

Run with `-P` and `PYTHONPATH` set to a checkout's root, it measures that checkout's `core`, not
this file's. So it imports nothing from `bench`, and only the API every revision since the
router's first shares. It reads a line, `routed` or `direct`, runs one round (every session asks
once, all at the same moment: through one Router, or through one bare openai client), and writes
the round's times in ms as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import openai

from core.config import Config, Policy, ProviderEntry, Secret
from core.messages import ChatRequest
from core.router import Router


def main(url: str, sessions: int) -> int:
    key, expected = os.environ["UNDERSTUDY_BENCH_KEY"], os.environ["UNDERSTUDY_BENCH_TEXT"]
    policy = Policy.defaults().with_(cache__enabled=False)
    entry = ProviderEntry(name="openai-0", kind="openai", model="openai-model", base_url=url, api_key=Secret(key),
                          **policy.timeouts.for_entry())
    router = Router(Config(providers=(entry,), policy=policy))
    router.start_probing()  # as the app's router does
    client = openai.OpenAI(api_key=key, base_url=url, max_retries=0)
    request = ChatRequest.ask("hi")
    messages = [{"role": "user", "content": "hi"}]

    def routed() -> None:
        result = router.ask(request)
        assert result.complete and result.text == expected, result.notice

    def direct() -> None:
        stream = client.chat.completions.create(model="m", messages=messages, stream=True,
                                                stream_options={"include_usage": True})
        text = "".join(c.delta.content or "" for e in stream for c in e.choices if c.delta)
        assert text == expected, text[:80]

    calls = {"routed": routed, "direct": direct}
    try:
        while line := sys.stdin.readline():
            sys.stdout.write(json.dumps(_round(calls[line.strip()], sessions)) + "\n")
            sys.stdout.flush()
    finally:
        router.close()
    return 0


def _round(call, sessions: int) -> list[float]:
    times: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(sessions)

    def session() -> None:
        barrier.wait()
        t0 = time.perf_counter()
        call()
        took = (time.perf_counter() - t0) * 1000
        with lock:
            times.append(took)

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(times) != sessions:
        raise SystemExit("a session failed (its traceback is above)")
    return times


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], int(sys.argv[2])))
