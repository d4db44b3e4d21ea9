"""OpenLineage names of lakehook's jobs, runs and datasets (contract §10).

OpenLineage has no naming convention for lakeFS (there is no ``lakefs://`` scheme in the
naming spec). lakehook names lakeFS objects the way every S3 client sees them through the
lakeFS S3 gateway, which is also how Trino, Hive and Spark name a table by its location:

=====================  ==========================  ======================================
What                   Namespace                   Name
=====================  ==========================  ======================================
raw CSV                ``s3://<repo>``             ``<branch>/raw/<dataset>.csv``
contents file          ``s3://<repo>``             ``<branch>/raw/contents.csv``
processed table        ``s3://<repo>``             ``<branch>/tables/<table>``
same table, in Trino   ``trino://<host>:<port>``   ``<catalog>.<schema>.<table>`` (symlink)
same table, in HMS     ``hive://<host>:<port>``    ``<schema>.<table>`` (symlink)
=====================  ==========================  ======================================

Why ``s3://<repo>``: the table's Hive location is ``s3a://<repo>/<branch>/tables/<table>/``,
and OpenLineage's S3 convention (``s3://{bucket}`` + ``{key}``, ``s3a`` normalised to ``s3``,
no trailing slash) turns that into exactly these names; a Spark or Trino job reading the same
location therefore joins our graph without any mapping. The dataset stays the same across
commits; *which* commit is recorded in the dataset-version facet. The symlinks carry the
catalog names, as Spark does for Hive tables, so a Trino OpenLineage listener configured with
the same ``trino://host:port`` joins too.

Job names: ``lakehook`` / ``<repo>.<table>`` for a table (contract §10), ``lakehook`` /
``<repo>`` for the parent run of one processed commit, ``lakehook`` / ``<repo>.ingest`` for the
lakeFS commit that brought the raw data (one run per commit; a table named ``ingest`` would
share that job name: its runs have other ids and inputs, so the graph stays readable).

Why the parent job is ``<repo>``: Marquez names a job whose run has a parent run
``<parent job>.<simple name>``, the simple name being the job's name without a leading
``<parent job>.``. With the parent ``<repo>``, Marquez therefore shows the table job as
``<repo>.<table>``, the contract's name (a parent ``<repo>.process-commit`` made it
``<repo>.process-commit.<repo>.<table>``). lakeFS repository names have no ``.``, so
``<repo>`` never equals another repository's table or ingestion job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

from openlineage.client.naming.dataset import S3, Hive, Trino

from lakehook.settings import Settings

JOB_NAMESPACE = "lakehook"
INGEST_JOB_SUFFIX = "ingest"
DEFAULT_RAW_PREFIX = "raw/"
DEFAULT_CONTENTS_PATH = "raw/contents.csv"
TABLES_PREFIX = "tables/"

# Run ids are UUIDv5 in this namespace (itself a UUIDv5 of a fixed URN): deterministic, so a
# retry or a reconcile of the same work is the same run. OpenLineage recommends UUIDv7 for new
# runs; a v7 id needs a timestamp that is not part of the identity, so determinism wins.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lakehook:lineage:run")


@dataclass(frozen=True)
class DatasetName:
    """An OpenLineage dataset identity."""

    namespace: str
    name: str


@dataclass(frozen=True)
class LineageNaming:
    """The endpoints that appear in dataset names (the catalog side of the symlinks).

    Attributes:
        trino_host: Trino coordinator host as the Trino OpenLineage listener names it.
        trino_port: its port.
        catalog: the Hive catalog name in Trino (``hive``).
        hms_host: Hive Metastore host.
        hms_port: Hive Metastore port.
    """

    trino_host: str = "127.0.0.1"
    trino_port: int = 8080
    catalog: str = "hive"
    hms_host: str = "127.0.0.1"
    hms_port: int = 9083

    @classmethod
    def from_settings(cls, settings: Settings) -> LineageNaming:
        """The naming of the lakehook instance configured by ``settings``."""
        trino = urlparse(settings.trino_url)
        default_port = 443 if trino.scheme == "https" else 8080
        hms_host, hms_port = settings.hms_host_port
        return cls(
            trino_host=trino.hostname or "127.0.0.1",
            trino_port=trino.port or default_port,
            catalog=settings.trino_catalog,
            hms_host=hms_host,
            hms_port=hms_port,
        )

    def trino_table(self, schema: str, table: str) -> DatasetName:
        """The Trino name of a table: ``trino://host:port`` + ``catalog.schema.table``."""
        naming = Trino(
            host=self.trino_host,
            port=str(self.trino_port),
            catalog=self.catalog,
            schema=schema,
            table=table,
        )
        return DatasetName(naming.get_namespace(), naming.get_name())

    def hive_table(self, schema: str, table: str) -> DatasetName:
        """The Hive Metastore name of a table: ``hive://host:port`` + ``schema.table``."""
        naming = Hive(host=self.hms_host, port=str(self.hms_port), database=schema, table=table)
        return DatasetName(naming.get_namespace(), naming.get_name())


def lakefs_object(repo: str, branch: str, path: str) -> DatasetName:
    """An object or prefix on a lakeFS branch as the S3 gateway names it.

    Args:
        repo: the lakeFS repository (the S3 bucket of the gateway).
        branch: the branch (first segment of the S3 key).
        path: the path inside the branch; a trailing slash (a prefix) is dropped.

    Returns:
        ``s3://<repo>`` + ``<branch>/<path>``.
    """
    naming = S3(bucket_name=repo, object_key=f"{branch}/{path.strip('/')}")
    return DatasetName(naming.get_namespace(), naming.get_name())


def raw_dataset(repo: str, branch: str, raw_path: str) -> DatasetName:
    """The raw CSV input, e.g. ``s3://study`` + ``main/raw/DM.csv``."""
    return lakefs_object(repo, branch, raw_path)


def contents_dataset(repo: str, branch: str, contents_path: str) -> DatasetName:
    """The contents file input, e.g. ``s3://study`` + ``main/raw/contents.csv``."""
    return lakefs_object(repo, branch, contents_path)


def table_dataset(repo: str, branch: str, table: str) -> DatasetName:
    """The processed table output, e.g. ``s3://study`` + ``main/tables/dm``."""
    return lakefs_object(repo, branch, f"{TABLES_PREFIX}{table}")


def default_raw_path(dataset: str) -> str:
    """Where the CSV of ``dataset`` is under the default study config: ``raw/<dataset>.csv``."""
    return f"{DEFAULT_RAW_PREFIX}{dataset}.csv"


def table_job_name(repo: str, table: str) -> str:
    """The job of one table: ``<repo>.<table>``."""
    return f"{repo}.{table}"


def commit_job_name(repo: str) -> str:
    """The parent job of the table runs of one processed commit: ``<repo>`` (see above)."""
    return repo


def ingest_job_name(repo: str) -> str:
    """The job that put raw data into ``repo`` (a lakeFS commit): ``<repo>.ingest``."""
    return f"{repo}.{INGEST_JOB_SUFFIX}"


def ingest_run_id(repo: str, commit: str) -> str:
    """The deterministic run id of the ingestion that made ``commit`` in ``repo``."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"ingest\0{repo}\0{commit}"))


def table_run_id(repo: str, source_commit: str, table: str) -> str:
    """The deterministic run id of processing ``table`` of ``source_commit`` in ``repo``."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"table\0{repo}\0{source_commit}\0{table}"))


def commit_run_id(repo: str, source_commit: str) -> str:
    """The deterministic run id of processing ``source_commit`` in ``repo`` (the parent run)."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"commit\0{repo}\0{source_commit}"))


def web_ui_lineage_url(web_url: str, repo: str, branch: str, table: str) -> str:
    """The Marquez web UI's page of one table's lineage graph, e.g.
    ``http://127.0.0.1:3000/lineage/dataset/s3%3A%2F%2Fstudy/main%2Ftables%2Fdm``."""
    from urllib.parse import quote

    dataset = table_dataset(repo, branch, table)
    return (
        f"{web_url.rstrip('/')}/lineage/dataset/"
        f"{quote(dataset.namespace, safe='')}/{quote(dataset.name, safe='')}"
    )
