"""8. The fleet: the same request through the embedded stores and through Redis + PostgreSQL, side by
side with the bare SDK, and how fast a breaker opened on one replica process is open on another.

The upstream is a simulated provider in a process of its own (`python -m core.simulator`), reached
over loopback as a real provider would be. Three callers are alternated request by request (the
SDK alone, the router on embedded stores, the router on the fleet's stores), so drift and noise
hit all three alike; the figure is the median of paired differences.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from core.config import Config, Policy, ProviderEntry, Secret
from core.messages import ChatRequest
from core.metrics import quantile
from core.router import Router
from core.store.stores import open_stores

from .harness import KEY, SIXTY, direct_caller, fmt, table

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent


class Upstream:
    """Simulated providers in a child process."""

    def __init__(self, kinds: list[str], *, responder: str = "sixty", first_delay: float = 0.0,
                 chunk_delay: float = 0.0, port: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "core.simulator", *kinds, "--responder", responder,
                                      "--first-delay", str(first_delay), "--chunk-delay", str(chunk_delay),
                                      "--key", KEY, "--port", str(port)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.urls: dict[str, str] = json.loads(self.proc.stdout.readline())

    def script(self, kind: str, **command) -> None:
        """Script one server's faults in the child (core/simulator/__main__.py), and wait until it has."""
        self.proc.stdin.write(json.dumps({"kind": kind, **command}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if not reply.get("ok"):
            raise RuntimeError(f"the simulator refused {command}: {reply.get('error')}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _services() -> str | None:
    """Why the fleet run can't happen here, or None."""
    import redis
    import sqlalchemy as sa

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as e:
        return f"Redis at 127.0.0.1:6379 does not answer ({type(e).__name__})"
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as e:
        return f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(e.orig).__name__})"
    return None


class _Schema:
    def __init__(self) -> None:
        import sqlalchemy as sa

        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        self.engine = sa.create_engine(PG_URL)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{self.name}"')
        self.url = f"{PG_URL}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{self.name}" CASCADE')
        self.engine.dispose()


def _router(url: str, kind: str, stores, **overrides) -> Router:
    policy = Policy.defaults().with_(**overrides)
    entry = ProviderEntry(name=f"{kind}-0", kind=kind, model=f"{kind}-model", base_url=url, api_key=Secret(KEY),
                          **policy.timeouts.for_entry())
    return Router(Config(providers=(entry,), policy=policy), stores=stores)


def _pair(scratch: str, schema: _Schema, prefix: str, url: str, kind: str, **overrides) -> dict[str, Router]:
    embedded = open_stores({"path": scratch}, env={})
    fleet = open_stores({"database_url": schema.url, "redis_url": REDIS_URL}, env={}, prefix=prefix)
    return {"embedded": _router(url, kind, embedded, **overrides), "fleet": _router(url, kind, fleet, **overrides)}


def _overhead(routers: dict[str, Router], direct, n: int, *, distinct: bool) -> dict:
    counter = iter(range(10**9))

    def routed(router: Router):
        def call():
            q = f"hi {next(counter)}" if distinct else "hi"
            result = router.ask(ChatRequest.ask(q))
            assert result.complete and result.text == SIXTY, result.notice
        return call

    callers = {"sdk": direct, **{name: routed(r) for name, r in routers.items()}}
    names = list(callers)
    for _ in range(max(5, n // 10)):
        for f in callers.values():
            f()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        for name in order:
            t0 = time.perf_counter()
            callers[name]()
            times[name].append((time.perf_counter() - t0) * 1000)
    out = {f"{name}_median_ms": statistics.median(v) for name, v in times.items()}
    for name in routers:
        out[f"{name}_added_median_ms"] = statistics.median(b - a for a, b in zip(times["sdk"], times[name]))
    out["fleet_over_embedded_median_ms"] = statistics.median(
        f - e for e, f in zip(times["embedded"], times["fleet"]))
    out["n"] = n
    return out


def _concurrency(router: Router, sessions: int, turns: int) -> dict:
    errors, latencies, incomplete = [], [], 0
    lock = threading.Lock()

    def session(sid: int) -> None:
        nonlocal incomplete
        for t in range(turns):
            t0 = time.perf_counter()
            try:
                result = router.ask(ChatRequest.ask(f"session {sid} turn {t} {uuid.uuid4().hex[:6]}"))
            except Exception as e:  # noqa: BLE001 — counted: must be zero
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                incomplete += not result.complete
    t0 = time.perf_counter()
    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {"requests": sessions * turns, "errors": len(errors), "incomplete": incomplete,
            "throughput_rps": len(latencies) / took, "p50_ms": quantile(latencies, 0.5),
            "p95_ms": quantile(latencies, 0.95)}


def _propagation(n: int, schema: _Schema, prefix: str, url: str) -> dict:
    """A opens the breaker; B, spinning on its local copy, sees it open. Wall clocks of one machine."""
    sys.path.insert(0, str(ROOT))
    from tests.replica import Replica

    with tempfile.TemporaryDirectory(prefix="understudy-fleet-") as tmp:
        config = Path(tmp) / "fleet.toml"
        config.write_text(f'[[providers]]\nname = "openai-0"\nkind = "openai"\nmodel = "m"\nbase_url = "{url}"\n'
                          'api_key_env = "BENCH_KEY"\n[health]\nprobe_interval = 0\n', encoding="utf-8")
        env = {"UNDERSTUDY_REDIS_URL": REDIS_URL, "UNDERSTUDY_REDIS_PREFIX": prefix + "-prop",
               "UNDERSTUDY_DATABASE_URL": schema.url, "BENCH_KEY": KEY, "UNDERSTUDY_DATA_DIR": tmp}
        a, b = Replica(config, name="A", env=env), Replica(config, name="B", env=env)
        delays = []
        try:
            for _ in range(n):
                a("reset_breakers")
                assert b("wait_breaker", name="openai-0", state="closed", timeout=10)["seen"]
                seen: dict = {}
                watcher = threading.Thread(target=lambda: seen.update(
                    b("wait_breaker", name="openai-0", state="open", timeout=10)))
                watcher.start()
                time.sleep(0.02)  # let B start spinning (a bench, not a test: this only paces the trials)
                opened = a("open_breaker", name="openai-0")
                watcher.join(15)
                if seen.get("seen"):
                    delays.append((seen["at"] - opened["at"]) * 1000)
        finally:
            a.close()
            b.close()
    return {"n": n, "seen": len(delays), "p50_ms": quantile(delays, 0.5), "p99_ms": quantile(delays, 0.99),
            "max_ms": max(delays) if delays else None}


def _redis_down(url: str, n: int, scratch: str) -> dict:
    """The same router while its Redis answers, then frozen (SIGSTOP: every call would time out):
    the first request meets the store's timeout once; the others must not wait on Redis at all."""
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    stores = open_stores({"path": scratch, "redis_url": server.url}, env={}, prefix="bench-down")
    router = _router(url, "openai", stores, cache__enabled=True)
    counter = iter(range(10**9))

    def ask() -> float:
        t0 = time.perf_counter()
        result = router.ask(ChatRequest.ask(f"down {next(counter)}"))
        assert result.complete, result.notice
        return (time.perf_counter() - t0) * 1000

    try:
        for _ in range(max(5, n // 10)):
            ask()
        up = [ask() for _ in range(n)]
        server.freeze()
        first = ask()
        down = [ask() for _ in range(n)]
        health = stores.health()["shared"]
    finally:
        server.close()
        router.close()
    return {"n": n, "up_median_ms": statistics.median(up), "first_ms": first, "down_median_ms": statistics.median(down),
            "down_max_ms": max(down), "timeouts": health["failures"], "status": health["status"]}


def bench_fleet(n: int, sessions: int, turns: int, trials: int) -> dict:
    why = _services()
    if why is not None:
        print(f"\n## 8. Fleet: skipped — {why}")
        return {"skipped": why}
    out: dict = {}
    schema, prefix = _Schema(), f"bench-{uuid.uuid4().hex[:10]}"
    scratch = tempfile.TemporaryDirectory(prefix="understudy-bench-embedded-")
    upstream = Upstream(["openai"], responder="sixty")
    slow = Upstream(["openai"], responder="echo", first_delay=0.02)
    try:
        url = upstream.urls["openai"]
        direct = direct_caller("openai", url)
        for label, distinct, overrides in (("cache off", False, {"cache__enabled": False}),
                                           ("cache on, every question new", True, {})):
            routers = _pair(scratch.name, schema, f"{prefix}-{len(out)}", url, "openai", **overrides)
            try:
                out[f"overhead, {label}"] = _overhead(routers, direct, n, distinct=distinct)
            finally:
                for r in routers.values():
                    r.close()
        routers = _pair(scratch.name, schema, f"{prefix}-c", slow.urls["openai"], "openai")
        try:
            for name in ("embedded", "fleet"):
                out[f"concurrency, {name}"] = _concurrency(routers[name], sessions, turns)
        finally:
            for r in routers.values():
                r.close()
        out["breaker propagation"] = _propagation(trials, schema, prefix, url)
        out["redis down"] = _redis_down(url, n, scratch.name)
    finally:
        upstream.close()
        slow.close()
        scratch.cleanup()
        schema.drop()
        _forget(prefix)
    table("8. Fleet: 60-chunk stream from a provider in another process; SDK alone vs router on embedded vs "
          "Redis + PostgreSQL stores, alternating (target: fleet adds ≤ 1 ms median over embedded)",
          ["run", "n", "SDK median", "embedded added", "fleet added", "fleet − embedded"],
          [[k, v["n"], fmt(v["sdk_median_ms"], " ms"), fmt(v["embedded_added_median_ms"], " ms"),
            fmt(v["fleet_added_median_ms"], " ms"), fmt(v["fleet_over_embedded_median_ms"], " ms")]
           for k, v in out.items() if k.startswith("overhead")])
    table(f"8. Fleet: {sessions} conversations from threads, 20 ms first token (target: zero errors)",
          ["stores", "requests", "errors", "incomplete", "throughput", "p50", "p95"],
          [[k.split(", ")[1], v["requests"], v["errors"], v["incomplete"], fmt(v["throughput_rps"], " req/s", 1),
            fmt(v["p50_ms"], " ms", 1), fmt(v["p95_ms"], " ms", 1)] for k, v in out.items()
           if k.startswith("concurrency")])
    p = out["breaker propagation"]
    table("8. Fleet: a breaker opened on replica A, seen open on replica B (two processes; target ≤ 1 s p99)",
          ["trials", "seen", "p50", "p99", "max"],
          [[p["n"], p["seen"], fmt(p["p50_ms"], " ms"), fmt(p["p99_ms"], " ms"), fmt(p["max_ms"], " ms")]])
    d = out["redis down"]
    table("8. Fleet: the same router while its Redis answers, then frozen (target: only the first request waits, "
          "≤ 0.1 s; the rest add ≤ 1 ms median)",
          ["n", "Redis up median", "first after freeze", "frozen median", "frozen max", "timeouts met"],
          [[d["n"], fmt(d["up_median_ms"], " ms"), fmt(d["first_ms"], " ms"), fmt(d["down_median_ms"], " ms"),
            fmt(d["down_max_ms"], " ms"), d["timeouts"]]])
    return out


def _forget(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
