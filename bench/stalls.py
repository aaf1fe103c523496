"""10. Stalls and Stop: an answer that goes silent mid-stream, on every protocol, with default
settings. The providers run in a child process, paced like a real model (first text after 0.25 s,
then a chunk every 20 ms); the primary stalls after 20 of its 60 chunks.

- stall → complete: from the 20th chunk reaching the caller to the complete answer (target ≤ 3 s),
  on a fresh router (the stall threshold's cold start) and on one that has seen two answers (the
  threshold it learned). Side by side, alternated: the bare SDK on the same stalled stream, with
  its read timeout at the router's idle deadline (10 s), as a careful SDK user would set it.
- next request: asked right after, in the same process (target ≤ 3 s).
- Stop: from `stop()` to the stream's end, mid-stall and before the first token (target ≤ 0.5 s).
"""

from __future__ import annotations

import statistics
import threading
import time

import anthropic
import ollama
import openai
from google import genai
from google.genai import types

from core.answer import Delta, Done, Restart
from core.config import Config, Policy, ProviderEntry, Secret
from core.messages import ChatRequest
from core.router import Router

from .fleet import Upstream
from .harness import KEY, KINDS, SIXTY, fmt, table

PACE = {"first_delay": 0.25, "chunk_delay": 0.02}
AFTER = 20  # chunks before the stall


def _other(kind: str) -> str:
    return "openai" if kind != "openai" else "anthropic"


def _router(kind: str, up: Upstream) -> Router:
    policy = Policy.defaults().with_(cache__enabled=False, health__probe_interval=0.0)
    entries = tuple(ProviderEntry(name=f"{k}-{i}", kind=k, model=f"{k}-model", base_url=up.urls[k],
                                  api_key=Secret(KEY), **policy.timeouts.for_entry())
                    for i, k in enumerate((kind, _other(kind))))
    return Router(Config(providers=entries, policy=policy))


def _stalled_answer(router: Router, question: str) -> tuple[float, object]:
    """Seconds from the AFTER-th chunk reaching the caller to the end; and the result."""
    shown, stall_at = 0, None
    for event in router.stream(ChatRequest.ask(question)):
        if isinstance(event, Delta) and stall_at is None:
            shown += 1
            if shown == AFTER:
                stall_at = time.perf_counter()
        elif isinstance(event, Restart):
            stall_at = stall_at or time.perf_counter()
        elif isinstance(event, Done):
            return time.perf_counter() - (stall_at or time.perf_counter()), event.result
    raise AssertionError("the stream ended without Done")


def _sdk_chunks(kind: str, url: str, timeout: float):
    """The bare official SDK's text events on the same request, with its read timeout set (a
    generator: its frame keeps the client alive, which some SDKs close when it is collected)."""
    msgs = [{"role": "user", "content": "hi"}]
    if kind == "anthropic":
        c = anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0, timeout=timeout)
        yield from (e for e in c.messages.create(model="m", max_tokens=512, messages=msgs, stream=True)
                    if e.type == "content_block_delta")
    elif kind == "openai":
        c = openai.OpenAI(api_key=KEY, base_url=url, max_retries=0, timeout=timeout)
        yield from (e for e in c.chat.completions.create(model="m", messages=msgs, stream=True)
                    if e.choices and e.choices[0].delta.content)
    elif kind == "gemini":
        c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url, timeout=int(timeout * 1000)))
        yield from (e for e in c.models.generate_content_stream(model="m", contents="hi") if e.text)
    else:
        c = ollama.Client(host=url, headers={"authorization": f"Bearer {KEY}"}, timeout=timeout)
        yield from (e for e in c.chat(model="m", messages=msgs, stream=True) if e.message.content)


def _sdk_stalled(kind: str, url: str, timeout: float) -> tuple[float, bool]:
    """Seconds from the AFTER-th text event to the end; and whether the answer completed."""
    seen, stall_at = 0, None
    try:
        for _ in _sdk_chunks(kind, url, timeout):
            seen += 1
            if seen == AFTER:
                stall_at = time.perf_counter()
        return time.perf_counter() - stall_at, True
    except Exception:  # noqa: BLE001 — each SDK's own timeout error: the answer never came
        return time.perf_counter() - (stall_at or time.perf_counter()), False


def _stop_after(router: Router, question: str, ready) -> float:
    """Seconds from `stop()` to the reader seeing Done; `ready(deltas)` says when to stop."""
    stream = router.stream(ChatRequest.ask(question))
    deltas, done = [], threading.Event()

    def read() -> None:
        for event in stream:
            if isinstance(event, Delta):
                deltas.append(event)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    while not ready(deltas):
        time.sleep(0.001)
    t0 = time.perf_counter()
    stream.stop()
    done.wait(30)
    return time.perf_counter() - t0


def bench_stalls(reps: int, *, quick: bool = False) -> dict:
    """`quick`: a smoke run (a short stall, a fast pace, no learned-threshold round)."""
    stall_s, sdk_timeout, pace = (3.0, 1.5, {"first_delay": 0.05, "chunk_delay": 0.005}) if quick else (20.0, 10.0, PACE)
    out = {}
    stall = {"kind": "stall", "after": AFTER, "seconds": stall_s}
    for kind in KINDS:
        up = Upstream([kind, _other(kind)], responder="sixty", **pace)
        cold, warm, nxt, sdk, sdk_done, stop_mid, stop_first, how = [], [], [], [], [], [], [], set()
        try:
            for i in range(reps):
                order = ("router", "sdk") if i % 2 == 0 else ("sdk", "router")
                for who in order:
                    if who == "sdk":
                        up.script(kind, push=[stall])
                        took, completed = _sdk_stalled(kind, up.urls[kind], sdk_timeout)
                        up.script(kind, resume=True)  # nobody waits out the rest of that stall
                        sdk.append(took)
                        sdk_done.append(completed)
                        continue
                    for into, warmups in ((cold, 0),) if quick else ((cold, 0), (warm, 2)):
                        router = _router(kind, up)
                        try:
                            for w in range(warmups):
                                assert router.ask(ChatRequest.ask(f"warm {w}")).text == SIXTY
                            up.script(kind, push=[stall])
                            took, result = _stalled_answer(router, f"stall {i}")
                            assert result.complete and result.text == SIXTY, result.notice
                            into.append(took)
                            how.add("backup took over" if result.provider != f"{kind}-0" else "leader went on")
                            t0 = time.perf_counter()
                            again = router.ask(ChatRequest.ask(f"next {i}"))
                            assert again.complete, again.notice
                            if warmups or quick:
                                nxt.append(time.perf_counter() - t0)
                        finally:
                            router.close()
                            up.script(kind, resume=True)
                # Stop: mid-stall (before the backup could start) and before the first token.
                router = _router(kind, up)
                try:
                    up.script(kind, push=[{"kind": "stall", "after": 5, "seconds": stall_s}])
                    stop_mid.append(_stop_after(router, f"stop mid {i}", lambda d: len(d) >= 5))
                    up.script(kind, resume=True)
                    up.script(kind, push=[{"kind": "silence", "seconds": stall_s}])
                    started = time.perf_counter()
                    stop_first.append(_stop_after(router, f"stop first {i}",
                                                  lambda d: time.perf_counter() - started > 0.1))
                finally:
                    router.close()
                    up.script(kind, resume=True)
        finally:
            up.close()
        out[kind] = {"reps": reps, "cold_s": statistics.median(cold), "warm_s": statistics.median(warm) if warm else None,
                     "next_s": statistics.median(nxt), "sdk_s": statistics.median(sdk),
                     "sdk_completed": any(sdk_done), "how": sorted(how),
                     "stop_mid_stall_s": statistics.median(stop_mid),
                     "stop_before_first_token_s": statistics.median(stop_first)}
    table(f"10. Stalls and Stop: the primary stalls {stall_s:g} s after {AFTER} of 60 chunks; child-process "
          "providers paced like a model; default settings",
          ["kind", "stall → complete (cold)", "(learned)", "target", "bare SDK, read timeout "
           f"{sdk_timeout:g} s", "next request", "target", "Stop mid-stall", "Stop before 1st token", "target"],
          [[k, fmt(v["cold_s"], " s"), fmt(v["warm_s"], " s"), "≤ 3 s",
            f"{fmt(v['sdk_s'], ' s')}, " + ("completed" if v["sdk_completed"] else "no answer"),
            fmt(v["next_s"], " s"), "≤ 3 s", fmt(v["stop_mid_stall_s"] * 1000, " ms", 0),
            fmt(v["stop_before_first_token_s"] * 1000, " ms", 0), "≤ 500 ms"] for k, v in out.items()])
    return out
