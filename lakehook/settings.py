"""The one typed settings object, read once at start-up.

Sources, lowest precedence first: built-in defaults (the local stack of contract §1), a YAML
config file (``LAKEHOOK_CONFIG`` or ``--config``), then ``LAKEHOOK_*`` environment variables.
Nothing in lakehook reads the environment anywhere else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from lakehook.errors import ConfigError

QUICKSTART_ACCESS_KEY_ID = "AKIAIOSFOLQUICKSTART"
QUICKSTART_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 (public demo key)

ENV_PREFIX = "LAKEHOOK_"
SECRET_SETTINGS = frozenset(
    {"lakefs_secret_access_key", "webhook_token", "signing_key", "queue_url"}
)
MIN_PUBLIC_TOKEN_LENGTH = 32
SIGNING_KEY_FILE = "signing.key"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # case-insensitive
WORKER_SCHEDULING = ("idle", "nice")  # LAKEHOOK_WORKER_SCHEDULING (server.worker)


def default_memory_limit_mb(cores: int | None = None) -> int:
    """The default worker address-space ceiling: 4096 MiB on 2 cores, +256 per core above.

    Measured (docs/benchmarks.md, "Intake isolation"): a job processing a 1 GB CSV peaks at
    ~2.3 GiB of address space on 2 cores, most of it reservations of thread stacks and
    allocator arenas, and pyarrow runs a thread per core: with 16 threads the conversion alone
    reserved ~0.9 GiB more. The ceiling follows the cores so that it bounds the job, not the
    machine's thread count.
    """
    cores = cores if cores is not None else (os.cpu_count() or 2)
    return 4096 + 256 * max(cores - 2, 0)


@dataclass(frozen=True)
class Settings:
    """Endpoints, credentials and tuning of one lakehook process."""

    lakefs_url: str = "http://127.0.0.1:8000"
    lakefs_access_key_id: str = QUICKSTART_ACCESS_KEY_ID
    lakefs_secret_access_key: str = field(default=QUICKSTART_SECRET_ACCESS_KEY, repr=False)
    trino_url: str = "http://127.0.0.1:8080"
    trino_user: str = "lakehook"
    trino_catalog: str = "hive"
    hms_uri: str = "thrift://127.0.0.1:9083"
    metastore_api: str = "thrift"  # how tables are written: "thrift" (HMS) or "trino" (DDL)
    marquez_url: str = ""
    webhook_token: str = field(default="lakehook-dev-token", repr=False)  # noqa: S105 (loopback only)
    # HMAC key of lakehook's signatures (contract §8 v1.1); empty: <state_dir>/signing.key
    signing_key: str = field(default="", repr=False)
    # lakeFS user id lakehook commits as, where it has its own (lakeFS Enterprise); empty:
    # single-user lakeFS Community, where only the signature tells lakehook's commits apart
    lakehook_user: str = ""
    marquez_web_url: str = ""
    # the local stack: where `lakehook stack up` gets Marquez's source, PostgreSQL's port
    marquez_source: str = ""
    postgres_port: int = 5432
    listen: str = "127.0.0.1:8090"
    public_url: str = ""
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/lakehook")
    # shared state of several replicas: a postgresql:// URL (jobs, statuses, schema names,
    # merge records, quarantines); empty: the SQLite file in the state dir (one server)
    queue_url: str = field(default="", repr=False)
    reconcile_interval: float = 60.0
    # worker processes of `lakehook serve` (one job at a time each; default: one per core)
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    job_lease_seconds: float = 120.0
    retry_max_delay: float = 300.0  # longest wait between two tries of a service failure
    reconcile_max_refs: int = 500  # refs a timer sweep checks (round robin across sweeps)
    # seconds before a repository found without lakehook's actions calling this server is
    # looked at again by the timer sweeps (repositories lakehook has tables for: every sweep)
    discovery_interval: float = 600.0
    working_branch_grace: float = 900.0  # age before an unneeded _lakehook-* branch is deleted
    job_retention_days: float = 7.0  # ended jobs are forgotten after this; 0: kept for ever
    queue_poll_interval: float = 0.2  # seconds between a worker's looks at the queue
    # address-space ceiling of each worker (RLIMIT_AS); grows with the cores (thread reservations)
    worker_memory_limit_mb: int = field(default_factory=lambda: default_memory_limit_mb())
    job_time_limit_seconds: float = 1800.0  # wall-clock limit of one job; its worker is killed
    gate_timeout_seconds: float = 5.0  # the pre-merge gate refuses with 503 past this budget
    # processes that make the pre-merge decisions (server.gate_process); 0: the intake does
    gate_processes: int = 2
    gate_nice: int = 5  # added to the intake's niceness in the gate processes (0-19)
    worker_restart_max_seconds: float = 30.0  # cap of the exponential restart backoff
    worker_nice: int = 10  # added to the intake's niceness in the worker processes (0-19)
    # "nice": niceness only; "idle": job threads also run under SCHED_IDLE (any other thread
    # that wakes preempts them at once). Linux; elsewhere both mean nothing. Default nice:
    # idle did not move the webhook p99 measurably (docs/benchmarks.md) and starves jobs on
    # cores that other work keeps busy
    worker_scheduling: str = "nice"
    max_body_bytes: int = 1_048_576
    # the intake's HTTP threads: each reads one request at a time, so a client that sends its
    # request slowly holds one for up to http_request_timeout (docs/security.md, slow clients)
    http_threads: int = 64
    http_request_timeout: float = 5.0  # seconds a request may pause before it is dropped
    max_columns: int = 4096  # columns per CSV header or dataset in the contents file
    trino_engine_threshold: int = 1 << 30  # engine: auto uses Trino above this many CSV bytes
    log_level: str = "INFO"
    fault_point: str = ""  # tests only (lakehook/faults.py); needs testing=True
    testing: bool = False

    # ---- derived values -------------------------------------------------------------------
    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def server_url(self) -> str:
        """The URL lakeFS actions call; defaults to the listen address."""
        return self.public_url or f"http://{self.listen}"

    @property
    def hms_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.hms_uri)
        return parsed.hostname or "127.0.0.1", parsed.port or 9083

    @property
    def trino_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.trino_url)
        return parsed.hostname or "127.0.0.1", parsed.port or 8080

    @property
    def jobs_db(self) -> Path:
        return self.state_dir / "jobs.sqlite3"

    @property
    def signing_key_file(self) -> Path:
        return self.state_dir / SIGNING_KEY_FILE

    @property
    def listen_is_loopback(self) -> bool:
        host = self.listen_host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def signing_secret(self) -> bytes:
        """The signing key: ``signing_key``, else ``<state_dir>/signing.key`` (made once)."""
        if self.signing_key:
            return self.signing_key.encode("utf-8")
        return ensure_signing_key(self.signing_key_file).encode("utf-8")

    def check_serving(self) -> None:
        """Refuse to listen beyond this machine with a guessable token (contract §9 v1.1), and
        to share a queue without sharing the signing key (each replica would distrust the
        others' outputs and rebuild them: more than one lakehook commit per source commit)."""
        if self.queue_url and not self.signing_key:
            raise ConfigError(
                "LAKEHOOK_QUEUE_URL is set (replicas share one queue) but LAKEHOOK_SIGNING_KEY "
                "is not: every replica must sign with the same key; set LAKEHOOK_SIGNING_KEY to "
                f"one value on all of them (e.g. the content of {self.signing_key_file})"
            )
        if not self.listen_is_loopback and len(self.webhook_token) < MIN_PUBLIC_TOKEN_LENGTH:
            raise ConfigError(
                f"refusing to listen on {self.listen} (not a loopback address) with a "
                f"LAKEHOOK_WEBHOOK_TOKEN of {len(self.webhook_token)} characters; set one of at "
                f"least {MIN_PUBLIC_TOKEN_LENGTH}, e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )

    @property
    def lineage_journal(self) -> Path:
        return self.state_dir / "lineage" / "events.jsonl"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
    ) -> Settings:
        """Build settings from defaults, an optional YAML file and the environment."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        path = config_file or env.get("LAKEHOOK_CONFIG")
        if path:
            values.update(_read_config_file(Path(path)))
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in env:
                values[f.name] = env[name]
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: Mapping[str, Any]) -> Settings:
        kwargs: dict[str, Any] = {}
        types = {f.name: f for f in dataclasses.fields(cls)}
        for key, raw in values.items():
            if key not in types:
                raise ConfigError(
                    f"unknown setting {key!r}; known settings: {', '.join(sorted(types))}"
                )
            default = getattr(cls(), key)
            env_name = ENV_PREFIX + key.upper()
            try:
                if isinstance(default, bool):
                    kwargs[key] = str(raw).lower() in {"1", "true", "yes", "on"}
                elif isinstance(default, int):
                    kwargs[key] = int(raw)
                elif isinstance(default, float):
                    kwargs[key] = float(raw)
                elif isinstance(default, Path):
                    kwargs[key] = Path(str(raw)).expanduser()
                else:
                    kwargs[key] = str(raw)
            except ValueError:
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ConfigError(
                    f"{env_name}={raw!r} is not valid: it must be {kind}, e.g. {default}"
                ) from None
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Fail fast, naming the variable and an example of a good value."""
        for name in ("lakefs_url", "trino_url"):
            value = getattr(self, name)
            parsed = urlparse(value)
            if parsed.scheme not in {"http", "https"} or not parsed.netloc:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}={value!r} is not an http(s) URL, "
                    "e.g. http://127.0.0.1:8000"
                )
        if self.queue_url and urlparse(self.queue_url).scheme not in {"postgresql", "postgres"}:
            raise ConfigError(
                "LAKEHOOK_QUEUE_URL must be a PostgreSQL URL, e.g. "
                "postgresql://lakehook:PASSWORD@127.0.0.1:5432/lakehook (leave it empty for the "
                "SQLite queue of one server)"
            )
        if self.marquez_url and urlparse(self.marquez_url).scheme not in {"http", "https"}:
            raise ConfigError(
                f"LAKEHOOK_MARQUEZ_URL={self.marquez_url!r} is not an http(s) URL "
                "(leave it empty to run without Marquez)"
            )
        if not self.hms_uri.startswith("thrift://"):
            raise ConfigError(
                f"LAKEHOOK_HMS_URI={self.hms_uri!r} must look like thrift://127.0.0.1:9083"
            )
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"LAKEHOOK_LISTEN={self.listen!r} must be host:port")
        if self.metastore_api not in ("thrift", "trino"):
            raise ConfigError(
                f"LAKEHOOK_METASTORE_API={self.metastore_api!r} must be 'thrift' or 'trino'"
            )
        if self.reconcile_interval <= 0:
            raise ConfigError("LAKEHOOK_RECONCILE_INTERVAL must be a positive number of seconds")
        if self.job_retention_days < 0:
            raise ConfigError(
                f"LAKEHOOK_JOB_RETENTION_DAYS={self.job_retention_days} must be 0 (keep ended "
                "jobs for ever) or a positive number of days (default 7)"
            )
        if self.job_lease_seconds <= 0 or self.retry_max_delay <= 0:
            raise ConfigError(
                "LAKEHOOK_JOB_LEASE_SECONDS and LAKEHOOK_RETRY_MAX_DELAY must be positive"
            )
        if self.discovery_interval <= 0:
            raise ConfigError("LAKEHOOK_DISCOVERY_INTERVAL must be a positive number of seconds")
        if self.reconcile_max_refs < 1:
            raise ConfigError("LAKEHOOK_RECONCILE_MAX_REFS must be at least 1")
        if self.workers < 1:
            raise ConfigError("LAKEHOOK_WORKERS must be at least 1")
        if self.max_columns < 1:
            raise ConfigError(
                f"LAKEHOOK_MAX_COLUMNS={self.max_columns} must be at least 1 (default 4096)"
            )
        if self.trino_engine_threshold < 0:
            raise ConfigError(
                "LAKEHOOK_TRINO_ENGINE_THRESHOLD must be a number of bytes >= 0, e.g. 1073741824"
            )
        for name in (
            "queue_poll_interval",
            "job_time_limit_seconds",
            "gate_timeout_seconds",
            "worker_restart_max_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()} must be a positive number of seconds"
                )
        if not 4 <= self.http_threads <= 1024:
            raise ConfigError(
                f"LAKEHOOK_HTTP_THREADS={self.http_threads} must be 4 to 1024 (default 64: "
                "each slow client holds one thread until LAKEHOOK_HTTP_REQUEST_TIMEOUT)"
            )
        if not 0.5 <= self.http_request_timeout <= 300:
            raise ConfigError(
                f"LAKEHOOK_HTTP_REQUEST_TIMEOUT={self.http_request_timeout} must be 0.5 to 300 "
                "seconds (default 5: lakeFS sends a webhook's request at once)"
            )
        if not 0 <= self.worker_nice <= 19:
            raise ConfigError(
                f"LAKEHOOK_WORKER_NICE={self.worker_nice} must be 0 to 19 (default 10: the "
                "intake wins the cores when a request comes in while a worker processes)"
            )
        if not 0 <= self.gate_processes <= 16:
            raise ConfigError(
                f"LAKEHOOK_GATE_PROCESSES={self.gate_processes} must be 0 to 16 (default 2; 0 "
                "makes the decisions in the intake)"
            )
        if not 0 <= self.gate_nice <= 19:
            raise ConfigError(
                f"LAKEHOOK_GATE_NICE={self.gate_nice} must be 0 to 19 (default 5: a webhook "
                "that comes in while a merge is being decided gets the cores first)"
            )
        if self.worker_scheduling not in WORKER_SCHEDULING:
            raise ConfigError(
                f"LAKEHOOK_WORKER_SCHEDULING={self.worker_scheduling!r} must be one of "
                f"{', '.join(WORKER_SCHEDULING)} (default nice; idle: jobs get only the cores "
                "nothing else asks for)"
            )
        if self.worker_memory_limit_mb < 256:
            raise ConfigError(
                f"LAKEHOOK_WORKER_MEMORY_LIMIT_MB={self.worker_memory_limit_mb} is too small for a "
                f"worker (at least 256; the default here, {default_memory_limit_mb()}, suits a "
                "1 GB CSV)"
            )
        if not self.webhook_token:
            raise ConfigError("LAKEHOOK_WEBHOOK_TOKEN must not be empty")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"LAKEHOOK_LOG_LEVEL={self.log_level!r} is not valid: it must be one of "
                f"{', '.join(LOG_LEVELS)}"
            )
        from lakehook import faults

        faults.validate(self.fault_point, self.testing)

    def export_lines(self) -> list[str]:
        """``export NAME=value`` lines for ``lakehook stack env``."""
        import shlex

        out = []
        for f in dataclasses.fields(self):
            if f.name in _TUNING:
                continue
            if f.name == "signing_key":  # the server reads <state_dir>/signing.key itself
                continue
            out.append(
                f"export {ENV_PREFIX}{f.name.upper()}={shlex.quote(str(getattr(self, f.name)))}"
            )
        out += [
            f"export LAKECTL_SERVER_ENDPOINT_URL={shlex.quote(self.lakefs_url)}",
            f"export LAKECTL_CREDENTIALS_ACCESS_KEY_ID={shlex.quote(self.lakefs_access_key_id)}",
            "export LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY="
            + shlex.quote(self.lakefs_secret_access_key),
        ]
        return out


def ensure_signing_key(path: Path) -> str:
    """The key in ``path``; when it does not exist, a new random one, written once (0600).

    Created with ``O_CREAT | O_EXCL``, so two processes racing both end up reading the one
    key that won. Never logged.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise ConfigError(f"cannot read the signing key {path}: {err.strerror}") from None
    if text:
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_written_key(path)
    except OSError as err:
        raise ConfigError(f"cannot create the signing key {path}: {err.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


def _read_written_key(path: Path) -> str:
    """The key another process is writing: wait briefly until it is complete."""
    import time

    deadline = time.monotonic() + 5
    while True:
        text = path.read_text(encoding="ascii")
        if text.endswith("\n") or time.monotonic() > deadline:
            if not text.strip():
                raise ConfigError(f"the signing key {path} is empty; delete it to make a new one")
            return text.strip()
        time.sleep(0.01)


_TUNING = {
    "workers",
    "job_lease_seconds",
    "retry_max_delay",
    "reconcile_max_refs",
    "working_branch_grace",
    "job_retention_days",
    "max_body_bytes",
    "http_threads",
    "http_request_timeout",
    "marquez_source",
    "fault_point",
    "testing",
    "queue_poll_interval",
    "worker_memory_limit_mb",
    "job_time_limit_seconds",
    "gate_timeout_seconds",
    "worker_restart_max_seconds",
    "worker_nice",
    "worker_scheduling",
    "gate_processes",
    "gate_nice",
}


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    return {str(k).lower().removeprefix("lakehook_"): v for k, v in data.items()}
