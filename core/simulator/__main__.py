"""Simulated providers in a process of their own, the way a real provider is reached (for benches):

    python -m core.simulator KIND [KIND ...] [--responder echo|sixty] [--first-delay S] [--port P]

Prints one JSON line {"KIND": base URL, ...} once every server listens, then serves until its
standard input closes (so it never outlives the process that started it).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import SimServer, echo_responder

SIXTY = " ".join(f"t{i}" for i in range(60))  # a 60-chunk answer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.simulator")
    parser.add_argument("kinds", nargs="+")
    parser.add_argument("--responder", choices=("echo", "sixty"), default="echo")
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--key", default=None, help="the API key the servers accept (default: any)")
    parser.add_argument("--port", type=int, default=0, help="listen here (one kind only; default: any free port)")
    args = parser.parse_args(argv)
    if args.port and len(args.kinds) != 1:
        parser.error("--port takes one kind")
    responder = echo_responder if args.responder == "echo" else (lambda question, model: SIXTY)
    servers = [SimServer(kind, responder=responder, first_delay=args.first_delay, api_key=args.key, keep=10)
               .start(args.port) for kind in args.kinds]
    print(json.dumps({s.kind: s.url for s in servers}), flush=True)
    sys.stdin.read()  # until the parent closes it, or exits
    for server in servers:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
