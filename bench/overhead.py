"""1. Router overhead, measured the way users run it: the provider is a simulated one in a process of
its own (`python -m core.simulator`), reached over loopback, answering 60 chunks at once.

- In-process: the bare SDK against `Router.ask` (the app's call; cache off, probing on as in the
  app), alternating request by request.
- Through `python -m core ask --jsonl`: one long-lived CLI process fed one question per line,
  beside a bare-SDK process running the same loop (bench/bare.py) and the CLI as it was before
  issue 11's work (`BEFORE`, taken from git), in rotating order; each time runs from writing the
  line to reading the answer's line, so all pay the pipes and the JSON and the difference is the
  router's alone.
- 50 sessions at once: 50 threads asking through one Router, against 50 threads on one SDK client,
  and against the router as it was before issue 11's work (`BEFORE`, taken from git), each code in
  a process of its own, the three rounds of a turn in rotating order.

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
BEFORE = "2994ded"  # the last commit before issue 11's router work: the many-sessions row's baseline


def bench_overhead(n: int, *, sessions: int = 50) -> dict:
    upstream = Upstream(list(KINDS), responder="sixty")
    try:
        with tempfile.TemporaryDirectory(prefix="understudy-bench-before-") as tmp:
            before = _checkout(BEFORE, Path(tmp))
            out = {"in-process": _in_process(upstream.urls, n),
                   "ask --jsonl": _through_cli(upstream.urls, n, before),
                   f"{sessions} sessions": _sessions(upstream.urls["openai"], sessions, before,
                                                     rounds=max(3, n // 10))}
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


def _through_cli(urls: dict[str, str], n: int, before: Path | None) -> dict:
    """Per kind, the bare SDK, this checkout's CLI and (where git has it) the CLI before issue 11,
    request by request in rotating order."""
    times: dict[str, list[float]] = {"sdk": [], "now": [], "before": []}
    out: dict = {}
    codes = {"now": ROOT, **({"before": before} if before else {})}
    with tempfile.TemporaryDirectory(prefix="understudy-bench-cli-") as tmp:
        # All started at once, so their imports overlap: one CLI per kind and code (a chain of
        # one), one bare-SDK process for every kind (the line it reads names the kind).
        bare = _Child("-m", "bench.bare", *(f"{kind}={url}" for kind, url in urls.items()))
        clis: dict[tuple[str, str], _Child] = {}
        try:
            for kind in KINDS:
                config = Path(tmp) / f"{kind}.toml"
                config.write_text(f'[[providers]]\nname = "{kind}-0"\nkind = "{kind}"\nmodel = "{kind}-model"\n'
                                  f'base_url = "{urls[kind]}"\napi_key_env = "{KEY_ENV}"\n'
                                  "[cache]\nenabled = false\n", encoding="utf-8")
                for code, root in codes.items():
                    clis[kind, code] = _Child("-m", "core", "ask", "--jsonl", "--config", str(config), root=root)
            for kind in KINDS:
                def routed(cli):
                    def ask():
                        result = json.loads(cli.ask(b"hi\n"))
                        assert result["complete"] and result["text"] == SIXTY, result
                    return ask

                def direct(line=f"{kind}\n".encode()):
                    assert json.loads(bare.ask(line))["text"] == SIXTY

                got = _rotate({"sdk": direct, **{code: routed(clis[kind, code]) for code in codes}}, n)
                out[kind] = _with_before(got)
                for leg, ms in got.items():
                    times[leg] += ms
        finally:
            children = [bare, *clis.values()]
            for child in children:  # all told at once: each takes a moment to close
                child.proc.stdin.close()
            for child in children:
                child.close()
    out["all"] = _with_before(times)
    return out


def _with_before(times: dict[str, list[float]]) -> dict:
    out = _figures(times["sdk"], times["now"])
    if times.get("before"):
        out["before"] = _figures(times["sdk"], times["before"])
        out["vs_before_median_ms"] = statistics.median(b - a for a, b in zip(times["before"], times["now"]))
    return out


def _sessions(url: str, sessions: int, before: Path | None, *, rounds: int) -> dict:
    """This checkout's router, the router before issue 11's work (`BEFORE`) and the bare SDK, each
    round with every session asking at once, the three rounds of a turn in a rotating order. Each
    code runs in a process of its own (bench/sessions_child.py), so the two routers never share a
    GIL or an import. Added figures are medians over turns of the difference of the rounds' medians."""
    codes = {"now": ROOT, **({"before": before} if before else {})}
    children = {name: _Child("-P", str(ROOT / "bench" / "sessions_child.py"), url, str(sessions), root=root,
                             env={"UNDERSTUDY_BENCH_TEXT": SIXTY})
                for name, root in codes.items()}
    legs = [("now", b"routed\n"), *([("before", b"routed\n")] if before else []), ("now", b"direct\n")]
    try:
        for name, line in legs:  # warm: threads, imports, connections, first-use caches
            children[name].ask(line)
        times: dict[tuple, list[float]] = {leg: [] for leg in legs}
        medians: dict[tuple, list[float]] = {leg: [] for leg in legs}
        for i in range(rounds):
            for leg in legs[i % len(legs):] + legs[:i % len(legs)]:
                got = json.loads(children[leg[0]].ask(leg[1]))
                times[leg] += got
                medians[leg].append(statistics.median(got))
    finally:
        for child in children.values():
            child.proc.stdin.close()
        for child in children.values():
            child.close()
    sdk, now = ("now", b"direct\n"), ("now", b"routed\n")
    out = {**_figures(times[sdk], times[now]), "added_median_ms": _turns(medians[now], medians[sdk]),
           "sessions": sessions, "rounds": rounds, "before_revision": BEFORE if before else None}
    if before:
        was = ("before", b"routed\n")
        out["before"] = {**_figures(times[sdk], times[was]), "added_median_ms": _turns(medians[was], medians[sdk])}
        out["vs_before_median_ms"] = _turns(medians[now], medians[was])
        out["vs_before_ratio"] = statistics.median(times[now]) / statistics.median(times[was])
    return out


def _turns(a: list[float], b: list[float]) -> float:
    return statistics.median(x - y for x, y in zip(a, b))


def _checkout(revision: str, into: Path) -> Path | None:
    """`core/` as it was at `revision`, under `into`; None where git or that revision isn't here
    (a copy of the code without its history)."""
    try:
        archive = subprocess.run(["git", "archive", revision, "core"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return into


# -- measuring ----------------------------------------------------------------------------------------
def _alternate(direct: Callable[[], object], routed: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    got = _rotate({"sdk": direct, "router": routed}, n)
    return got["sdk"], got["router"]


def _rotate(calls: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Times in ms of `n` calls of each, one of each per turn, the order rotating turn by turn,
    after a warm-up of all of them."""
    for _ in range(max(5, n // 10)):  # connections, imports, first-use caches
        for call in calls.values():
            call()
    legs = list(calls)
    times: dict[str, list[float]] = {leg: [] for leg in legs}
    for i in range(n):
        for leg in legs[i % len(legs):] + legs[:i % len(legs)]:
            t0 = time.perf_counter()
            calls[leg]()
            times[leg].append((time.perf_counter() - t0) * 1000)
    return times


def _figures(sdk: list[float], routed: list[float]) -> dict:
    """Paired by position: `sdk[i]` and `routed[i]` ran side by side."""
    sdk_median, routed_median = statistics.median(sdk), statistics.median(routed)
    return {"n": len(sdk), "sdk_median_ms": sdk_median, "router_median_ms": routed_median,
            "added_median_ms": statistics.median(b - a for a, b in zip(sdk, routed)),
            "ratio": routed_median / sdk_median, "sdk_p95_ms": quantile(sdk, 0.95),
            "router_p95_ms": quantile(routed, 0.95), "added_p95_ms": quantile(routed, 0.95) - quantile(sdk, 0.95)}


class _Child:
    """A long-lived process answering one line on stdin with one line on stdout."""

    def __init__(self, *args: str, root: Path = ROOT, env: dict[str, str] | None = None) -> None:
        """`root` is the code it runs (`PYTHONPATH` and its working directory)."""
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_REDIS")}
        child_env.update({KEY_ENV: KEY, "PYTHONPATH": str(root), **(env or {})})
        self.proc = subprocess.Popen([sys.executable, *args], cwd=root, env=child_env, stdin=subprocess.PIPE,
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
          "vs the same loop on the bare SDK, in rotating order", header,
          [row(k, v, f"≤ {CLI_TARGET_MS:g} ms") for k, v in out["ask --jsonl"].items()])
    cli = out["ask --jsonl"]
    if "before" in cli["all"]:
        table(f"1. The same, beside the CLI before issue 11 ({BEFORE}) in the same rotation: added over the bare SDK "
              "(median of paired differences)", ["kind", "before issue 11", "now", "now − before", "target"],
              [[k, fmt(v["before"]["added_median_ms"], " ms"), fmt(v["added_median_ms"], " ms"),
                fmt(v["vs_before_median_ms"], " ms"), f"now ≤ {CLI_TARGET_MS:g} ms"] for k, v in cli.items()])
    s = out[f"{sessions} sessions"]
    rows = [row("this code", s, "– (reported)")]
    if "before" in s:
        rows.append(row(f"before issue 11 ({s['before_revision']})", s["before"], "– (reported)"))
    table(f"1. Router overhead with {sessions} sessions asking at once (threads, openai): one Router vs one SDK "
          f"client, each in a process of its own, {s['rounds']} turns, the rounds of a turn in rotating order; "
          "added = median over turns of the rounds' medians' difference", header, rows)
    if "before" in s:
        print(f"this code against the router before issue 11 ({s['before_revision']}), same run: "
              f"{s['vs_before_median_ms']:+.1f} ms median over turns, ratio of medians {s['vs_before_ratio']:.3f}× "
              "(target: ≤ 0 ms, no regression)")
    else:
        print("the router before issue 11: not measured (no git history here to take it from)")
    print("published, other machines (in-process): LiteLLM 4.34 ms, Portkey 2.37 ms, Bifrost 0.44 ms")
