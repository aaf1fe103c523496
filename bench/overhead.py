"""1. Router overhead, measured the way users run it: the provider is a simulated one in a process of
its own (`python -m core.simulator`), reached over loopback, answering 60 chunks at once.

- In-process: the bare SDK against `Router.ask` (the app's call; cache off, probing on as in the
  app), alternating request by request.
- Through `python -m core ask --jsonl`: one long-lived CLI process fed one question per line,
  beside a bare-SDK process running the same loop (bench/bare.py), alternating; each time runs
  from writing the line to reading the answer's line, so both pay the pipes and the JSON and the
  difference is the router's alone.
- 50 sessions at once: 50 threads asking through one Router against 50 threads on one SDK client,
  round by round, alternating which goes first.

The added figure is the median of paired differences (each request against its neighbour on the
other path), so drift and noise hit both alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.config import Config, Policy, ProviderEntry, Secret
from core.messages import ChatRequest
from core.metrics import quantile
from core.router import Router

from .fleet import ROOT, Upstream
from .harness import KEY, KINDS, SIXTY, direct_caller, fmt, table

IN_PROCESS_TARGET_MS = 0.5
CLI_TARGET_MS = 1.0
KEY_ENV = "UNDERSTUDY_BENCH_KEY"


def bench_overhead(n: int, *, sessions: int = 50) -> dict:
    upstream = Upstream(list(KINDS), responder="sixty")
    try:
        out = {"in-process": _in_process(upstream.urls, n),
               "ask --jsonl": _through_cli(upstream.urls, n),
               f"{sessions} sessions": _sessions(upstream.urls["openai"], sessions, rounds=max(2, n // 15))}
    finally:
        upstream.close()
    _report(out, sessions)
    return out


# -- the three comparisons ----------------------------------------------------------------------------
def _router(kind: str, url: str) -> Router:
    """One provider, as the app builds it, except that every request reaches the provider."""
    policy = Policy.defaults().with_(cache__enabled=False)
    entry = ProviderEntry(name=f"{kind}-0", kind=kind, model=f"{kind}-model", base_url=url, api_key=Secret(KEY),
                          **policy.timeouts.for_entry())
    router = Router(Config(providers=(entry,), policy=policy))
    router.start_probing()  # the app's router probes in the background; so does this one
    return router


def _in_process(urls: dict[str, str], n: int) -> dict:
    sdk_all, routed_all, out = [], [], {}
    request = ChatRequest.ask("hi")
    for kind in KINDS:
        router = _router(kind, urls[kind])
        try:
            def routed():
                result = router.ask(request)
                assert result.complete and result.text == SIXTY, result.notice

            sdk, rt = _alternate(direct_caller(kind, urls[kind]), routed, n)
        finally:
            router.close()
        out[kind] = _figures(sdk, rt)
        sdk_all += sdk
        routed_all += rt
    out["all"] = _figures(sdk_all, routed_all)
    return out


def _through_cli(urls: dict[str, str], n: int) -> dict:
    sdk_all, routed_all, out = [], [], {}
    with tempfile.TemporaryDirectory(prefix="understudy-bench-cli-") as tmp:
        # All started at once, so their imports overlap: one CLI per kind (a chain of one), one
        # bare-SDK process for every kind (the line it reads names the kind).
        children = [_Child("-m", "bench.bare", *(f"{kind}={url}" for kind, url in urls.items()))]
        try:
            for kind in KINDS:
                config = Path(tmp) / f"{kind}.toml"
                config.write_text(f'[[providers]]\nname = "{kind}-0"\nkind = "{kind}"\nmodel = "{kind}-model"\n'
                                  f'base_url = "{urls[kind]}"\napi_key_env = "{KEY_ENV}"\n'
                                  "[cache]\nenabled = false\n", encoding="utf-8")
                children.append(_Child("-m", "core", "ask", "--jsonl", "--config", str(config)))
            bare = children[0]
            for kind, cli in zip(KINDS, children[1:]):
                def routed(cli=cli):
                    result = json.loads(cli.ask(b"hi\n"))
                    assert result["complete"] and result["text"] == SIXTY, result

                def direct(line=f"{kind}\n".encode()):
                    assert json.loads(bare.ask(line))["text"] == SIXTY

                sdk, rt = _alternate(direct, routed, n)
                out[kind] = _figures(sdk, rt)
                sdk_all += sdk
                routed_all += rt
        finally:
            for child in children:  # all told at once: each takes a moment to close
                child.proc.stdin.close()
            for child in children:
                child.close()
    out["all"] = _figures(sdk_all, routed_all)
    return out


def _sessions(url: str, sessions: int, *, rounds: int) -> dict:
    """Each round, every session asks once, all at the same moment; a round through the router and
    one on the bare SDK alternate. The added figure is the median over rounds of the difference of
    the two rounds' medians."""
    router = _router("openai", url)
    direct = direct_caller("openai", url)
    request = ChatRequest.ask("hi")

    def routed():
        result = router.ask(request)
        assert result.complete and result.text == SIXTY, result.notice

    def round_of(call: Callable[[], object]) -> list[float]:
        times: list[float] = []
        lock, barrier = threading.Lock(), threading.Barrier(sessions)

        def session():
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
        assert len(times) == sessions, "a session failed (its traceback is above)"
        return times

    try:
        round_of(direct)  # warm: threads, imports, first-use caches
        round_of(routed)
        sdk, rt, added = [], [], []
        for i in range(rounds):
            first, second = (direct, routed) if i % 2 == 0 else (routed, direct)
            got = {first: round_of(first), second: round_of(second)}
            sdk += got[direct]
            rt += got[routed]
            added.append(statistics.median(got[routed]) - statistics.median(got[direct]))
    finally:
        router.close()
    return {**_figures(sdk, rt), "added_median_ms": statistics.median(added), "sessions": sessions, "rounds": rounds}


# -- measuring ----------------------------------------------------------------------------------------
def _alternate(direct: Callable[[], object], routed: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Times in ms of `n` calls each, alternating which goes first, after a warm-up of both."""
    for _ in range(max(5, n // 10)):  # connections, imports, first-use caches
        direct()
        routed()
    d, r = [], []
    for i in range(n):
        first, second = (direct, routed) if i % 2 == 0 else (routed, direct)
        for f in (first, second):
            t0 = time.perf_counter()
            f()
            (d if f is direct else r).append((time.perf_counter() - t0) * 1000)
    return d, r


def _figures(sdk: list[float], routed: list[float]) -> dict:
    """Paired by position: `sdk[i]` and `routed[i]` ran side by side."""
    sdk_median, routed_median = statistics.median(sdk), statistics.median(routed)
    return {"n": len(sdk), "sdk_median_ms": sdk_median, "router_median_ms": routed_median,
            "added_median_ms": statistics.median(b - a for a, b in zip(sdk, routed)),
            "ratio": routed_median / sdk_median, "sdk_p95_ms": quantile(sdk, 0.95),
            "router_p95_ms": quantile(routed, 0.95), "added_p95_ms": quantile(routed, 0.95) - quantile(sdk, 0.95)}


class _Child:
    """A long-lived process answering one line on stdin with one line on stdout."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_REDIS")}
        env.update({KEY_ENV: KEY, "PYTHONPATH": str(ROOT)})
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def ask(self, line: bytes) -> bytes:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"{self.proc.args[1:4]} exited with status {self.proc.wait()} (its stderr is above)")
        return reply

    def close(self) -> None:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)  # a loaded machine took over 10 s to let the bare-SDK child exit
        self.proc.stdout.close()


# -- the tables ---------------------------------------------------------------------------------------
def _report(out: dict, sessions: int) -> None:
    header = ["kind", "n", "SDK median", "router median", "added median", "target", "ratio", "SDK p95",
              "router p95", "added p95"]

    def row(label: str, v: dict, target: str) -> list:
        return [label, v["n"], fmt(v["sdk_median_ms"], " ms"), fmt(v["router_median_ms"], " ms"),
                fmt(v["added_median_ms"], " ms"), target, fmt(v["ratio"], "×", 3), fmt(v["sdk_p95_ms"], " ms"),
                fmt(v["router_p95_ms"], " ms"), fmt(v["added_p95_ms"], " ms")]

    table("1. Router overhead, in-process: 60-chunk stream from a provider in another process, SDK alone vs "
          "Router.ask, alternating", header,
          [row(k, v, f"≤ {IN_PROCESS_TARGET_MS:g} ms") for k, v in out["in-process"].items()])
    table("1. Router overhead through `python -m core ask --jsonl` (one long-lived process, a line in, a line out) "
          "vs the same loop on the bare SDK, alternating", header,
          [row(k, v, f"≤ {CLI_TARGET_MS:g} ms") for k, v in out["ask --jsonl"].items()])
    s = out[f"{sessions} sessions"]
    table(f"1. Router overhead with {sessions} sessions asking at once (threads, openai): one Router vs one SDK "
          f"client, {s['rounds']} rounds each, alternating; added = median over rounds of the medians' difference",
          header, [row("openai", s, "– (reported)")])
    print("published, other machines (in-process): LiteLLM 4.34 ms, Portkey 2.37 ms, Bifrost 0.44 ms")
