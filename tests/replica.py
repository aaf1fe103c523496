"""One replica of the fleet in its own process, driven over stdin/stdout, one JSON line each way.

    python -m tests.replica CONFIG.toml      (with UNDERSTUDY_REDIS_URL, UNDERSTUDY_DATABASE_URL,
                                              UNDERSTUDY_REPLICA and UNDERSTUDY_REDIS_PREFIX set)

It builds the router exactly as the app does (`core.runtime.build`, background probes on), so two
of these on one Redis and one PostgreSQL are two app processes minus the browser. The fleet test
and the fleet bench (bench/fleet.py) drive it: `Replica` below is the driving side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve(config: str) -> int:
    sys.path.insert(0, str(ROOT))
    from core.breaker import OPEN
    from core.endpoints import healthz
    from core.faults import Fault
    from core.messages import ChatRequest
    from core.runtime import build

    runtime = build(config, probing=True)
    router = runtime.router

    def ask(msg: dict) -> dict:
        result = router.ask(ChatRequest.ask(msg["q"]), fresh=bool(msg.get("fresh")))
        return {"tier": result.tier.value, "provider": result.provider, "complete": result.complete,
                "text": result.text, "attempts": [{"provider": a.provider, "outcome": a.outcome.value,
                                                   "error_kind": a.error_kind, "detail": a.detail}
                                                  for a in result.attempts]}

    def ask_many(msg: dict) -> dict:
        """These questions at once, each from its own thread (like browser sessions)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(msg["qs"])) as pool:
            return {"results": list(pool.map(lambda q: ask({"q": q}), msg["qs"]))}

    def wait_breaker(msg: dict) -> dict:
        """Spin on this replica's local copy until the breaker is in `state`; when it was seen."""
        breaker, end = router.breakers[msg["name"]], time.monotonic() + msg.get("timeout", 10.0)
        while breaker.state != msg["state"]:
            if time.monotonic() > end:
                return {"seen": False, "state": breaker.state}
            time.sleep(0.0002)  # look every 0.2 ms without taking a whole core from the other replica
        return {"seen": True, "at": time.time()}

    def fleet(msg: dict) -> dict:
        metrics = getattr(router, "fleet_metrics", None)
        if metrics is None:
            return {"fleet": False}
        from collections import Counter

        from core.metrics import RequestEvent

        events = metrics.events()
        return {"fleet": True, "replicas": sorted({e.replica for e in events}),
                "requests_by_replica": Counter(e.replica for e in events if isinstance(e, RequestEvent)),
                "requests": metrics.summary(msg.get("window", 900.0))["requests"]}

    ops = {
        "ask": ask,
        "chaos_set": lambda m: router.chaos.set(m["provider"], Fault(**m["fault"])) or {},
        "chaos_reset": lambda m: router.chaos.reset() or {},
        "chaos_state": lambda m: router.chaos.state(),
        "ask_many": ask_many,
        "breaker": lambda m: {"state": router.breakers[m["name"]].state,
                              "retry_in": router.breakers[m["name"]].retry_in()},
        "wait_breaker": wait_breaker,
        "open_breaker": lambda m: [router.breakers[m["name"]].failure("bench") for _ in range(
            router.config.policy.breaker.fail_max)] and {"at": time.time(), "open": router.breakers[m["name"]].state == OPEN},
        "reset_breakers": lambda m: router.reset_breakers() or {},
        "healthz": lambda m: dict(zip(("code", "body"), healthz(router))),
        "fleet": fleet,
        "probes": lambda m: {"rounds": router.health.rounds,
                             "probe_ms": {row.name: row.probe_ms for row in router.status(probe=False)}},
        "stop": None,
    }
    print(json.dumps({"ready": True, "replica": router.stores.replica}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        op = ops.get(msg.get("op"))
        if op is None:
            break
        try:
            reply = {"ok": True, **op(msg)}
        except Exception as e:  # noqa: BLE001 — reported to the driver, who fails the test
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply, default=str), flush=True)
    runtime.close()
    return 0


class Replica:
    """The driving side: start a replica process, send it ops, read its replies."""

    def __init__(self, config: Path, *, name: str, env: dict[str, str], wait: bool = True) -> None:
        """Start the process; with `wait=False` the caller calls `ready()` (so replicas start together)."""
        full = {**os.environ, **env, "UNDERSTUDY_REPLICA": name, "PYTHONPATH": str(ROOT)}
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.replica", str(config)], cwd=ROOT, env=full,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        if wait:
            self.ready()

    def ready(self) -> Replica:
        """Wait for the replica's hello: its router is built and it reads ops."""
        hello = self._read()
        assert hello.get("ready"), hello
        return self

    def __call__(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        assert reply.get("ok"), f"{self.name} {op}: {reply}"
        return reply

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise AssertionError(f"replica {self.name} exited ({self.proc.returncode}): {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def stop(self) -> None:
        """Ask the replica to stop, without waiting (so several can shut down together)."""
        if self.proc.poll() is None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


if __name__ == "__main__":
    raise SystemExit(serve(sys.argv[1]))
