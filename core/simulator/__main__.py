"""Simulated providers in a process of their own, the way a real provider is reached (for benches):

    python -m core.simulator KIND [KIND ...] [--responder echo|sixty] [--first-delay S] [--chunk-delay S]
                             [--port P]

Prints one JSON line {"KIND": base URL, ...} once every server listens, then serves until its
standard input closes (so it never outlives the process that started it). Each line on standard
input scripts one server's faults, as `SimServer.push` / `set_default` / `resume` do in-process:

    {"kind": "openai", "push": [{"kind": "stall", "after": 20, "seconds": 30}]}
    {"kind": "openai", "default": {"kind": "ok"}}
    {"kind": "openai", "resume": true}

and is answered with one line, {"ok": true} or {"error": "why"}, once it has taken effect.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import Fault, SimServer, echo_responder

SIXTY = " ".join(f"t{i}" for i in range(60))  # a 60-chunk answer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.simulator")
    parser.add_argument("kinds", nargs="+")
    parser.add_argument("--responder", choices=("echo", "sixty"), default="echo")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first text")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between text chunks")
    parser.add_argument("--key", default=None, help="the API key the servers accept (default: any)")
    parser.add_argument("--port", type=int, default=0, help="listen here (one kind only; default: any free port)")
    args = parser.parse_args(argv)
    if args.port and len(args.kinds) != 1:
        parser.error("--port takes one kind")
    responder = echo_responder if args.responder == "echo" else (lambda question, model: SIXTY)
    servers = [SimServer(kind, responder=responder, first_delay=args.first_delay, chunk_delay=args.chunk_delay,
                         api_key=args.key, keep=10)
               .start(args.port) for kind in args.kinds]
    print(json.dumps({s.kind: s.url for s in servers}), flush=True)
    by_kind = {s.kind: s for s in servers}
    for line in sys.stdin:  # until the parent closes it, or exits
        print(json.dumps(_script(by_kind, line)), flush=True)
    for server in servers:
        server.close()
    return 0


def _script(servers: dict[str, SimServer], line: str) -> dict:
    try:
        command = json.loads(line)
        server = servers[command["kind"]]
        if "push" in command:
            server.push(*(Fault(**f) for f in command["push"]))
        if "default" in command:
            server.set_default(Fault(**command["default"]))
        if command.get("resume"):
            server.resume()
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"ok": True}


if __name__ == "__main__":
    raise SystemExit(main())
