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

MARQUEZ = "0.50.0"
POSTGRESQL_JDBC = "42.7.4"

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
