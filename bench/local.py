"""11. Local model: the real on-device model (SmolLM2-135M Q4_1, llama.cpp on CPU, one thread) —
its load time, memory, first token and speed through the router, and whether the cloud rows
stay quick while it generates (it must not starve the app)."""

from __future__ import annotations

import os
import threading
import time

from core.config import Config, Policy, ProviderEntry
from core.local_model import INSTALL, LocalModel, bundled_model
from core.messages import ChatRequest
from core.metrics import quantile
from core.router import Delta, Router

from .harness import chain, fmt, table

LONG = "Tell me a long story about a dragon who learns to bake bread."


def _generate(router: Router, question: str) -> dict:
    """One streamed answer: time to its first text, decode speed (tokens after the first over the
    time after the first), tokens, and how it ended ("length": the server's 512-token cap)."""
    t0 = time.perf_counter()
    first = None
    stream = router.stream(ChatRequest.ask(question))
    result = None
    for event in stream:
        if isinstance(event, Delta) and first is None:
            first = time.perf_counter()
        result = getattr(event, "result", result)
    end = time.perf_counter()
    tokens = result.usage.output_tokens if result and result.usage else 0
    decode = (tokens - 1) / (end - first) if first and tokens > 1 and end > first else None
    return {"ttft_ms": (first - t0) * 1000 if first else None, "tokens": tokens, "tok_s": decode,
            "finish": (result.finish_reason or result.tier.value) if result else None,
            "provider": result.provider if result else None,
            "errors": [a.error_kind for a in result.attempts if a.error_kind] if result else []}


def bench_local(answers: int, cloud_asks: int, threads: tuple[int, ...] = (1,), question: str = LONG) -> dict:
    model = bundled_model()
    if model is None:
        print(f"\n## 11. Local model: skipped (not installed: {INSTALL})")
        return {"skipped": "not installed"}
    out: dict = {}
    rows = []
    for n in threads:
        # Load: a cold start of the child process to "listening" (the file is in the page cache after
        # the first run, as it is for the app's restarts).
        t0 = time.perf_counter()
        process = LocalModel(model, threads=n, alias="smollm2")
        process.wait_ready(120)
        load_s = time.perf_counter() - t0
        rss_loaded = process.state().rss_mb
        process.close()

        entry = ProviderEntry(name="on-device", kind="local", model="smollm2", model_path=str(model), threads=n)
        router = Router(Config(providers=(entry,), policy=Policy.defaults().with_(cache__enabled=False)))
        try:
            router.providers[0].process.wait_ready(120)
            _generate(router, "Hello")  # warm: the first prompt also builds the compute graphs
            runs = [_generate(router, question) for _ in range(answers)]
            rss_after = router.providers[0].process.state().rss_mb
        finally:
            router.close()
        speeds = [r["tok_s"] for r in runs if r["tok_s"]]
        ttfts = [r["ttft_ms"] for r in runs if r["ttft_ms"] is not None]
        out[f"{n} thread{'s' if n > 1 else ''}"] = row = {
            "load_s": load_s, "rss_loaded_mb": rss_loaded, "rss_after_mb": rss_after,
            "ttft_ms_p50": quantile(ttfts, 0.5), "tok_s_p50": quantile(speeds, 0.5),
            "tokens_p50": quantile([r["tokens"] for r in runs], 0.5),
            "finish": sorted({str(r["finish"]) for r in runs}), "n": answers,
            "errors": sorted({e for r in runs for e in r["errors"]}), "load_average": os.getloadavg()}
        rows.append([n, fmt(load_s, " s"), fmt(rss_loaded, " MB", 0), fmt(rss_after, " MB", 0),
                     fmt(row["ttft_ms_p50"], " ms", 0), fmt(row["tok_s_p50"], " tok/s", 1),
                     fmt(row["tokens_p50"], "", 0), "/".join(row["finish"]), ", ".join(row["errors"]) or "–",
                     " ".join(f"{x:.1f}" for x in row["load_average"])])
    table("11. Local model: SmolLM2-135M Q4_1 through the router (llama.cpp via xllamacpp, CPU; issue: ~0.9 s "
          "load, ~50 tok/s, 190–290 MB, ~0.1 s first token)",
          ["threads", "load", "RSS loaded", "RSS after", "first token p50", "decode p50", "tokens p50", "ended by",
           "errors", "machine load avg"],
          rows)
    out["cloud while generating"] = _cloud_while_generating(model, cloud_asks)
    return out


def _cloud_while_generating(model, asks: int) -> dict:
    """Chat latency of a simulated cloud row, idle and while the local model generates flat out."""
    cloud = chain(["openai"], server_kw={"first_delay": 0.02, "chunk_delay": 0.005}, cache__enabled=False)
    entry = ProviderEntry(name="on-device", kind="local", model="smollm2", model_path=str(model), threads=1)
    local = Router(Config(providers=(entry,), policy=Policy.defaults().with_(cache__enabled=False)))
    try:
        local.providers[0].process.wait_ready(120)

        def latencies() -> list[float]:
            got = []
            for i in range(asks):
                t0 = time.perf_counter()
                cloud.router.ask(ChatRequest.ask(f"cloud question {i}"))
                got.append((time.perf_counter() - t0) * 1000)
            return got

        idle = latencies()
        busy_flag = threading.Event()
        generated = [0]

        def keep_generating() -> None:
            while not busy_flag.is_set():
                stream = local.stream(ChatRequest.ask(LONG))
                for event in stream:
                    if isinstance(event, Delta):
                        generated[0] += 1
                    if busy_flag.is_set():
                        stream.stop()  # not left to finish a long story after the measurement

        workers = [threading.Thread(target=keep_generating) for _ in range(2)]  # both of its slots busy
        for w in workers:
            w.start()
        busy = latencies()
        busy_flag.set()
        for w in workers:
            w.join()
    finally:
        local.close()
        cloud.close()
    out = {"idle_p50_ms": quantile(idle, 0.5), "idle_p95_ms": quantile(idle, 0.95),
           "busy_p50_ms": quantile(busy, 0.5), "busy_p95_ms": quantile(busy, 0.95), "n": asks,
           "local_chunks_meanwhile": generated[0]}
    table("11b. A cloud row's chat latency while the local model generates on both its slots (target: about "
          "the same as idle)",
          ["", "p50", "p95", "n"],
          [["idle", fmt(out["idle_p50_ms"], " ms", 1), fmt(out["idle_p95_ms"], " ms", 1), asks],
           ["local model generating", fmt(out["busy_p50_ms"], " ms", 1), fmt(out["busy_p95_ms"], " ms", 1), asks]])
    return out
