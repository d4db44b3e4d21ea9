"""lakeFS webhook payloads (contract §8) -> ``Event``; what lakehook does with each.

Pure: a payload in, an ``Event`` or ``InvalidEvent`` out. ``ignored_because`` says why an
event is ignored: lakehook's working branches, and commits whose metadata carries lakehook's
signature (``pipeline.provenance``, the one place that decides "made by lakehook"). A marker
without a valid signature is a person's commit like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lakehook.errors import InvalidEvent
from pipeline.provenance import Provenance, is_working_branch_name

POST_CREATE_BRANCH = "post-create-branch"
POST_COMMIT = "post-commit"
POST_MERGE = "post-merge"
PRE_MERGE = "pre-merge"
POST_DELETE_BRANCH = "post-delete-branch"
POST_CREATE_TAG = "post-create-tag"
POST_DELETE_TAG = "post-delete-tag"

# event -> job kind; pre-merge is answered synchronously by the gate
JOB_KINDS = {
    POST_CREATE_BRANCH: "create_branch",
    POST_COMMIT: "sync_branch",
    POST_MERGE: "sync_branch",
    POST_DELETE_BRANCH: "delete_branch",
    POST_CREATE_TAG: "sync_tag",
    POST_DELETE_TAG: "delete_tag",
}
HANDLED = (*JOB_KINDS, PRE_MERGE)
TAG_EVENTS = (POST_CREATE_TAG, POST_DELETE_TAG)

# what lakeFS itself accepts as names (its ValidateRepositoryID / ValidateBranchID); a tag is one
# path element; any other text field is bounded and free of control characters
_NAMES = {
    "repository_id": (re.compile(r"[a-z0-9][a-z0-9-]{2,62}"), "a lakeFS repository id"),
    "branch_id": (re.compile(r"[A-Za-z0-9_][-A-Za-z0-9_]{0,255}"), "a lakeFS branch name"),
    "tag_id": (re.compile(r"[^/\s\x00-\x1f\x7f]{1,256}"), "a lakeFS tag name"),
}
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{0,1024}")
MAX_METADATA = 256  # keys of commit_metadata


@dataclass(frozen=True)
class Event:
    event_type: str
    repository: str
    branch: str = ""
    tag: str = ""
    source_ref: str = ""
    commit_id: str = ""
    merge_source: str = ""
    committer: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.tag if self.event_type in TAG_EVENTS else self.branch

    @property
    def ref_type(self) -> str:
        return "tag" if self.event_type in TAG_EVENTS else "branch"


def _text(payload: Mapping[str, Any], name: str, required: bool = False) -> str:
    value = payload.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r} must be a string, not {type(value).__name__}")
    if required and not value:
        raise InvalidEvent(f"field {name!r} is required for this event")
    if value:
        pattern, what = _NAMES.get(
            name, (_TEXT, "at most 1024 characters without control characters")
        )
        if not pattern.fullmatch(value):
            shown = repr(value if len(value) <= 80 else value[:77] + "...")
            raise InvalidEvent(f"field {name!r} is not {what}: {shown}")
    return value


def check_name(field: str, value: str) -> str:
    """``value`` if lakeFS would accept it as ``field`` (``repository_id``, ``branch_id`` or
    ``tag_id``); ``InvalidEvent`` saying why otherwise. For names that come in a URL path."""
    return _text({field: value}, field, required=True)


def parse_event(payload: Any) -> Event:
    """Validate a decoded webhook body.

    Raises:
        InvalidEvent: not an object, an unknown event type or a missing field; says which.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent("the body must be a JSON object")
    event_type = _text(payload, "event_type", required=True)
    if event_type not in HANDLED:
        raise InvalidEvent(
            f"event_type {event_type!r} is not handled; lakehook handles {', '.join(HANDLED)}"
        )
    repository = _text(payload, "repository_id", required=True)
    tag_event = event_type in TAG_EVENTS
    metadata = payload.get("commit_metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidEvent("field 'commit_metadata' must map strings to strings")
    if len(metadata) > MAX_METADATA:
        raise InvalidEvent(f"field 'commit_metadata' has more than {MAX_METADATA} keys")
    return Event(
        event_type=event_type,
        repository=repository,
        branch=_text(payload, "branch_id", required=not tag_event),
        tag=_text(payload, "tag_id", required=tag_event),
        source_ref=_text(payload, "source_ref"),
        commit_id=_text(payload, "commit_id"),
        merge_source=_text(payload, "merge_source"),
        committer=_text(payload, "committer"),
        metadata=metadata,
    )


def ignored_because(event: Event, provenance: Provenance) -> str | None:
    """Why lakehook ignores this event (its working branches, its signed commits), or None.

    A webhook carries no parents, so a commit is recognised here by its signed metadata alone
    (``Provenance.metadata_signed``); metadata copied onto another commit only delays that
    commit until the reconciler compares heads, where the full rule applies.
    """
    if event.event_type == PRE_MERGE:
        return None
    if event.ref_type == "branch" and is_working_branch_name(event.branch):
        return f"{event.branch} is in lakehook's working-branch namespace (_lakehook-*)"
    if event.event_type in (POST_COMMIT, POST_MERGE) and provenance.metadata_signed(
        event.repository, event.metadata, event.committer
    ):
        return "a commit made by lakehook (signed)"
    return None
