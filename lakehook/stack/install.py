"""Installing the stack's software from the package registries (cached, idempotent).

* lakeFS and lakectl: built from the Go module with a wrapper module (lakeFS's go.mod has a
  ``replace``, so ``go install ...@version`` is refused). lakeFS's own go.sum is reused so
  every dependency is checked against the hashes lakeFS recorded.
* Trino, the Hive Metastore and Marquez: artifacts from Maven Central through Maven's
  dependency plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from lakehook.errors import ConfigError, ServiceUnavailable
from lakehook.stack import paths, versions

WRAPPER_GO_MOD = """module local.lakehook/lakefs-bin

go {go}

require github.com/treeverse/lakefs v{version}

replace {old} => {new}

tool (
\tgithub.com/treeverse/lakefs/cmd/lakefs
\tgithub.com/treeverse/lakefs/cmd/lakectl
)
"""


def run(
    argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, what: str
) -> str:
    result = subprocess.run(  # noqa: S603
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ServiceUnavailable(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def require_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found on PATH: {hint}")
    return found


def install_lakefs() -> None:
    """Build ``lakefs`` and ``lakectl`` into the stack's dist directory (once)."""
    if paths.lakefs_binary().exists() and paths.lakectl_binary().exists():
        return
    go = require_tool("go", f"install Go >= {versions.GO_MIN}")
    build = paths.stack_dir() / "build" / "lakefs"
    build.mkdir(parents=True, exist_ok=True)
    old, new = versions.LAKEFS_REPLACE
    (build / "go.mod").write_text(
        WRAPPER_GO_MOD.format(go=versions.GO_MIN, version=versions.LAKEFS, old=old, new=new)
    )
    env = dict(os.environ)
    # The checksum database does not answer for treeverse's forks here; lakeFS's own go.sum
    # (copied below) pins their hashes instead.
    env.update(GOFLAGS="-mod=mod", GONOSUMDB="github.com/treeverse/*", CGO_ENABLED="0")
    run(
        [go, "mod", "download", f"github.com/treeverse/lakefs@v{versions.LAKEFS}"],
        cwd=build,
        env=env,
        what="go mod download lakefs",
    )
    modcache = run([go, "env", "GOMODCACHE"], env=env, what="go env").strip()
    upstream_sum = Path(modcache) / f"github.com/treeverse/lakefs@v{versions.LAKEFS}" / "go.sum"
    lines = set(upstream_sum.read_text().splitlines())
    if (build / "go.sum").exists():
        lines |= set((build / "go.sum").read_text().splitlines())
    (build / "go.sum").write_text("\n".join(sorted(line for line in lines if line)) + "\n")
    run([go, "mod", "tidy"], cwd=build, env=env, what="go mod tidy (lakeFS wrapper)")
    out = paths.lakefs_binary().parent
    out.mkdir(parents=True, exist_ok=True)
    run(
        [
            go,
            "build",
            "-ldflags",
            f"-X github.com/treeverse/lakefs/pkg/version.Version={versions.LAKEFS}",
            "-o",
            str(out) + "/",
            "github.com/treeverse/lakefs/cmd/lakefs",
            "github.com/treeverse/lakefs/cmd/lakectl",
        ],
        cwd=build,
        env=env,
        what="go build lakefs lakectl",
    )


def maven_copy(artifact: str, dest: Path) -> Path:
    """Fetch one Maven artifact (``group:artifact:version[:type[:classifier]]``) into ``dest``."""
    mvn = require_tool("mvn", "install Maven (Debian package maven)")
    dest.mkdir(parents=True, exist_ok=True)
    run(
        [
            mvn,
            "-B",
            "-q",
            f"{versions.MAVEN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={dest}",
        ],
        what=f"maven fetch {artifact}",
    )
    parts = artifact.split(":")
    ext = parts[3] if len(parts) > 3 else "jar"
    return dest / f"{parts[1]}-{parts[2]}.{ext}"


def maven_runtime_jars(
    name: str,
    dependencies: Sequence[tuple[str, str, str]],
    dest: Path,
    excludes: Sequence[str] = (),
) -> None:
    """Resolve ``dependencies`` (group, artifact, version) with their runtime deps into ``dest``."""
    mvn = require_tool("mvn", "install Maven (Debian package maven)")
    project = paths.stack_dir() / "build" / name
    project.mkdir(parents=True, exist_ok=True)
    exclusion = "".join(
        f"<exclusion><groupId>{e.split(':')[0]}</groupId><artifactId>{e.split(':')[1]}</artifactId></exclusion>"
        for e in excludes
    )
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        f"<exclusions>{exclusion}</exclusions></dependency>"
        for g, a, v in dependencies
    )
    (project / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>local.lakehook</groupId><artifactId>{name}</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>\n"
    )
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    run(
        [
            mvn,
            "-B",
            "-q",
            f"{versions.MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        cwd=project,
        what=f"maven resolve {name}",
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def install_trino() -> Path:
    """Trino server core + the Hive plugin; returns the installation directory."""
    home = paths.dist_dir() / f"trino-server-{versions.TRINO}"
    if (home / "plugin" / "hive").is_dir():
        return home
    downloads = paths.stack_dir() / "downloads"
    core = maven_copy(f"io.trino:trino-server-core:{versions.TRINO}:tar.gz", downloads)
    hive = maven_copy(f"io.trino:trino-hive:{versions.TRINO}:zip", downloads)
    staging = paths.dist_dir() / f".trino-{versions.TRINO}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(core) as tar:
        tar.extractall(staging, filter="data")  # noqa: S202 (data filter: no escapes)
    (root,) = list(staging.iterdir())
    with zipfile.ZipFile(hive) as z:
        z.extractall(staging / "hive-zip")  # noqa: S202 (a Maven Central artifact)
    (plugin,) = list((staging / "hive-zip").iterdir())
    plugin.rename(root / "plugin" / "hive")
    # the launcher is a Python script; zip extraction dropped nothing here, but keep it executable
    for script in (root / "bin").rglob("launcher*"):
        script.chmod(0o755)
    shutil.rmtree(home, ignore_errors=True)
    root.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    return home


def install_hive_metastore() -> Path:
    """The standalone Hive Metastore with the Hadoop and S3A jars; returns its lib directory."""
    lib = paths.dist_dir() / f"hive-metastore-{versions.HIVE_METASTORE}" / "lib"
    if lib.is_dir() and any(lib.glob(f"hadoop-hdfs-{versions.HADOOP}.jar")):
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    maven_runtime_jars(
        "hive-metastore",
        [
            ("org.apache.hive", "hive-standalone-metastore-server", versions.HIVE_METASTORE),
            ("org.apache.hadoop", "hadoop-common", versions.HADOOP),
            ("org.apache.hadoop", "hadoop-aws", versions.HADOOP),
            ("org.apache.hadoop", "hadoop-hdfs-client", versions.HADOOP),
            # HMS 4 references org.apache.hadoop.hdfs.protocol.SnapshotException (hadoop-hdfs)
            ("org.apache.hadoop", "hadoop-hdfs", versions.HADOOP),
            ("org.apache.hadoop", "hadoop-mapreduce-client-core", versions.HADOOP),
            ("org.apache.derby", "derby", versions.DERBY),
        ],
        lib,
    )
    return lib


def install_marquez() -> Path:
    """The Marquez API jar with its runtime dependencies; returns its lib directory."""
    lib = paths.dist_dir() / f"marquez-{versions.MARQUEZ}" / "lib"
    if lib.is_dir() and any(lib.glob("marquez-api-*.jar")):
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    maven_runtime_jars(
        "marquez",
        [
            ("io.github.marquezproject", "marquez-api", versions.MARQUEZ),
            ("org.postgresql", "postgresql", versions.POSTGRESQL_JDBC),
        ],
        lib,
    )
    return lib
