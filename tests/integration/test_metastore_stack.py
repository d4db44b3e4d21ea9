"""Metastore sync, copy, verification and repair on the real stack (lakeFS, HMS, Trino).

Parquet files go to lakeFS through its S3 gateway (boto3), commits and refs through its REST
API; the schemas are made with each metastore adapter and checked with Trino queries.
Fails, never skips, when the stack is down.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lakehook.settings import Settings
from pipeline.adapters.trino_metastore import TrinoMetastore
from pipeline.metastore.repair import sync_and_verify
from pipeline.metastore.sync import copy_schema, desired_tables_from_manifests, sync_ref
from pipeline.metastore.verify import DEFINITION, MISSING_TABLE, verify_ref
from pipeline.model import TableManifest
from pipeline.naming import schema_name
from pipeline.ports import LakeFS, Metastore, ObjectInfo
from tests.fakes.metastore import make_manifest
from tests.repositories import created

pytestmark = pytest.mark.stack


class Lake:
    """Just enough of lakeFS for these tests: REST for refs, S3 gateway for objects."""

    def __init__(self, settings: Settings, repo: str) -> None:
        self.settings = settings
        self.repo = repo
        self.s3 = boto3.client(
            "s3",
            endpoint_url=settings.lakefs_url,
            aws_access_key_id=settings.lakefs_access_key_id,
            aws_secret_access_key=settings.lakefs_secret_access_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def api(self, method: str, path: str, body: object = None) -> Any:
        token = base64.b64encode(
            f"{self.settings.lakefs_access_key_id}:"
            f"{self.settings.lakefs_secret_access_key}".encode()
        ).decode()
        request = urllib.request.Request(
            f"{self.settings.lakefs_url}/api/v1{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            raw = response.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:  # e.g. creating a branch answers the commit id as plain text
            return raw.decode()

    def create(self) -> None:
        self.api(
            "POST",
            "/repositories",
            {"name": created(self.repo), "storage_namespace": f"local://{self.repo}"},
        )

    def delete(self) -> None:
        self.api("DELETE", f"/repositories/{self.repo}")

    def put(self, ref: str, path: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.repo, Key=f"{ref}/{path}", Body=data)

    def remove(self, ref: str, path: str) -> None:
        self.s3.delete_object(Bucket=self.repo, Key=f"{ref}/{path}")

    def keys(self, ref: str, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.repo, Prefix=f"{ref}/{prefix}")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def commit(self, branch: str, message: str) -> str:
        return str(
            self.api(
                "POST", f"/repositories/{self.repo}/branches/{branch}/commits", {"message": message}
            )["id"]
        )

    def branch(self, name: str, source: str) -> None:
        self.api("POST", f"/repositories/{self.repo}/branches", {"name": name, "source": source})

    def tag(self, name: str, ref: str) -> None:
        self.api("POST", f"/repositories/{self.repo}/tags", {"id": name, "ref": ref})

    # the LakeFS port methods verification reads Parquet footers with (stat, then ranged reads)
    def read_object(self, repo: str, ref: str, path: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=repo, Key=f"{ref}/{path}")["Body"].read())

    def stat_object(self, repo: str, ref: str, path: str) -> ObjectInfo | None:
        try:
            head = self.s3.head_object(Bucket=repo, Key=f"{ref}/{path}")
        except ClientError:
            return None
        return ObjectInfo(path, str(head.get("ETag", "")).strip('"'), int(head["ContentLength"]))

    def read_range(self, repo: str, ref: str, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        span = f"bytes={offset}-{offset + length - 1}"
        body = self.s3.get_object(Bucket=repo, Key=f"{ref}/{path}", Range=span)["Body"]
        return bytes(body.read())


def parquet(rows: int, text_age: bool = False, start: int = 0) -> bytes:
    ids = [f"01-701-{1000 + start + i}" for i in range(rows)]
    ages = [40 + i for i in range(rows)]
    table = pa.table(
        {
            "usubjid": pa.array(ids),
            "age": pa.array([str(a) for a in ages]) if text_age else pa.array(ages, pa.int32()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def dm_manifest(rows: int, age: str = "integer", files: int = 1, fp: str = "1") -> TableManifest:
    return make_manifest(
        "dm",
        [("usubjid", "varchar"), ("age", age)],
        rows=rows,
        fingerprint=fp * 64,
        files=tuple(f"tables/dm/part-{i}.parquet" for i in range(files)),
    )


SV = make_manifest(
    "sv", [("usubjid", "varchar"), ("age", "integer")], rows=2, files=("tables/sv/part-0.parquet",)
)


@dataclass
class Study:
    lake: Lake
    metastore: Metastore
    trino: TrinoMetastore
    repo: str
    schemas: dict[tuple[str, str, str], str]

    def schema(self, ref: str, ref_type: str = "branch") -> str:
        name = schema_name(self.repo, ref, self.schemas, ref_type)
        self.schemas[(self.repo, ref_type, ref)] = name
        return name

    def count(self, schema: str, table: str) -> int:
        return int(self.trino.query(f'SELECT count(*) FROM "{schema}"."{table}"')[0][0])

    @property
    def reader(self) -> LakeFS:
        return cast("LakeFS", self.lake)

    def verify(self, ref: str, schema: str, manifests: dict[str, TableManifest]) -> list[str]:
        problems = verify_ref(self.metastore, self.reader, self.repo, ref, schema, manifests)
        return [str(p) for p in problems]


@pytest.fixture(params=["trino"])
def study(request: pytest.FixtureRequest, stack_settings: Settings) -> Iterator[Study]:
    repo = f"meta-{uuid.uuid4().hex[:8]}"
    lake = Lake(stack_settings, repo)
    lake.create()
    trino = TrinoMetastore.from_settings(stack_settings)
    metastore: Metastore = trino
    lake.put("main", "tables/dm/part-0.parquet", parquet(3))
    lake.put("main", "tables/sv/part-0.parquet", parquet(2))
    lake.commit("main", "outputs")
    result = Study(lake, metastore, trino, repo, {})
    try:
        yield result
    finally:
        for schema in result.schemas.values():
            metastore.drop_schema(schema)
        lake.delete()


def test_branch_copy_reads_the_same_rows_and_branch_data_stays_on_the_branch(
    study: Study,
) -> None:
    main = study.schema("main")
    manifests = {"dm": dm_manifest(3), "sv": SV}
    _, problems = sync_and_verify(
        study.metastore, study.reader, study.repo, "main", main, manifests
    )
    assert problems == []
    assert study.count(main, "dm") == 3

    study.lake.branch("v2", "main")
    v2 = study.schema("v2")
    result = copy_schema(study.metastore, main, v2, study.repo, "v2")
    assert result.ok
    assert study.verify("v2", v2, manifests) == []
    assert study.count(v2, "dm") == 3
    assert study.count(v2, "sv") == 2

    study.lake.put("v2", "tables/dm/part-1.parquet", parquet(2, start=10))
    study.lake.commit("v2", "more rows on v2")
    assert study.count(v2, "dm") == 5
    assert study.count(main, "dm") == 3
    v2_manifests = {"dm": dm_manifest(5, files=2, fp="2"), "sv": SV}
    _, problems = sync_and_verify(study.metastore, study.reader, study.repo, "v2", v2, v2_manifests)
    assert problems == []
    assert study.verify("main", main, manifests) == []


def test_changed_column_type_replaces_the_table_and_verifies(study: Study) -> None:
    main = study.schema("main")
    sync_ref(
        study.metastore,
        main,
        desired_tables_from_manifests(study.repo, "main", main, {"dm": dm_manifest(3)}),
    )
    study.lake.put("main", "tables/dm/part-0.parquet", parquet(3, text_age=True))
    study.lake.commit("main", "age as text")
    as_text = {"dm": dm_manifest(3, age="varchar", fp="3")}
    result = sync_ref(
        study.metastore, main, desired_tables_from_manifests(study.repo, "main", main, as_text)
    )
    assert [(a.kind, a.table) for a in result.actions] == [("replace", "dm")]
    assert study.verify("main", main, as_text) == []
    rows = study.trino.query(f'SELECT age FROM "{main}"."dm" ORDER BY age')
    assert rows == [["40"], ["41"], ["42"]]


def test_changes_behind_lakehooks_back_are_detected_and_repaired(study: Study) -> None:
    main = study.schema("main")
    manifests = {"dm": dm_manifest(3), "sv": SV}
    sync_and_verify(study.metastore, study.reader, study.repo, "main", main, manifests)
    study.trino.query(f'DROP TABLE "hive"."{main}"."sv"')
    study.trino.query(f'ALTER TABLE "hive"."{main}"."dm" ADD COLUMN extra varchar')

    problems = verify_ref(study.metastore, study.reader, study.repo, "main", main, manifests)
    assert {(p.table, p.what) for p in problems} == {("dm", DEFINITION), ("sv", MISSING_TABLE)}

    _, left = sync_and_verify(study.metastore, study.reader, study.repo, "main", main, manifests)
    assert left == []
    assert study.count(main, "sv") == 2
    columns = study.trino.query(f'SHOW COLUMNS FROM "hive"."{main}"."dm"')
    assert [c[0] for c in columns] == ["usubjid", "age"]


def test_dropping_a_schema_never_deletes_data(study: Study) -> None:
    main = study.schema("main")
    sync_ref(
        study.metastore,
        main,
        desired_tables_from_manifests(study.repo, "main", main, {"dm": dm_manifest(3), "sv": SV}),
    )
    before = study.lake.keys("main", "tables/")
    study.metastore.drop_schema(main)
    assert main not in study.metastore.list_schemas()
    assert study.lake.keys("main", "tables/") == before
    assert len(before) == 2


def test_tag_schema_answers_at_the_tags_commit(study: Study) -> None:
    main = study.schema("main")
    manifests = {"dm": dm_manifest(3), "sv": SV}
    sync_ref(
        study.metastore, main, desired_tables_from_manifests(study.repo, "main", main, manifests)
    )
    study.lake.tag("v1.0", "main")
    tag = study.schema("v1.0", "tag")
    assert tag == f"{study.repo.replace('-', '_')}_tag_v1_0"
    _, problems = sync_and_verify(study.metastore, study.reader, study.repo, "v1.0", tag, manifests)
    assert problems == []

    study.lake.put("main", "tables/dm/part-1.parquet", parquet(4, start=20))
    study.lake.commit("main", "more rows on main")
    assert study.count(main, "dm") == 7
    assert study.count(tag, "dm") == 3
