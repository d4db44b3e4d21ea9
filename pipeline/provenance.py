"""What lakehook made, decided in one place by one rule (contract §8 v1.1).

lakeFS Community has one user, and commit metadata can be typed by anyone, so neither the
committer nor a marker tells lakehook's commits from a person's. This module decides it by
signatures made with ``LAKEHOOK_SIGNING_KEY`` (HMAC-SHA256, compared in constant time):

* **commits**: lakehook's commits and merges carry ``lakehook.origin=lakehook``,
  ``lakehook.source_commit``, ``lakehook.branch``, ``lakehook.parent`` (the commit it was
  made on: the processed head for a working-branch commit, the working branch's head for a
  merge), ``lakehook.manifests`` (a digest of every manifest it leaves on the branch) and
  ``lakehook.signature``, the HMAC over the canonical bytes of repository, branch, source
  commit, parent and manifests digest (``commit_message_bytes``). A commit is lakehook's when
  the signature verifies, the signed parent is one of the commit's parents (metadata copied
  onto another commit names a parent it does not have) and, where ``LAKEHOOK_LAKEHOOK_USER``
  names lakehook's own lakeFS user (lakeFS Enterprise), the committer is that user.
* **manifests**: every manifest lakehook writes carries per-file fingerprints (size and lakeFS
  checksum of each Parquet file) and a signature over its canonical JSON without the signature
  field. Nothing in it names a repository or a ref, so a branch copy or a merge keeps it
  valid. A manifest is trusted when the signature verifies and its files are at the ref with
  those sizes and checksums (one listing of ``tables/``; no data is read).
* **merges**: a merge is lakehook's own only when lakehook recorded it (repository,
  destination branch, source commit) in its job database before asking lakeFS for it
  (``StatusStore.record_merge``); the pre-merge gate checks that record, never a branch name.

The key is never logged and never part of any ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from pipeline import naming
from pipeline.model import (
    MANIFEST_PREFIX,
    ORIGIN_KEY,
    ORIGIN_VALUE,
    SOURCE_COMMIT_KEY,
    TABLES_PREFIX,
    TableManifest,
)

if TYPE_CHECKING:
    from lakehook.settings import Settings
    from pipeline.ports import Commit, LakeFS, ObjectInfo

log = logging.getLogger(__name__)

BRANCH_KEY = "lakehook.branch"
PARENT_KEY = "lakehook.parent"
MANIFESTS_KEY = "lakehook.manifests"
TABLES_KEY = "lakehook.tables"
SIGNATURE_KEY = "lakehook.signature"
WORKING_PREFIX = "_lakehook-"

MAX_MANIFEST_BYTES = 16 << 20  # a larger "manifest" is not read, and not trusted
MERGE_CHAIN_DEPTH = 50  # lakehook merges followed down from a head (source_commit_at)
_COMMIT_DOMAIN = "lakehook-commit-v1"
_MANIFEST_DOMAIN = b"lakehook-manifest-v1\n"


def working_branch(branch: str, source_commit: str) -> str:
    """The lakehook working branch that carries outputs of ``source_commit`` to ``branch``."""
    return f"{WORKING_PREFIX}{naming.sanitize(branch)}-{source_commit[:12]}"


def is_working_branch_name(name: str) -> bool:
    """Whether ``name`` is in the namespace reserved for lakehook's working branches.

    Such branches are never processed; a merge from one still passes the gate only when
    lakehook recorded it (``StatusStore.merge_recorded``), never because of its name.
    """
    return name.startswith(WORKING_PREFIX)


class MergeLog(Protocol):
    """Where lakehook records the merges it is about to ask for (the job database)."""

    def record_merge(self, repo: str, destination: str, source_commit: str) -> None: ...

    def merge_recorded(self, repo: str, destination: str, source_commit: str) -> bool: ...


def commit_message_bytes(
    repo: str, branch: str, source_commit: str, parent: str, manifests_digest: str
) -> bytes:
    """The canonical bytes a commit signature covers: a JSON list, so fields cannot run
    into each other whatever characters they hold."""
    fields = [_COMMIT_DOMAIN, repo, branch, source_commit, parent, manifests_digest]
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def manifest_bytes(manifest: TableManifest) -> bytes:
    """The canonical bytes a manifest signature covers: its JSON without the signature."""
    data = asdict(manifest)
    data.pop("signature", None)
    text = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return _MANIFEST_DOMAIN + text.encode("ascii")


def manifests_digest(manifests: Mapping[str, TableManifest]) -> str:
    """One digest of a set of manifests: sha256 over each table's name and signature."""
    lines = [f"{t}\n{m.signature}\n" for t, m in sorted(manifests.items())]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ManifestCheck:
    """The manifests at a ref: those lakehook trusts, and why each other one is not."""

    trusted: dict[str, TableManifest]
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)  # table -> (path, why)
    stray: tuple[str, ...] = ()  # objects under tables/ no trusted manifest lists


@dataclass(frozen=True)
class Provenance:
    """Signs and verifies what lakehook writes; the one place that decides "made by lakehook"."""

    key: bytes = field(repr=False)
    lakehook_user: str = ""  # lakeFS user of lakehook's own (Enterprise); "" = Community
    merges: MergeLog | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Provenance(key=<hidden>, lakehook_user={self.lakehook_user!r})"

    @classmethod
    def from_settings(cls, settings: Settings, merges: MergeLog | None = None) -> Provenance:
        return cls(settings.signing_secret(), settings.lakehook_user, merges)

    def _mac(self, message: bytes) -> str:
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def _matches(self, signature: str, message: bytes) -> bool:
        return hmac.compare_digest(
            signature.encode("ascii", "replace"), self._mac(message).encode()
        )

    # ---- commits ------------------------------------------------------------------------------
    def commit_metadata(
        self,
        repo: str,
        branch: str,
        source_commit: str,
        parent: str,
        manifests: Mapping[str, TableManifest],
        tables: Sequence[str] = (),
    ) -> dict[str, str]:
        """The metadata of a commit or merge lakehook makes, signature included."""
        digest = manifests_digest(manifests)
        return {
            ORIGIN_KEY: ORIGIN_VALUE,
            SOURCE_COMMIT_KEY: source_commit,
            BRANCH_KEY: branch,
            PARENT_KEY: parent,
            MANIFESTS_KEY: digest,
            TABLES_KEY: ",".join(tables),
            SIGNATURE_KEY: self._mac(
                commit_message_bytes(repo, branch, source_commit, parent, digest)
            ),
        }

    def metadata_signed(self, repo: str, metadata: Mapping[str, str], committer: str = "") -> bool:
        """Marker, source commit and a valid signature for ``repo`` (and the committer, where
        lakehook has its own user). Without the commit's parents: for webhook payloads."""
        if metadata.get(ORIGIN_KEY) != ORIGIN_VALUE:
            return False
        if self.lakehook_user and committer != self.lakehook_user:
            return False
        source = metadata.get(SOURCE_COMMIT_KEY, "")
        signature = metadata.get(SIGNATURE_KEY, "")
        if not source or not signature:
            return False
        message = commit_message_bytes(
            repo,
            metadata.get(BRANCH_KEY, ""),
            source,
            metadata.get(PARENT_KEY, ""),
            metadata.get(MANIFESTS_KEY, ""),
        )
        return self._matches(signature, message)

    def is_lakehook_commit(self, repo: str, commit: Commit) -> bool:
        """The v1.1 rule: signed metadata whose signed parent is one of the commit's parents."""
        return (
            self.metadata_signed(repo, commit.metadata, commit.committer)
            and commit.metadata.get(PARENT_KEY, "") in commit.parents
        )

    def source_commit_of(self, repo: str, commit: Commit) -> str:
        """The user's commit a head stands for: the one lakehook's own commits name; any other
        commit (a forged marker included) stands for itself."""
        if self.is_lakehook_commit(repo, commit):
            return commit.metadata[SOURCE_COMMIT_KEY]
        return commit.id

    def source_commit_at(self, lakefs: LakeFS, repo: str, commit: Commit) -> str:
        """The user's commit a branch head stands for, with lakehook's merges followed down.

        A lakehook merge stands for its source commit only when its first parent (the branch
        as it was when lakeFS merged) stands for that source too. A user commit that landed on
        the branch while lakehook worked on the previous one is the merge's first parent: the
        merge then stands for that newer commit, which still needs processing (naming the
        merge after the older source would hide the newer commit for good).
        """
        for _ in range(MERGE_CHAIN_DEPTH):
            source = self.source_commit_of(repo, commit)
            if source == commit.id or len(commit.parents) < 2:
                return source  # a user's commit, or a working-branch commit
            first = commit.parents[0]
            if first == source:
                return source
            commit = lakefs.get_commit(repo, first)
            if self.source_commit_of(repo, commit) == source:
                return source  # lakehook's previous merge of the same source
        return self.source_commit_of(repo, commit)

    # ---- merges -------------------------------------------------------------------------------
    def record_merge(self, repo: str, destination: str, source_commit: str) -> None:
        """Record, before asking lakeFS, that lakehook merges ``source_commit`` into
        ``destination`` (the pre-merge gate lets exactly that through)."""
        if self.merges is None:
            raise RuntimeError("no merge log: lakehook cannot merge without recording it first")
        self.merges.record_merge(repo, destination, source_commit)

    def is_lakehook_merge(self, repo: str, destination: str, source_commit: str) -> bool:
        return self.merges is not None and self.merges.merge_recorded(
            repo, destination, source_commit
        )

    # ---- manifests ----------------------------------------------------------------------------
    def seal(
        self, manifest: TableManifest, uploaded: Mapping[str, ObjectInfo] | None = None
    ) -> TableManifest:
        """``manifest`` with the fingerprints of its uploaded files and its signature."""
        prints = dict(manifest.file_fingerprints)
        for path in manifest.files:
            info = (uploaded or {}).get(path)
            if info is not None:
                prints[path] = (info.size, info.checksum)
        missing = [p for p in manifest.files if p not in prints]
        if missing:
            raise ValueError(f"no fingerprint for {', '.join(missing)}")
        unsigned = replace(manifest, file_fingerprints=prints, signature="")
        return replace(unsigned, signature=self._mac(manifest_bytes(unsigned)))

    def manifest_signed(self, manifest: TableManifest) -> bool:
        return bool(manifest.signature) and self._matches(
            manifest.signature, manifest_bytes(manifest)
        )

    def check_manifests(self, lakefs: LakeFS, repo: str, ref: str) -> ManifestCheck:
        """The manifests at ``ref``, split into trusted and rejected (with the reason).

        Trusted: parses, names its own table, signed by lakehook, and every Parquet file it
        lists is at ``ref`` with the size and checksum it records. Reads the manifests and
        lists ``tables/`` once; reads no data.
        """
        objects = {o.path: o for o in lakefs.list_objects(repo, ref, TABLES_PREFIX)}
        trusted: dict[str, TableManifest] = {}
        rejected: dict[str, tuple[str, str]] = {}
        for obj in lakefs.list_objects(repo, ref, MANIFEST_PREFIX):
            if not obj.path.endswith(".json"):
                continue
            table = obj.path[len(MANIFEST_PREFIX) : -len(".json")]
            manifest: TableManifest | None = None
            if obj.size <= MAX_MANIFEST_BYTES:
                try:
                    manifest = TableManifest.from_json(lakefs.read_object(repo, ref, obj.path))
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                    manifest = None
            why = self._distrust(manifest, table, objects)
            if why is None and manifest is not None:
                trusted[table] = manifest
            else:
                rejected[table] = (obj.path, why or "cannot be read")
        listed = {p for m in trusted.values() for p in m.files}
        stray = tuple(sorted(p for p in objects if p not in listed))
        for path, why in sorted(rejected.values()):
            log.info("%s at %s/%s %s; it is treated as absent", path, repo, ref, why)
        return ManifestCheck(trusted, rejected, stray)

    def _distrust(
        self, manifest: TableManifest | None, table: str, objects: Mapping[str, ObjectInfo]
    ) -> str | None:
        """Why ``manifest`` is not trusted, or None."""
        if manifest is None:
            return "is not a manifest lakehook can read"
        if manifest.table != table or manifest.path != f"{MANIFEST_PREFIX}{table}.json":
            return f"names table {manifest.table!r}, not {table!r}"
        if not self.manifest_signed(manifest):
            return "is not signed by lakehook"
        prefix = f"{TABLES_PREFIX}{table}/"
        for path in manifest.files:
            if not path.startswith(prefix):
                return f"lists {path}, outside {prefix}"
            expected = manifest.file_fingerprints.get(path)
            found = objects.get(path)
            if found is None:
                return f"lists {path}, which is missing"
            if expected is None or (found.size, found.checksum) != tuple(expected):
                return f"does not match {path} (the file was changed after lakehook wrote it)"
        return None


def describe_rejection(path: str, why: str, raw_path: str | None) -> str:
    """The status warning for a manifest lakehook does not trust."""
    if raw_path:
        return f"{path} {why}; rebuilt from {raw_path}"
    return f"{path} {why}; its table is not registered and its files are removed"
