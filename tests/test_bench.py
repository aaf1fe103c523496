"""A tiny-N run of the benchmarks, so they can't rot. Figures are printed, never asserted as timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.overhead import BEFORE
from tests.conftest import ROOT


def _has_revision(revision: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=ROOT,
                          capture_output=True).returncode == 0


def test_quick_bench_runs_every_benchmark_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for title in ("1. Router overhead", "2. Rescue time", "3. Hedging", "4. Concurrency", "5. Cache hit latency",
                  "6. Memory", "7. Soak", "8. Fleet"):
        assert title in proc.stdout
    figures = json.loads(out.read_text())
    assert set(figures) >= {"machine", "overhead", "rescue", "hedging", "concurrency", "cache", "memory", "soak"}
    # Correctness, not speed: these hold on any machine.
    assert all(v["complete"] == v["n"] for v in figures["hedging"].values())
    assert all(v["errors"] == 0 for v in figures["concurrency"].values())
    soak = figures["soak"]
    assert soak["exceptions"] == 0 and soak["truncated_marked_complete"] == 0 and soak["unanswered"] == 0
    assert soak["healthy_after"] and soak["attempt_threads_left"] == 0
    assert figures["rescue"]["silent primary"]["served_by"] == ["openai-1"]
    sessions = figures["overhead"]["50 sessions"]
    assert sessions["n"] == 150 and "router_median_ms" in sessions  # a figure is printed, never judged here
    if _has_revision(BEFORE):  # a clone with its history: the baseline ran too
        assert sessions["before_revision"] == BEFORE and sessions["before"]["n"] == 150
        assert figures["overhead"]["ask --jsonl"]["all"]["before"]["n"] == 40  # the CLI before, in the rotation
    fleet = figures["fleet"]
    if "skipped" not in fleet:  # Redis and PostgreSQL answer (always in CI, which checks them first)
        assert all(fleet[f"concurrency, {s}"]["errors"] == 0 for s in ("embedded", "fleet"))
        assert fleet["breaker propagation"]["seen"] == fleet["breaker propagation"]["n"]
