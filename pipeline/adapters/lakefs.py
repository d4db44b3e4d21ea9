"""The real ``LakeFS`` port: lakeFS's REST API (``lakefs_sdk``) plus its S3 gateway for streams.

Vendor errors are translated at this edge (``_translate``): 5xx and connection failures become
``ServiceUnavailable``, 404 ``NotFound``, a merge refused because the destination is dirty or
moved ``RefMoved``, a merge conflict or a pre-merge hook's refusal ``TerminalError``.
Large objects go through the S3 gateway so that neither reading a CSV nor uploading a Parquet
file needs the whole object in memory.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, TypeVar

import lakefs_sdk
from lakefs_sdk.client import LakeFSClient as _SdkClient
from lakefs_sdk.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from lakehook.errors import (
    NotFound,
    RefMoved,
    ServiceMisconfigured,
    ServiceUnavailable,
    TerminalError,
)
from lakehook.settings import Settings
from pipeline.ports import Change, Commit, ObjectInfo, Ref

T = TypeVar("T")
PAGE = 1000


def _paged(list_call: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Every result of a paginated lakeFS list call, page after page (``after``/``amount``)."""
    after = ""
    while True:
        page = list_call(*args, after=after, amount=PAGE, **kwargs)
        yield from page.results
        if not page.pagination.has_more:
            return
        after = page.pagination.next_offset


def _reason(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message", err.body))
    except (ValueError, AttributeError):
        return str(err.body or err.reason)


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as err:
        status = err.status or 0
        reason = _reason(err)
        if status == 404:
            raise NotFound(f"{what}: {reason}") from None
        if status in (401, 403):
            raise ServiceMisconfigured(
                f"{what}: lakeFS refused lakehook's credentials ({status}: {reason}); "
                "check LAKEHOOK_LAKEFS_ACCESS_KEY_ID / LAKEHOOK_LAKEFS_SECRET_ACCESS_KEY"
            ) from None
        if status >= 500 or status in (0, 429):
            raise ServiceUnavailable(f"{what}: lakeFS answered {status}: {reason}") from None
        raise TerminalError(f"{what}: lakeFS answered {status}: {reason}") from None
    except (Urllib3Error, OSError) as err:
        raise ServiceUnavailable(f"{what}: lakeFS unreachable: {err}") from None


def _s3_error(what: str, err: Any) -> Exception:
    """A refusal of the S3 gateway: 400/401/403 mean lakehook is misconfigured (credentials,
    endpoint, bucket), which no quick retry fixes; anything else is an outage."""
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if status in (400, 401, 403):
        return ServiceMisconfigured(
            f"{what}: lakeFS's S3 gateway refused the request ({status}: {err}); check the "
            "lakeFS endpoint and credentials"
        )
    return ServiceUnavailable(f"{what}: {err}")


def _commit(c: Any) -> Commit:
    return Commit(
        id=c.id,
        parents=tuple(c.parents or ()),
        committer=c.committer or "",
        message=c.message or "",
        metadata=dict(c.metadata or {}),
        creation_date=int(c.creation_date or 0),
    )


# (connect, read) seconds of every lakeFS API request. The SDK has none by default: a request
# whose connection went silent (a partition that drops packets, a frozen lakeFS, a reset that
# never arrived) blocked its job until the job's time limit (30 min) killed the worker;
# `tests/integration/test_outages.py` met it. The read timeout is per socket read, not the
# whole transfer, so large objects are not cut short.
REQUEST_TIMEOUT = (10.0, 120.0)


class LakeFSClient:
    """``pipeline.ports.LakeFS`` over a real lakeFS server."""

    def __init__(
        self,
        url: str,
        access_key_id: str,
        secret_access_key: str,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        config = lakefs_sdk.Configuration(
            host=f"{self.url}/api/v1", username=access_key_id, password=secret_access_key
        )
        self.sdk = _SdkClient(config)
        api = self.sdk._api  # the SDK's ApiClient: every API call goes through its request()
        send = api.request

        def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            return send(*args, _request_timeout=_request_timeout or timeout, **kwargs)

        api.request = request
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._s3: Any = None
        self._s3_lock = threading.Lock()
        self._user: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeFSClient:
        return cls(
            settings.lakefs_url, settings.lakefs_access_key_id, settings.lakefs_secret_access_key
        )

    @property
    def s3(self) -> Any:
        with self._s3_lock:  # built once (slow: botocore loads its models), shared by threads
            return self._s3_client()

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.url,
                region_name="us-east-1",
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._s3

    # ---- identity and repositories ----------------------------------------------------------
    def whoami(self) -> str:
        if self._user is None:
            with _translate("who am I"):
                self._user = str(self.sdk.auth_api.get_current_user().user.id)
        return self._user

    def list_repositories(self) -> list[str]:
        with _translate("list repositories"):
            return [r.id for r in _paged(self.sdk.repositories_api.list_repositories)]

    def create_repository(
        self, repo: str, storage_namespace: str, default_branch: str = "main"
    ) -> None:
        try:
            with _translate(f"create repository {repo}"):
                self.sdk.repositories_api.create_repository(
                    lakefs_sdk.RepositoryCreation(
                        name=repo,
                        storage_namespace=storage_namespace,
                        default_branch=default_branch,
                    )
                )
        except TerminalError as err:
            if "409" not in str(err) and "already exists" not in str(err):
                raise

    # ---- refs -----------------------------------------------------------------------------------
    def list_branches(self, repo: str) -> list[Ref]:
        with _translate(f"list branches of {repo}"):
            return [
                Ref(b.id, b.commit_id) for b in _paged(self.sdk.branches_api.list_branches, repo)
            ]

    def list_tags(self, repo: str) -> list[Ref]:
        with _translate(f"list tags of {repo}"):
            return [Ref(t.id, t.commit_id) for t in _paged(self.sdk.tags_api.list_tags, repo)]

    def branch_head(self, repo: str, branch: str) -> str:
        with _translate(f"branch {repo}/{branch}"):
            return str(self.sdk.branches_api.get_branch(repo, branch).commit_id)

    def resolve(self, repo: str, ref: str) -> str:
        with _translate(f"resolve {repo}/{ref}"):
            return str(self.sdk.commits_api.get_commit(repo, ref).id)

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        with _translate(f"commit {repo}/{commit_id}"):
            return _commit(self.sdk.commits_api.get_commit(repo, commit_id))

    def log(self, repo: str, ref: str, limit: int = 100) -> list[Commit]:
        with _translate(f"log {repo}/{ref}"):
            page = self.sdk.refs_api.log_commits(
                repo, ref, amount=min(limit, PAGE), first_parent=True
            )
            return [_commit(c) for c in page.results][:limit]

    # ---- objects --------------------------------------------------------------------------------
    def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        with _translate(f"list {repo}/{ref}/{prefix}"):
            out = [
                ObjectInfo(o.path, o.checksum, int(o.size_bytes or 0))
                for o in _paged(self.sdk.objects_api.list_objects, repo, ref, prefix=prefix)
                if o.path_type == "object"
            ]
        return sorted(out, key=lambda o: o.path)

    def stat_object(self, repo: str, ref: str, path: str) -> ObjectInfo | None:
        try:
            with _translate(f"stat {repo}/{ref}/{path}"):
                o = self.sdk.objects_api.stat_object(repo, ref, path)
        except NotFound:
            return None
        return ObjectInfo(o.path, o.checksum, int(o.size_bytes or 0))

    def read_object(self, repo: str, ref: str, path: str) -> bytes:
        with _translate(f"read {repo}/{ref}/{path}"):
            return bytes(self.sdk.objects_api.get_object(repo, ref, path))

    def open_object(self, repo: str, ref: str, path: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.s3.get_object(Bucket=repo, Key=f"{ref}/{path}")
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NoSuchBucket"}:
                raise NotFound(f"object {path!r} not found at {repo}/{ref}") from None
            raise _s3_error(f"read {repo}/{ref}/{path}", err) from None
        except BotoCoreError as err:
            raise ServiceUnavailable(f"read {repo}/{ref}/{path}: {err}") from None
        body: BinaryIO = response["Body"]
        return body

    def read_range(self, repo: str, ref: str, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        from botocore.exceptions import BotoCoreError, ClientError

        key, span = f"{ref}/{path}", f"bytes={offset}-{offset + length - 1}"
        try:
            response = self.s3.get_object(Bucket=repo, Key=key, Range=span)
            data: bytes = response["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NoSuchBucket"}:
                raise NotFound(f"object {path!r} not found at {repo}/{ref}") from None
            raise ServiceUnavailable(f"read {repo}/{ref}/{path} ({span}): {err}") from None
        except BotoCoreError as err:
            raise ServiceUnavailable(f"read {repo}/{ref}/{path} ({span}): {err}") from None
        return data

    def upload_object(
        self, repo: str, branch: str, path: str, data: bytes | BinaryIO
    ) -> ObjectInfo:
        if isinstance(data, bytes | bytearray):
            with _translate(f"upload {repo}/{branch}/{path}"):
                o = self.sdk.objects_api.upload_object(repo, branch, path, content=bytes(data))
            return ObjectInfo(o.path, o.checksum, int(o.size_bytes or 0))
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # one single-part PUT, streamed: the same bytes always give the same checksum
            self.s3.put_object(Bucket=repo, Key=f"{branch}/{path}", Body=data)
        except ClientError as err:
            raise _s3_error(f"upload {repo}/{branch}/{path}", err) from None
        except BotoCoreError as err:
            raise ServiceUnavailable(f"upload {repo}/{branch}/{path}: {err}") from None
        info = self.stat_object(repo, branch, path)
        if info is None:
            raise ServiceUnavailable(f"upload {repo}/{branch}/{path}: object missing after upload")
        return info

    def delete_object(self, repo: str, branch: str, path: str) -> None:
        with _translate(f"delete {repo}/{branch}/{path}"):
            self.sdk.objects_api.delete_object(repo, branch, path)

    def copy_object(
        self, repo: str, branch: str, source_ref: str, source_path: str, path: str
    ) -> ObjectInfo:
        with _translate(f"copy {repo}/{source_ref}/{source_path} to {branch}/{path}"):
            o = self.sdk.objects_api.copy_object(
                repo,
                branch,
                path,
                lakefs_sdk.ObjectCopyCreation(src_path=source_path, src_ref=source_ref),
            )
        return ObjectInfo(o.path, o.checksum, int(o.size_bytes or 0))

    # ---- branches, tags, commits, merges ------------------------------------------------------
    def create_branch(self, repo: str, branch: str, source: str) -> str:
        try:
            with _translate(f"create branch {repo}/{branch}"):
                self.sdk.branches_api.create_branch(
                    repo, lakefs_sdk.BranchCreation(name=branch, source=source)
                )
        except TerminalError as err:
            if "409" not in str(err):
                raise
        return self.branch_head(repo, branch)

    def delete_branch(self, repo: str, branch: str) -> None:
        with _translate(f"delete branch {repo}/{branch}"):
            self.sdk.branches_api.delete_branch(repo, branch)

    def create_tag(self, repo: str, tag: str, ref: str) -> str:
        with _translate(f"create tag {repo}/{tag}"):
            return str(
                self.sdk.tags_api.create_tag(
                    repo, lakefs_sdk.TagCreation(id=tag, ref=ref)
                ).commit_id
            )

    def delete_tag(self, repo: str, tag: str) -> None:
        with _translate(f"delete tag {repo}/{tag}"):
            self.sdk.tags_api.delete_tag(repo, tag)

    def commit(
        self,
        repo: str,
        branch: str,
        message: str,
        metadata: Mapping[str, str],
        allow_empty: bool = False,
    ) -> Commit:
        with _translate(f"commit {repo}/{branch}"):
            c = self.sdk.commits_api.commit(
                repo,
                branch,
                lakefs_sdk.CommitCreation(
                    message=message, metadata=dict(metadata), allow_empty=allow_empty
                ),
            )
        return _commit(c)

    def merge(
        self,
        repo: str,
        source_ref: str,
        destination_branch: str,
        message: str,
        metadata: Mapping[str, str],
    ) -> str:
        what = f"merge {repo}/{source_ref} into {destination_branch}"
        try:
            result = self.sdk.refs_api.merge_into_branch(
                repo,
                source_ref,
                destination_branch,
                merge=lakefs_sdk.Merge(message=message, metadata=dict(metadata)),
            )
        except ApiException as err:
            reason = _reason(err)
            lowered = reason.lower()
            if "dirty" in lowered or "uncommitted" in lowered:
                raise RefMoved(f"{what}: destination has uncommitted changes ({reason})") from None
            if err.status == 412 and "hook" not in lowered:
                raise RefMoved(f"{what}: {reason}") from None
            if err.status == 409:
                raise TerminalError(f"{what}: conflict: {reason}") from None
            with _translate(what):
                raise
            raise  # unreachable: _translate always raises
        except (Urllib3Error, OSError) as err:
            raise ServiceUnavailable(f"{what}: lakeFS unreachable: {err}") from None
        return str(result.reference)

    def uncommitted(self, repo: str, branch: str, prefix: str = "") -> list[Change]:
        with _translate(f"diff {repo}/{branch}"):
            pages = _paged(self.sdk.branches_api.diff_branch, repo, branch, prefix=prefix)
            return [Change(d.type, d.path) for d in pages]

    def diff_refs(self, repo: str, left: str, right: str, prefix: str = "") -> list[Change]:
        with _translate(f"diff {repo} {left}..{right}"):
            pages = _paged(self.sdk.refs_api.diff_refs, repo, left, right, prefix=prefix)
            return [Change(d.type, d.path) for d in pages]
