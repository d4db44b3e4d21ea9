"""Names and locations of lakehook's tables and Hive schemas (contract §3, §5 and §7).

Pure functions only. The one stateful rule, the schema-name collision rule, takes the persisted
mapping (``StatusStore.schema_mapping()``) as an argument so that the same inputs always give
the same name and a name, once made, never changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

BRANCH = "branch"
TAG = "tag"
REF_TYPES = (BRANCH, TAG)

_OUTSIDE_IDENTIFIER = re.compile(r"[^a-z0-9_]")
_SUFFIX_DIGITS = 8

SchemaKey = tuple[str, str, str]  # (repository, ref_type, ref)


def sanitize(name: str) -> str:
    """Lower-case ``name`` and replace every character outside ``[a-z0-9_]`` with ``_``.

    Args:
        name: a dataset, column, repository or ref name as the user wrote it.

    Returns:
        The identifier used in the metastore (the same length as ``name``).
    """
    return _OUTSIDE_IDENTIFIER.sub("_", name.lower())


_MEANINGFUL = re.compile(r"[a-z0-9]")


def is_meaningful(identifier: str) -> bool:
    """Whether a sanitised name says anything: at least one letter or digit (not ``""``, ``_``)."""
    return _MEANINGFUL.search(identifier) is not None


def table_name(dataset: str) -> str:
    """The table name of a dataset (the CSV file's stem)."""
    return sanitize(dataset)


def column_name(source: str) -> str:
    """The table column name of a raw CSV column."""
    return sanitize(source)


def key_column(key: str) -> str:
    """The surrogate key column of key ``key``, e.g. ``patient_sk``."""
    return f"{sanitize(key)}_sk"


def base_schema_name(repo: str, ref: str, ref_type: str = BRANCH) -> str:
    """The schema name before the collision rule: ``<repo>_<branch>`` or ``<repo>_tag_<tag>``.

    Raises:
        ValueError: ``ref_type`` is neither ``branch`` nor ``tag``.
    """
    if ref_type == BRANCH:
        return sanitize(f"{repo}_{ref}")
    if ref_type == TAG:
        return sanitize(f"{repo}_tag_{ref}")
    raise ValueError(f"ref_type must be one of {REF_TYPES}, not {ref_type!r}")


def collision_suffix(repo: str, ref: str, digits: int = _SUFFIX_DIGITS) -> str:
    """First ``digits`` hex digits of sha256(``repo/ref``)."""
    return hashlib.sha256(f"{repo}/{ref}".encode()).hexdigest()[:digits]


def schema_name(
    repo: str, ref: str, mapping: Mapping[SchemaKey, str], ref_type: str = BRANCH
) -> str:
    """The Hive schema of a branch or tag, given every persisted (repo, ref_type, ref) -> schema.

    A persisted name is returned unchanged. Otherwise the base name is used unless another
    (repository, ref) already holds it; then ``_`` and the first 8 hex digits of
    sha256(``repo/ref``) are appended. In the astronomically unlikely case that this is taken
    too, more digits are used (deterministically) until the name is free.

    Args:
        repo: the lakeFS repository.
        ref: the branch or tag name.
        mapping: the persisted names (``StatusStore.schema_mapping()``).
        ref_type: ``branch`` or ``tag``.

    Returns:
        The schema name; the caller persists it with ``StatusStore.save_schema_name``.
    """
    key = (repo, ref_type, ref)
    if key in mapping:
        return mapping[key]
    taken = {name for other, name in mapping.items() if other != key}
    candidate = base_schema_name(repo, ref, ref_type)
    digits = _SUFFIX_DIGITS
    while candidate in taken:
        if digits > 64:
            raise ValueError(f"no free schema name for {repo}/{ref}")
        candidate = f"{base_schema_name(repo, ref, ref_type)}_{collision_suffix(repo, ref, digits)}"
        digits += 8
    return candidate


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` cannot name a location ``s3a://<repo>/<ref>/...`` (None: it can).

    The S3 gateway reads the first path element after the repository as the ref, so a ref
    must be exactly one path element: ``release/1.0`` would be read as branch ``release``.
    lakeFS refuses ``/`` in branch and tag names today; this keeps it so if it ever did not.
    """
    if not ref or ref in (".", "..") or "/" in ref or "\\" in ref:
        return (
            "a ref used in table locations must be one path element (no '/'); the S3 "
            "gateway would read another ref. Rename the branch or tag"
        )
    return None


def table_location(repo: str, ref: str, table: str) -> str:
    """``s3a://<repo>/<ref>/tables/<table>/``: where a ref's table reads its Parquet files.

    Raises:
        ValueError: ``ref`` is not one path element (``ref_problem``).
    """
    problem = ref_problem(ref)
    if problem is not None:
        raise ValueError(f"{ref!r}: {problem}")
    return f"s3a://{repo}/{ref}/tables/{table}/"


def normalize_location(location: str) -> str:
    """A location with exactly one trailing slash and ``s3://``/``s3n://`` read as ``s3a://``."""
    for scheme in ("s3://", "s3n://"):
        if location.startswith(scheme):
            location = "s3a://" + location[len(scheme) :]
    return location.rstrip("/") + "/"
