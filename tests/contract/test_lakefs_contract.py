"""One behaviour suite for the ``LakeFS`` port, run on the in-memory fake and on real lakeFS."""

from __future__ import annotations

import io
import uuid

import pytest

from lakehook.errors import NotFound, RefMoved, TerminalError
from lakehook.settings import Settings
from pipeline.ports import LakeFS
from tests.fakes.lakefs import FakeLakeFS
from tests.repositories import created


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.stack)])
def lakefs(request: pytest.FixtureRequest) -> LakeFS:
    if request.param == "fake":
        return FakeLakeFS()
    from pipeline.adapters.lakefs import LakeFSClient

    request.getfixturevalue("stack_settings")
    return LakeFSClient.from_settings(Settings.load())


@pytest.fixture
def repo(lakefs: LakeFS) -> str:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    lakefs.create_repository(created(name), f"local://{name}")
    return name


def test_upload_commit_read_list(lakefs: LakeFS, repo: str) -> None:
    info = lakefs.upload_object(repo, "main", "raw/a.csv", b"x,y\n1,2\n")
    assert info.size == 8
    lakefs.upload_object(repo, "main", "raw/b.csv", io.BytesIO(b"streamed\n"))
    assert [c.path for c in lakefs.uncommitted(repo, "main")] == ["raw/a.csv", "raw/b.csv"]
    commit = lakefs.commit(repo, "main", "first", {"k": "v"})
    assert lakefs.branch_head(repo, "main") == commit.id
    assert lakefs.get_commit(repo, commit.id).metadata["k"] == "v"
    assert lakefs.uncommitted(repo, "main") == []
    assert lakefs.read_object(repo, commit.id, "raw/a.csv") == b"x,y\n1,2\n"
    with lakefs.open_object(repo, "main", "raw/b.csv") as stream:
        assert stream.read() == b"streamed\n"
    assert [o.path for o in lakefs.list_objects(repo, "main", "raw/")] == ["raw/a.csv", "raw/b.csv"]
    same = lakefs.stat_object(repo, "main", "raw/a.csv")
    assert same is not None
    assert same.checksum == info.checksum
    assert lakefs.stat_object(repo, "main", "raw/none.csv") is None
    with pytest.raises(NotFound):
        lakefs.read_object(repo, "main", "raw/none.csv")


def test_branches_merge_and_dirty_destination(lakefs: LakeFS, repo: str) -> None:
    lakefs.upload_object(repo, "main", "a.txt", b"a")
    base = lakefs.commit(repo, "main", "base", {})
    head = lakefs.create_branch(repo, "work", "main")
    assert head == base.id
    assert lakefs.create_branch(repo, "work", "main") == head  # exists: no error
    lakefs.upload_object(repo, "work", "b.txt", b"b")
    lakefs.commit(repo, "work", "on work", {"lakehook.origin": "lakehook"})
    assert {b.name for b in lakefs.list_branches(repo)} == {"main", "work"}

    lakefs.upload_object(repo, "main", "dirty.txt", b"d")  # uncommitted on the destination
    with pytest.raises(RefMoved):
        lakefs.merge(repo, "work", "main", "merge", {"m": "1"})
    lakefs.delete_object(repo, "main", "dirty.txt")

    merged = lakefs.merge(repo, "work", "main", "merge", {"m": "1"})
    assert lakefs.branch_head(repo, "main") == merged
    assert lakefs.get_commit(repo, merged).metadata["m"] == "1"
    assert lakefs.read_object(repo, "main", "b.txt") == b"b"
    assert [c.path for c in lakefs.diff_refs(repo, base.id, "main")] == ["b.txt"]
    assert lakefs.log(repo, "main", limit=1)[0].id == merged

    lakefs.delete_branch(repo, "work")
    with pytest.raises(NotFound):
        lakefs.branch_head(repo, "work")


def test_a_merge_already_made_is_refused_as_no_changes(lakefs: LakeFS, repo: str) -> None:
    """Merging the same source twice: lakeFS answers 400 "no changes" (issue 12), so a retried
    write-back must recognise its merge in the destination's history, not merge again."""
    lakefs.upload_object(repo, "main", "a.txt", b"a")
    lakefs.commit(repo, "main", "base", {})
    lakefs.create_branch(repo, "work", "main")
    lakefs.upload_object(repo, "work", "b.txt", b"b")
    work_head = lakefs.commit(repo, "work", "on work", {}).id
    merged = lakefs.merge(repo, "work", "main", "merge", {"m": "1"})
    with pytest.raises(TerminalError, match="no changes"):
        lakefs.merge(repo, "work", "main", "merge again", {"m": "1"})
    assert lakefs.branch_head(repo, "main") == merged
    # the merge is visible in the destination's history with the working head as a parent
    newest = lakefs.log(repo, "main", limit=5)[0]
    assert newest.id == merged
    assert work_head in newest.parents[1:]
    lakefs.create_branch(repo, "nothing", "main")  # a branch with no commit of its own
    with pytest.raises(TerminalError, match="no changes"):
        lakefs.merge(repo, "nothing", "main", "empty", {})


def test_tags(lakefs: LakeFS, repo: str) -> None:
    lakefs.upload_object(repo, "main", "a.txt", b"a")
    commit = lakefs.commit(repo, "main", "c", {})
    assert lakefs.create_tag(repo, "v1", "main") == commit.id
    assert lakefs.resolve(repo, "v1") == commit.id
    assert [t.name for t in lakefs.list_tags(repo)] == ["v1"]
    lakefs.delete_tag(repo, "v1")
    assert lakefs.list_tags(repo) == []
    with pytest.raises(NotFound):
        lakefs.resolve(repo, "v1")


def test_ranged_reads(lakefs: LakeFS, repo: str) -> None:
    data = bytes(range(256)) * 40
    lakefs.upload_object(repo, "main", "tables/t/part-00000.parquet", data)
    commit = lakefs.commit(repo, "main", "range", {})
    assert (
        lakefs.read_range(repo, commit.id, "tables/t/part-00000.parquet", 100, 50) == data[100:150]
    )
    assert (
        lakefs.read_range(repo, "main", "tables/t/part-00000.parquet", len(data) - 8, 8)
        == (data[-8:])
    )
    with pytest.raises(NotFound):
        lakefs.read_range(repo, "main", "tables/none.parquet", 0, 8)
