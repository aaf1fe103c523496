"""Building what runs: configuration → providers → router, one way for the app and the CLI.

The app never refuses to start: a configuration problem, or no provider at all, runs it on the
simulated providers (demo mode) and keeps the problem to show. The CLI refuses instead, with one
line (`ConfigError`, `NoProviders`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ConfigError, load_config
from .router import Router
from .saving import ConversationSaver
from .store.bounded import Bounded
from .store.conversations import SqlConversationStore

if TYPE_CHECKING:
    from .demo import Demo  # the simulator loads only in demo mode
    from .offline import FollowUps


class NoProviders(ValueError):
    """The chain is empty and demo mode was not asked for."""


@dataclass
class Runtime:
    router: Router
    demo: Demo | None = None  # the simulated providers, in demo mode
    config_error: str | None = None  # why the configuration could not be used (the app shows it)
    # Conversations live in the router's database; the saver writes them off the request thread.
    conversations: SqlConversationStore = field(init=False)  # for the pages: each call time-bounded
    saver: ConversationSaver = field(init=False)
    followups: FollowUps = field(init=False)  # the kept questions, for the Follow-ups page: time-bounded too

    def __post_init__(self) -> None:
        store = SqlConversationStore(self.router.database)
        self.saver = ConversationSaver(store)  # its own thread may wait; a page may not
        self.conversations = Bounded(store)
        self.followups = Bounded(self.router.followups)

    def close(self) -> None:
        self.saver.close()  # what is still waiting is written before the database closes
        self.conversations.close()
        self.router.close()
        if self.demo is not None:
            self.demo.close()


def build(path: str | None = None, *, env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None,
          demo: bool = False, probing: bool = False) -> Runtime:
    """Load the configuration and build its router. With `demo` (the app), problems fall back to
    simulated providers; without it (the CLI), they raise. `probing` starts background probes."""
    if not demo:
        config = load_config(path, env=env, secrets=secrets)
        if not config.providers:
            raise NoProviders("no providers configured: set ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or "
                              "OLLAMA_HOST, or write understudy.toml (see README)")
        runtime = Runtime(Router(config, env=env))
    else:
        runtime = _with_demo(path, env, secrets)
    if probing:
        runtime.router.start_probing()
    return runtime


def _with_demo(path, env, secrets) -> Runtime:
    from .demo import Demo

    error = None
    try:
        config = load_config(path, env=env, secrets=secrets)
    except ConfigError as e:
        config, error = None, str(e)
    simulated = None
    if config is None or not config.providers:
        simulated = Demo()
        config = simulated.config(policy=config.policy if config is not None else None)
    try:
        router = Router(config, env=env)
    except ConfigError as e:  # e.g. an unreadable offline FAQ file
        error = str(e)
        simulated = simulated or Demo()
        router = Router(simulated.config(), env=env)
    return Runtime(router, simulated, error)
