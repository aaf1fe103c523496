"""Understudy's benchmarks, measured side by side in one run against loopback simulated providers.

    python3 -m bench            # the full run (a few minutes on 2 cores)
    python3 -m bench --quick    # tiny N: a smoke run (the test suite runs this)

Prints a table per benchmark and writes every figure as JSON (bench/results/latest.json, or --json).
Targets are printed beside the figures; they are never asserted here or in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .cache_hits import bench_cache
from .concurrency import bench_concurrency
from .fleet import bench_fleet
from .hedging import bench_hedging
from .local import LONG, bench_local
from .memory import bench_memory
from .overhead import bench_overhead
from .recovery import bench_recovery
from .rescue import bench_rescue
from .soak import bench_soak
from .stalls import bench_stalls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny N: checks that every benchmark runs")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "latest.json"),
                        help="where to write the figures")
    parser.add_argument("--only", nargs="*", help="run only these: overhead rescue hedging concurrency cache "
                                                   "memory soak fleet recovery stalls local")
    args = parser.parse_args(argv)
    q = args.quick
    # Questions the soak leaves unanswered are kept: in a throwaway store, never the app's data.
    scratch = tempfile.TemporaryDirectory(prefix="understudy-bench-")
    os.environ["UNDERSTUDY_DATA_DIR"] = scratch.name
    os.environ.pop("UNDERSTUDY_DATABASE_URL", None)
    plan = {
        "overhead": lambda: bench_overhead(10 if q else 300),
        "rescue": lambda: bench_rescue(1 if q else 3),
        "hedging": lambda: bench_hedging(40 if q else 400),
        "concurrency": lambda: bench_concurrency(10 if q else 50, 2 if q else 10),
        "cache": lambda: bench_cache(50 if q else 5000),
        "memory": lambda: bench_memory(50 if q else 1000, 150 if q else 10000),
        "soak": lambda: bench_soak(60 if q else 2000, 6 if q else 20),
        "fleet": lambda: bench_fleet(10 if q else 300, 5 if q else 50, 2 if q else 10, 3 if q else 50),
        "recovery": lambda: bench_recovery(q),
        "stalls": lambda: bench_stalls(1 if q else 3, quick=q),
        "local": lambda: bench_local(1 if q else 3, 5 if q else 30, (1,) if q else (1, 2),
                                     "What is the capital of Italy?" if q else LONG),
    }
    machine = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "python": platform.python_version(),
               "cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}
    print(f"Understudy bench — {machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}, "
          f"{'quick' if q else 'full'} run")
    results = {"machine": machine, "quick": q}
    for name, run in plan.items():
        if args.only and name not in args.only:
            continue
        if q and not args.only and name == "local":
            # A real model's load and answers take a loaded CI machine tens of seconds: the quick run
            # (the suite's) leaves it to tests/test_local_model.py; `--only local` runs it.
            print("\n## 11. Local model: not in the quick run (python3 -m bench --only local)")
            continue
        results[name] = run()
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"\nfigures written to {path}")
    scratch.cleanup()
    return 0
