"""The chain of providers and the policy settings, loaded from TOML or built from the environment.

Where the file comes from: `--config PATH`, else `$UNDERSTUDY_CONFIG`, else `understudy.toml`
in the working directory. With no file, the chain is every provider whose standard key variable
is set, in the order Claude, GPT, Gemini, Ollama. A bad file is rejected when loaded, with a
message naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .files import NotAFile, read_regular_file
from .providers import kinds
from .redact import looks_like_key, redact

if TYPE_CHECKING:
    from .providers.base import ProviderKind

DEFAULT_FILE = "understudy.toml"
CONFIG_ENV = "UNDERSTUDY_CONFIG"
MAX_CONFIG_BYTES = 1 << 20  # far more than any chain needs; a larger "config" is a mistake


class ConfigError(ValueError):
    """The configuration can't be used. The message says where, what and how to fix it."""

    def __init__(self, where: str, key: str, problem: str, fix: str) -> None:
        # Redacted too: whatever the file held (a key pasted in the wrong place) is never echoed.
        problem = redact(problem)
        self.where, self.key, self.problem, self.fix = where, key, problem, fix
        super().__init__(f"{where}: {key}: {problem}. Fix: {fix}")


class Secret:
    """An API key. Its repr and str are masked so it can't leak into logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        v = self._value
        return f"{v[:3]}…{v[-4:]}" if len(v) >= 16 else "set (hidden)"

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Policy settings: one frozen dataclass per section. Each field declares its default, its bounds (a
# lower bound or a (lowest, highest) pair; every number must also be finite) and its doc, once.
# Every value here is a documented default (README "Configuration"); anything not listed is
# rejected as unknown. The parser (`_parse_policy`) is the one place that validates them.
_Number = (int, float)
_DAY, _YEAR = 86400.0, 365 * 86400.0
_TYPES = {"float": _Number, "int": (int,), "bool": (bool,), "str": (str,)}


def _setting(default: Any, bounds: Any, doc: str) -> Any:
    return field(default=default, metadata={"bounds": bounds, "doc": doc})


@dataclass(frozen=True)
class Timeouts:
    connect: float = _setting(5.0, (0.05, 300.0), "seconds to open a connection")
    first_token: float = _setting(8.0, (0.05, 600.0), "seconds to wait for the first text before giving up on a provider")
    idle: float = _setting(10.0, (0.05, 600.0), "seconds of silence allowed between chunks")
    request: float = _setting(60.0, (0.1, 3600.0), "one deadline for the whole chain to start answering, retries included")

    def for_entry(self, **overrides: float) -> dict[str, float]:
        """A provider entry's effective timeouts: its own `*_timeout` overrides over this section."""
        return {"connect_timeout": overrides.get("connect_timeout", self.connect),
                "first_token_timeout": overrides.get("first_token_timeout", self.first_token),
                "idle_timeout": overrides.get("idle_timeout", self.idle)}


@dataclass(frozen=True)
class Retries:
    max_attempts: int = _setting(2, (1, 10), "tries per provider per request, the first included")
    backoff_base: float = _setting(0.2, (0.0, 60.0), "seconds; backoff is full jitter over base * 2^n")
    backoff_max: float = _setting(2.0, (0.0, 300.0), "seconds; the most one backoff may wait")
    max_retry_wait: float = _setting(1.0, (0.0, 300.0), "the longest Retry-After waited within a request; longer: fail over")


@dataclass(frozen=True)
class BreakerPolicy:
    fail_max: int = _setting(3, (1, 1000), "consecutive health failures that open a provider's breaker")
    reset_timeout: float = _setting(15.0, (0.1, _DAY), "seconds open before one trial call")
    max_cooldown: float = _setting(300.0, (0.1, _DAY), "the longest a Retry-After may keep a provider out")
    max_trial_wait: float = _setting(3.0, (0.0, 60.0), "when every breaker is open, wait this long at most for a trial")


@dataclass(frozen=True)
class Hedging:
    enabled: bool = _setting(True, None, "race the next provider when the first token is late")
    floor: float = _setting(0.3, (0.0, 60.0), "seconds; the hedge delay is never shorter")
    cap: float = _setting(2.0, (0.0, 60.0), "seconds; the hedge delay is never longer")
    default_delay: float = _setting(1.0, (0.0, 60.0), "seconds; the delay before enough first-token samples exist")
    quantile: float = _setting(0.95, (0.5, 1.0), "which first-token quantile sets the delay")
    min_samples: int = _setting(10, (1, 100_000), "samples needed before the quantile is trusted")


@dataclass(frozen=True)
class Stalls:
    hedge: bool = _setting(True, None, "when an answer stalls, start the next provider in parallel; the first to "
                                       "go on wins")
    multiple: float = _setting(4.0, (1.0, 1000.0), "an answer stalls when silent this many times its provider's "
                                                   "normal gap between chunks")
    quantile: float = _setting(0.99, (0.5, 1.0), "which quantile of recent gaps is the normal gap")
    floor: float = _setting(0.5, (0.05, 600.0), "seconds; the stall threshold is never shorter")
    cold_start: float = _setting(1.0, (0.05, 600.0), "seconds; the stall threshold before enough gaps were seen")
    min_samples: int = _setting(50, (1, 100_000), "gaps seen before the quantile is trusted")


@dataclass(frozen=True)
class CachePolicy:
    enabled: bool = _setting(True, None, "serve repeated questions from memory")
    ttl: float = _setting(3600.0, (0.0, _YEAR), "seconds an answer stays fresh")
    stale_ttl: float = _setting(86400.0, (0.0, _YEAR), "seconds a stale answer may still stand in during an outage")
    max_entries: int = _setting(1000, (1, 1_000_000), "answers kept (least recently used go first)")


@dataclass(frozen=True)
class Offline:
    enabled: bool = _setting(True, None, "answer from the FAQ when no provider can")
    faq_file: str = _setting("", None, "path of the FAQ (TOML); empty: the shipped core/data/offline_faq.toml")
    min_similarity: float = _setting(0.5, (0.0, 1.0), "0-1; how close a question must be to an FAQ entry")
    followup_file: str = _setting("", None, "also append kept questions here as JSON lines; empty: the store only")


@dataclass(frozen=True)
class MetricsPolicy:
    max_events: int = _setting(20000, (100, 1_000_000), "events kept in memory (oldest go first)")
    window: float = _setting(900.0, (1.0, 30 * _DAY), "seconds of history in summaries")
    history_days: float = _setting(7.0, (0.0, 3650.0), "days of metrics history kept in the database (older "
                                                       "events are pruned); 0 keeps none")


@dataclass(frozen=True)
class Store:
    path: str = _setting("", None, "data directory for SQLite (default ./data); $UNDERSTUDY_DATA_DIR wins")
    database_url: str = _setting("", None, "a database URL instead (postgresql://…); "
                                           "$UNDERSTUDY_DATABASE_URL wins")
    redis_url: str = _setting("", None, "a Redis URL (redis://HOST:6379/0) shared by every replica: breakers, cache, "
                                        "chaos, live metrics, probes; $UNDERSTUDY_REDIS_URL wins")


@dataclass(frozen=True)
class Health:
    probe_interval: float = _setting(30.0, (0.0, _DAY), "seconds between background probes; 0 turns them off")
    outage_probe_interval: float = _setting(1.0, (0.0, 3600.0), "while a breaker is open: seconds until its first "
                                            "probe, doubling after each failed one; 0 turns them off")
    outage_probe_max: float = _setting(4.0, (0.1, 3600.0), "the longest wait between two probes of an open breaker")
    probe_timeout: float = _setting(5.0, (0.05, 60.0), "seconds each phase of a probe (a list-models call) may wait, "
                                    "whatever an entry's own timeouts")


@dataclass(frozen=True)
class Policy:
    """The validated policy: one frozen section per TOML table (`policy.hedging.quantile`)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: Retries = field(default_factory=Retries)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    hedging: Hedging = field(default_factory=Hedging)
    stalls: Stalls = field(default_factory=Stalls)
    cache: CachePolicy = field(default_factory=CachePolicy)
    offline: Offline = field(default_factory=Offline)
    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)
    store: Store = field(default_factory=Store)
    health: Health = field(default_factory=Health)

    @classmethod
    def defaults(cls) -> Policy:
        return cls()

    def with_(self, **overrides: Any) -> Policy:
        """A copy with settings changed, named `section__key` (`with_(hedging__enabled=False)`);
        for tests and benchmarks. Unchecked: a file's values go through `load_config`."""
        sections: dict[str, dict[str, Any]] = {}
        for name, value in overrides.items():
            section, key = name.split("__")
            if key not in POLICY_SCHEMA.get(section, {}):
                raise KeyError(f"no policy setting {section}.{key}")
            sections.setdefault(section, {})[key] = value
        return replace(self, **{s: replace(getattr(self, s), **kv) for s, kv in sections.items()})


# section -> key -> (default, types, bounds, doc): the same declarations as a table, for the
# parser, the README check and error messages.
POLICY_SCHEMA: dict[str, dict[str, tuple[Any, tuple[type, ...], Any, str]]] = {
    f.name: {s.name: (s.default, _TYPES[s.type], s.metadata["bounds"], s.metadata["doc"]) for s in fields(f.default_factory)}
    for f in fields(Policy)
}
# Rules between settings: (section, lower key, section, higher key).
_ORDERED = (
    ("timeouts", "first_token", "timeouts", "request"),  # else a silent primary uses up the fallbacks' time
    ("hedging", "floor", "hedging", "cap"),
    ("retries", "backoff_base", "retries", "backoff_max"),
)
_DATABASE_URL = re.compile(r"(?:sqlite|postgres|postgresql(?:\+psycopg)?)://[^\s]*")
_REDIS_URL = re.compile(r"(?:redis|rediss|unix)://[^\s]+")
MIN_PROBE_INTERVAL = 1.0  # below this, background probes would flood the providers
PROVIDER_KEYS = {
    "name": "unique label shown in the UI, traces and metrics",
    "kind": "anthropic | openai | gemini | ollama | local",
    "model": "the model id the provider expects (local: a name to show; the file's name by default)",
    "base_url": "optional endpoint (OpenAI-compatible servers, proxies, a remote Ollama)",
    "api_key_env": "optional variable holding the key; the kind's standard one by default",
    "connect_timeout": "optional override of [timeouts] connect for this entry",
    "first_token_timeout": "optional override of [timeouts] first_token for this entry",
    "idle_timeout": "optional override of [timeouts] idle for this entry",
    "model_path": "kind = local only: the GGUF model file llama.cpp runs on this machine (relative to the config file)",
    "threads": "kind = local only: CPU threads generating (default 1, so the app keeps the other cores)",
}
MAX_THREADS = 256


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    kind: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: Secret | None = field(default=None, compare=False)
    # Effective timeouts (the entry's overrides over [timeouts], see `Timeouts.for_entry`).
    connect_timeout: float = Timeouts.connect
    first_token_timeout: float = Timeouts.first_token
    idle_timeout: float = Timeouts.idle
    model_path: str | None = None  # kind = local: the GGUF file, checked when loaded
    threads: int = 1  # kind = local: generation threads

    @property
    def info(self) -> ProviderKind:
        return kinds()[self.kind]

    @property
    def endpoint(self) -> str:
        if self.model_path:
            return f"this machine: {Path(self.model_path).name}"
        return self.base_url or self.info.default_base_url or self.info.public_url


@dataclass(frozen=True)
class Config:
    providers: tuple[ProviderEntry, ...]
    policy: Policy = field(default_factory=Policy.defaults)
    source: str = "environment"  # the file it came from, for messages


def find_config_file(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The file to load: the explicit path, else $UNDERSTUDY_CONFIG, else ./understudy.toml."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> Config:
    """Load the chain. Keys are looked up in `env`, then in `secrets` (Streamlit's secrets.toml)."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    if file is None:
        return from_environment(env=env, secrets=secrets)
    where = str(file)
    try:
        raw = read_regular_file(file, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(where, "file", "not found", "check the path, or unset UNDERSTUDY_CONFIG") from None
    except OSError as e:
        raise ConfigError(where, "file", f"can't be read ({e.strerror})", "check its permissions") from None
    except NotAFile as e:
        raise ConfigError(where, "file", str(e), "point to a TOML file (see understudy.example.toml)") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(where, "file", "is not UTF-8 text", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(where, "syntax", str(e), "correct the TOML syntax at that line") from None
    except RecursionError:
        raise ConfigError(where, "syntax", "nested too deeply", "flatten the arrays or tables") from None
    return parse_config(data, where=where, env=env, secrets=secrets)


def parse_config(
    data: Mapping[str, Any],
    *,
    where: str = "config",
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> Config:
    env = os.environ if env is None else env
    known = ["providers", *POLICY_SCHEMA]
    for key in data:
        if key not in known:
            raise ConfigError(where, key, "unknown section", _suggest(key, known, "remove it"))
    policy = _parse_policy(data, where)
    raw_providers = data.get("providers", [])
    if not isinstance(raw_providers, list) or not all(isinstance(p, dict) for p in raw_providers):
        raise ConfigError(where, "providers", "must be a list of tables", "write each entry as [[providers]]")
    entries: list[ProviderEntry] = []
    for i, raw in enumerate(raw_providers):
        entry = _parse_entry(raw, f"providers[{i}]", where, policy, env, secrets)
        if any(e.name == entry.name for e in entries):
            raise ConfigError(where, f"providers[{i}].name", f"duplicate name {entry.name!r}",
                              "give every entry a unique name")
        entries.append(entry)
    return Config(providers=tuple(entries), policy=policy, source=where)


def from_environment(*, env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Config:
    """A chain of every kind whose standard variable is set, in priority order."""
    env = os.environ if env is None else env
    policy = Policy.defaults()
    entries = []
    for info in kinds().values():
        key = _lookup_key(info.key_envs, env, secrets)
        if info.needs_key and key is None:
            continue
        if not info.needs_key and not (info.host_env and env.get(info.host_env)):
            continue
        entries.append(_entry(info.label, info.kind, info.default_model, None, None, key, policy, {}, env))
    return Config(providers=tuple(entries), policy=policy, source="environment")


def _parse_policy(data: Mapping[str, Any], where: str) -> Policy:
    values: dict[str, dict[str, Any]] = {}
    for section, schema in POLICY_SCHEMA.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise ConfigError(where, section, "must be a table", f"write it as [{section}]")
        for key in raw:
            if key not in schema:
                raise ConfigError(where, f"{section}.{key}", "unknown setting", _suggest(key, list(schema), "remove it"))
        values[section] = {}
        for key, (default, types, bounds, doc) in schema.items():
            value = raw.get(key, default)
            values[section][key] = _check_value(value, types, bounds, f"{section}.{key}", where, doc)
    for low_section, low_key, high_section, high_key in _ORDERED:
        low, high = values[low_section][low_key], values[high_section][high_key]
        if low > high:
            raise ConfigError(where, f"{low_section}.{low_key}",
                              f"is {low:g}, more than {high_section}.{high_key} ({high:g})",
                              f"make {low_key} at most {high_key}")
    url = values["store"]["database_url"].strip()
    if url and not _DATABASE_URL.fullmatch(url):
        raise ConfigError(where, "store.database_url", "is not a database URL this app can use (value not shown: "
                          "it may hold a password)", 'write sqlite:///PATH or postgresql+psycopg://USER@HOST/DB, '
                          'or leave it empty for the embedded store')
    redis = values["store"]["redis_url"].strip()
    if redis and not _REDIS_URL.fullmatch(redis):
        raise ConfigError(where, "store.redis_url", "is not a Redis URL (value not shown: it may hold a password)",
                          "write redis://HOST:6379/0 (or rediss:// for TLS), or leave it empty for one process")
    interval = values["health"]["probe_interval"]
    if 0 < interval < MIN_PROBE_INTERVAL:
        raise ConfigError(where, "health.probe_interval", f"must be 0 (off) or at least {MIN_PROBE_INTERVAL:g}, "
                          f"not {interval:g}", "raise it, or set 0 to turn background probes off")
    outage = values["health"]
    if outage["outage_probe_interval"] > outage["outage_probe_max"]:
        raise ConfigError(where, "health.outage_probe_interval", f"must not exceed health.outage_probe_max "
                          f"({outage['outage_probe_max']:g}), not {outage['outage_probe_interval']:g}",
                          "lower it, or raise outage_probe_max")
    return Policy(**{f.name: f.default_factory(**values[f.name]) for f in fields(Policy)})


def _check_value(value: Any, types: tuple[type, ...], bounds: Any, key: str, where: str, doc: str) -> Any:
    # bool is an int in Python; a number setting given `true` is a mistake worth naming.
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
        want = "true or false" if bool in types else "a number"
        if str in types:
            want = "a string"
        raise ConfigError(where, key, f"must be {want}, not {_shown(value)}", f"set it to {want} ({doc})")
    if isinstance(value, bool) or not isinstance(value, _Number):
        return value
    low, high = bounds if isinstance(bounds, tuple) else (bounds, None)
    # TOML has nan and inf; no setting means either (a NaN compares false with every bound).
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, key, f"must be a finite number, not {value!r}", f"set a number ({doc})")
    if low is not None and value < low:
        raise ConfigError(where, key, f"must be at least {low:g}, not {value:g}", f"raise it ({doc})")
    if high is not None and value > high:
        raise ConfigError(where, key, f"must be at most {high:g}, not {value:g}", f"lower it ({doc})")
    return float(value) if float in types else value


def _shown(value: Any) -> str:
    # A value in an error message: short, one line, and never a whole table.
    text = repr(value) if isinstance(value, (bool, int, float, str)) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_entry(raw, key, where, policy, env, secrets) -> ProviderEntry:
    for k in raw:
        if k not in PROVIDER_KEYS:
            raise ConfigError(where, f"{key}.{k}", "unknown key", _suggest(k, list(PROVIDER_KEYS), "remove it"))
    local = raw.get("kind") == "local"
    for k in ("name", "kind", "model"):
        if k == "model" and local and "model" not in raw:
            continue  # named after its file
        if not isinstance(raw.get(k), str) or not raw[k].strip():
            hint = {"kind": "one of " + ", ".join(kinds()), "name": "a unique label such as \"claude\"",
                    "model": "the model id, e.g. \"claude-sonnet-4-5\""}[k]
            raise ConfigError(where, f"{key}.{k}", "missing" if k not in raw else "must be a non-empty string",
                              f"set {k} = {hint}")
    name, kind = raw["name"].strip(), raw["kind"].strip()
    if kind not in kinds():
        raise ConfigError(where, f"{key}.kind", f"unknown kind {kind!r}", _suggest(kind, list(kinds()), "use one of " + ", ".join(kinds())))
    local_keys = _check_local(raw, key, where) if kind == "local" else {}
    for k in ("model_path", "threads"):
        if k in raw and kind != "local":
            raise ConfigError(where, f"{key}.{k}", f"is only for kind = \"local\", not {kind!r}", f"remove {k}")
    model = raw["model"].strip() if "model" in raw else Path(local_keys["model_path"]).stem
    base_url = raw.get("base_url")
    if base_url is not None:
        _check_url(base_url, f"{key}.base_url", where)
    key_env = _check_key_env(raw.get("api_key_env"), f"{key}.api_key_env", where)
    info = kinds()[kind]
    api_key = _lookup_key((key_env,) if key_env else info.key_envs, env, secrets)
    overrides = {}
    for k in ("connect_timeout", "first_token_timeout", "idle_timeout"):
        if k in raw:
            _, types, bounds, _ = POLICY_SCHEMA["timeouts"][k.removesuffix("_timeout")]
            overrides[k] = _check_value(raw[k], types, bounds, f"{key}.{k}", where, PROVIDER_KEYS[k])
    first_token = overrides.get("first_token_timeout", policy.timeouts.first_token)
    if first_token > policy.timeouts.request:
        raise ConfigError(where, f"{key}.first_token_timeout", f"is {first_token:g}, more than timeouts.request "
                          f"({policy.timeouts.request:g})", "make it at most [timeouts] request, so the providers "
                          "after this one still get their turn")
    return replace(_entry(name, kind, model, base_url, key_env, api_key, policy, overrides, env), **local_keys)


def _check_local(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """A local model's file and threads, checked now: a model that can't load is a configuration
    mistake to name at start, not an outage to find at the first question."""
    from .local_model import INSTALL, gguf_problem, runtime_installed

    for k in ("base_url", "api_key_env"):
        if k in raw:
            raise ConfigError(where, f"{key}.{k}", "is not used by kind = \"local\" (the model runs in a process "
                              "of this app)", f"remove {k}")
    path = raw.get("model_path")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(where, f"{key}.model_path", "missing" if path is None else "must be a non-empty string",
                          'set model_path = "PATH/TO/MODEL.gguf", a GGUF file for llama.cpp')
    if "\0" in path:
        raise ConfigError(where, f"{key}.model_path", "holds a NUL character",
                          'set model_path = "PATH/TO/MODEL.gguf", a GGUF file for llama.cpp')
    try:
        file = Path(path.strip()).expanduser()
    except RuntimeError as e:  # "~nosuchuser/…": no such home directory
        raise ConfigError(where, f"{key}.model_path", f"{path.strip()}: {e}",
                          "write the model file's full path") from e
    if not file.is_absolute():
        base = Path(where).parent if Path(where).is_file() else Path.cwd()
        file = base / file
    if (problem := gguf_problem(file)) is not None:
        raise ConfigError(where, f"{key}.model_path", f"{file}: {problem}",
                          "point it to a GGUF model file (llama.cpp's format, *.gguf) that this user can read")
    threads = raw.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(where, f"{key}.threads", f"must be a whole number from 1 to {MAX_THREADS}, not "
                          f"{_shown(threads)}", "set threads = 1 (or how many CPU threads may generate)")
    if not runtime_installed():
        raise ConfigError(where, f"{key}.kind", "the local-model runtime (llama.cpp's xllamacpp) is not installed",
                          f"run {INSTALL.split(' && ')[0]}, or remove this entry")
    return {"model_path": str(file.resolve()), "threads": threads}


_URL_FIX = 'use a full http:// or https:// URL, e.g. "http://127.0.0.1:8000/v1"'
_HOST = re.compile(r"[\w.-]+")  # names (IDN too), IPv4; IPv6 is checked by ipaddress


def _check_url(value: Any, key: str, where: str) -> None:
    """A URL the SDK can connect to, or a ConfigError naming what is wrong with it."""
    if not isinstance(value, str):
        raise ConfigError(where, key, f"must be a URL string, not {_shown(value)}", _URL_FIX)
    # The URL itself is not echoed: it may carry a password (https://user:secret@proxy/).
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(where, key, "malformed URL (it contains spaces or control characters)", _URL_FIX)
    try:
        parsed = urlparse(value)
        port, host = parsed.port, parsed.hostname  # .port raises on "99999" or "http"
    except ValueError as e:
        raise ConfigError(where, key, f"malformed URL ({e})", _URL_FIX) from None
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigError(where, key, "malformed URL (it needs http:// or https:// and a host)", _URL_FIX)
    if port == 0:
        raise ConfigError(where, key, "malformed URL (port 0)", "use a port from 1 to 65535")
    try:
        valid_host = ipaddress.ip_address(host).version == 6 if ":" in host else bool(_HOST.fullmatch(host))
    except ValueError:
        valid_host = False
    if not valid_host:
        raise ConfigError(where, key, "malformed URL (the host name is not valid)", _URL_FIX)


# Environment variable names as people write them. Capitals only: a lowercase "name" of 20+ characters
# is far more likely a key pasted by mistake (hex, gsk_…, hf_…) than a variable, and it must not be echoed.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")
# What a key may contain: printable ASCII without spaces. A line break or a smart quote pasted with
# it would be sent in a header (and echoed by the HTTP library's error text), never accepted.
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")


def _check_key_env(value: Any, key: str, where: str) -> str | None:
    """The name of the variable holding the key. Never echoed: it may be a key pasted by mistake."""
    if value is None:
        return None
    fix = 'put the key in an environment variable or secrets.toml and name it here, e.g. api_key_env = "MY_KEY"'
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, key, "must be a variable name", fix)
    value = value.strip()
    if looks_like_key(value):
        raise ConfigError(where, key, "looks like an API key itself, not the name of a variable (value not shown)", fix)
    if not _ENV_NAME.fullmatch(value):
        raise ConfigError(where, key, "is not an environment variable name (capital letters, digits and _; "
                                      "value not shown)", fix)
    return value


def _entry(name, kind, model, base_url, key_env, api_key, policy, overrides, env) -> ProviderEntry:
    host_env = kinds()[kind].host_env
    if host_env and base_url is None and env.get(host_env):
        base_url = _host_url(env[host_env])
        _check_url(base_url, host_env, "environment")
    return ProviderEntry(name=name, kind=kind, model=model, base_url=base_url, api_key_env=key_env, api_key=api_key,
                         **policy.timeouts.for_entry(**overrides))


def _host_url(value: str) -> str:
    # OLLAMA_HOST may be a bare "host:port", as the ollama CLI accepts.
    value = value.strip()
    return value if "://" in value else f"http://{value}"


def _lookup_key(names: tuple[str, ...], env: Mapping[str, str], secrets: Mapping[str, Any] | None) -> Secret | None:
    for name in names:
        value = env.get(name)
        if not value and secrets is not None:
            try:
                value = secrets.get(name)
            except Exception:  # Streamlit raises if there is no secrets file at all (§7).
                value = None
        if isinstance(value, str) and value.strip():
            value = value.strip()
            if not _KEY_CHARS.fullmatch(value):
                raise ConfigError("environment" if env.get(name) else "secrets.toml", name, "the key contains a space, a line break, a control "
                                  "character or a character that is not ASCII (value not shown)",
                                  "set it again, copying only the key itself")
            return Secret(value)
    return None


def _suggest(word: str, choices: list[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1) or [
        c for c in choices if word.startswith(c) or c.startswith(word)][:1]
    return f"did you mean {close[0]!r}?" if close else f"{otherwise} (known: {', '.join(choices)})"
