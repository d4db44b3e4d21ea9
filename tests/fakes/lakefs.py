"""An in-memory lakeFS: repositories, branches with staging areas, commits, tags, merges.

Behaves like the real server where lakehook depends on it (``tests/contract`` checks that):
commit ids are content-addressed-ish, merges refuse a destination with uncommitted changes,
a merge whose source brings no changes (e.g. merged already) is refused like lakeFS's
400 "no changes", objects carry a checksum.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from lakehook.errors import NotFound, RefMoved, TerminalError
from pipeline.ports import Change, Commit, ObjectInfo, Ref

_Tree = dict[str, bytes]


@dataclass
class _Repo:
    default_branch: str
    commits: dict[str, tuple[Commit, _Tree]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit id
    staging: dict[str, dict[str, bytes | None]] = field(default_factory=dict)  # None = deleted
    tags: dict[str, str] = field(default_factory=dict)


class FakeLakeFS:
    """In-memory implementation of ``pipeline.ports.LakeFS``."""

    def __init__(self, user: str = "lakehook") -> None:
        self.user = user
        self.repos: dict[str, _Repo] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self.bytes_ranged = 0  # bytes served by read_range (footer-only reads are small)
        self.merge_hook: object = (
            None  # callable(repo, source_commit, dest) -> None | raise, to mimic pre-merge
        )

    # -- helpers -------------------------------------------------------------------------------
    def _repo(self, repo: str) -> _Repo:
        try:
            return self.repos[repo]
        except KeyError:
            raise NotFound(f"repository {repo!r} not found") from None

    def _new_commit(
        self,
        r: _Repo,
        parents: tuple[str, ...],
        tree: _Tree,
        message: str,
        metadata: Mapping[str, str],
    ) -> Commit:
        seq = next(self._counter)
        digest = hashlib.sha256(f"{seq}|{parents}|{message}".encode()).hexdigest()
        commit = Commit(digest, parents, self.user, message, dict(metadata), seq)
        r.commits[digest] = (commit, dict(tree))
        return commit

    def _tree(self, repo: str, ref: str, *, staged: bool = True) -> _Tree:
        r = self._repo(repo)
        commit_id = self.resolve(repo, ref)
        tree = dict(r.commits[commit_id][1])
        if staged and ref in r.branches:
            for path, data in r.staging[ref].items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = data
        return tree

    @staticmethod
    def _info(path: str, data: bytes) -> ObjectInfo:
        return ObjectInfo(path, hashlib.md5(data).hexdigest(), len(data))  # noqa: S324 (like S3 ETags)

    # -- LakeFS protocol -----------------------------------------------------------------------
    def whoami(self) -> str:
        return self.user

    def list_repositories(self) -> list[str]:
        return sorted(self.repos)

    def create_repository(
        self, repo: str, storage_namespace: str, default_branch: str = "main"
    ) -> None:
        with self._lock:
            if repo in self.repos:
                return
            r = _Repo(default_branch)
            self.repos[repo] = r
            root = self._new_commit(r, (), {}, "Repository created", {})
            r.branches[default_branch] = root.id
            r.staging[default_branch] = {}

    def list_branches(self, repo: str) -> list[Ref]:
        r = self._repo(repo)
        return [Ref(n, c) for n, c in sorted(r.branches.items())]

    def list_tags(self, repo: str) -> list[Ref]:
        r = self._repo(repo)
        return [Ref(n, c) for n, c in sorted(r.tags.items())]

    def branch_head(self, repo: str, branch: str) -> str:
        r = self._repo(repo)
        if branch not in r.branches:
            raise NotFound(f"branch {branch!r} not found in {repo!r}")
        return r.branches[branch]

    def resolve(self, repo: str, ref: str) -> str:
        r = self._repo(repo)
        if ref in r.branches:
            return r.branches[ref]
        if ref in r.tags:
            return r.tags[ref]
        if ref in r.commits:
            return ref
        matches = [c for c in r.commits if c.startswith(ref)] if len(ref) >= 6 else []
        if len(matches) == 1:
            return matches[0]
        raise NotFound(f"ref {ref!r} not found in {repo!r}")

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        r = self._repo(repo)
        return r.commits[self.resolve(repo, commit_id)][0]

    def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        tree = self._tree(repo, ref)
        return [self._info(p, d) for p, d in sorted(tree.items()) if p.startswith(prefix)]

    def stat_object(self, repo: str, ref: str, path: str) -> ObjectInfo | None:
        data = self._tree(repo, ref).get(path)
        return None if data is None else self._info(path, data)

    def read_object(self, repo: str, ref: str, path: str) -> bytes:
        try:
            return self._tree(repo, ref)[path]
        except KeyError:
            raise NotFound(f"object {path!r} not found at {repo}/{ref}") from None

    def open_object(self, repo: str, ref: str, path: str) -> BinaryIO:
        return io.BytesIO(self.read_object(repo, ref, path))

    def read_range(self, repo: str, ref: str, path: str, offset: int, length: int) -> bytes:
        data = self._tree(repo, ref).get(path)
        if data is None:
            raise NotFound(f"object {path!r} not found at {repo}/{ref}")
        self.bytes_ranged += length
        return data[offset : offset + length]

    def upload_object(
        self, repo: str, branch: str, path: str, data: bytes | BinaryIO
    ) -> ObjectInfo:
        payload = data if isinstance(data, bytes) else data.read()
        with self._lock:
            r = self._repo(repo)
            if branch not in r.branches:
                raise NotFound(f"branch {branch!r} not found in {repo!r}")
            r.staging[branch][path] = payload
        return self._info(path, payload)

    def delete_object(self, repo: str, branch: str, path: str) -> None:
        with self._lock:
            r = self._repo(repo)
            if path not in self._tree(repo, branch):
                raise NotFound(f"object {path!r} not found at {repo}/{branch}")
            committed = r.commits[r.branches[branch]][1]
            if path in committed:
                r.staging[branch][path] = None
            else:  # only ever staged: deleting it leaves no change behind
                del r.staging[branch][path]

    def copy_object(
        self, repo: str, branch: str, source_ref: str, source_path: str, path: str
    ) -> ObjectInfo:
        return self.upload_object(
            repo, branch, path, self.read_object(repo, source_ref, source_path)
        )

    def create_branch(self, repo: str, branch: str, source: str) -> str:
        with self._lock:
            r = self._repo(repo)
            if branch in r.branches:
                return r.branches[branch]
            r.branches[branch] = self.resolve(repo, source)
            r.staging[branch] = {}
            return r.branches[branch]

    def delete_branch(self, repo: str, branch: str) -> None:
        with self._lock:
            r = self._repo(repo)
            if branch not in r.branches:
                raise NotFound(f"branch {branch!r} not found in {repo!r}")
            del r.branches[branch]
            del r.staging[branch]

    def create_tag(self, repo: str, tag: str, ref: str) -> str:
        with self._lock:
            r = self._repo(repo)
            r.tags[tag] = self.resolve(repo, ref)
            return r.tags[tag]

    def delete_tag(self, repo: str, tag: str) -> None:
        with self._lock:
            r = self._repo(repo)
            if tag not in r.tags:
                raise NotFound(f"tag {tag!r} not found in {repo!r}")
            del r.tags[tag]

    def commit(
        self,
        repo: str,
        branch: str,
        message: str,
        metadata: Mapping[str, str],
        allow_empty: bool = False,
    ) -> Commit:
        with self._lock:
            r = self._repo(repo)
            if not r.staging[branch] and not allow_empty:
                raise TerminalError(f"commit: no changes on {repo}/{branch}")
            tree = self._tree(repo, branch)
            commit = self._new_commit(r, (r.branches[branch],), tree, message, metadata)
            r.branches[branch] = commit.id
            r.staging[branch] = {}
            return commit

    def merge(
        self,
        repo: str,
        source_ref: str,
        destination_branch: str,
        message: str,
        metadata: Mapping[str, str],
    ) -> str:
        with self._lock:
            r = self._repo(repo)
            if r.staging.get(destination_branch):
                raise RefMoved(
                    f"merge: destination {repo}/{destination_branch} has uncommitted changes"
                )
            source_commit = self.resolve(repo, source_ref)
            dest_commit = self.branch_head(repo, destination_branch)
            if callable(self.merge_hook):
                self.merge_hook(repo, source_commit, destination_branch)
            base = self._merge_base(r, source_commit, dest_commit)
            base_tree = r.commits[base][1] if base else {}
            src_tree, dst_tree = r.commits[source_commit][1], r.commits[dest_commit][1]
            if base == source_commit or src_tree == base_tree:
                raise TerminalError(
                    f"merge {repo}/{source_ref} into {destination_branch}: lakeFS answered "
                    f"400: update branch {destination_branch}: no changes"
                )
            merged = dict(dst_tree)
            for path in set(src_tree) | set(base_tree):
                s, b, d = src_tree.get(path), base_tree.get(path), dst_tree.get(path)
                if s == b:
                    continue  # only destination may have changed it
                if d != b and d != s:
                    raise TerminalError(f"merge conflict on {path!r}")
                if s is None:
                    merged.pop(path, None)
                else:
                    merged[path] = s
            commit = self._new_commit(r, (dest_commit, source_commit), merged, message, metadata)
            r.branches[destination_branch] = commit.id
            return commit.id

    @staticmethod
    def _ancestors(r: _Repo, commit_id: str) -> list[str]:
        seen: list[str] = []
        todo = [commit_id]
        while todo:
            c = todo.pop(0)
            if c in seen:
                continue
            seen.append(c)
            todo.extend(r.commits[c][0].parents)
        return seen

    def _merge_base(self, r: _Repo, a: str, b: str) -> str | None:
        ancestors_b = set(self._ancestors(r, b))
        for c in self._ancestors(r, a):
            if c in ancestors_b:
                return c
        return None

    def uncommitted(self, repo: str, branch: str, prefix: str = "") -> list[Change]:
        r = self._repo(repo)
        head_tree = r.commits[r.branches[branch]][1]
        out = []
        for path, data in sorted(r.staging[branch].items()):
            if not path.startswith(prefix):
                continue
            if data is None:
                out.append(Change("removed", path))
            else:
                out.append(Change("changed" if path in head_tree else "added", path))
        return out

    def diff_refs(self, repo: str, left: str, right: str, prefix: str = "") -> list[Change]:
        a = self._tree(repo, left, staged=False)
        b = self._tree(repo, right, staged=False)
        out = []
        for path in sorted(set(a) | set(b)):
            if not path.startswith(prefix) or a.get(path) == b.get(path):
                continue
            kind = "added" if path not in a else "removed" if path not in b else "changed"
            out.append(Change(kind, path))
        return out

    def log(self, repo: str, ref: str, limit: int = 100) -> list[Commit]:
        r = self._repo(repo)
        out: list[Commit] = []
        commit_id: str | None = self.resolve(repo, ref)
        while commit_id and len(out) < limit:
            commit = r.commits[commit_id][0]
            out.append(commit)
            commit_id = commit.parents[0] if commit.parents else None
        return out
