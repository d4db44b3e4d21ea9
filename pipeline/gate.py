"""The pre-merge gate (contract §8): may this merge go into that branch?

``decide`` is pure: the server reads the recorded status and the manifests of both refs, and
this module answers. It refuses a merge into a protected branch when the source is not synced
at its head, failed, or carries drift outside ``gate.allow``. Drift is measured against the
DESTINATION's manifests (what the merge would change there), not against the source's history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from pipeline.drift import NONE, KeyConfig, classify, describe
from pipeline.model import GateDecision, RefStatus, TableManifest

DEFAULT_PROTECTED = ("main",)
DEFAULT_ALLOW = ("NONE", "ADDITIVE", "WIDENING", "COSMETIC")


def is_protected(branch: str, protected: Sequence[str]) -> bool:
    """Whether ``branch`` matches one of the ``protected`` names (shell-style globs allowed)."""
    return any(fnmatchcase(branch, pattern) for pattern in protected)


def decide(
    *,
    destination_branch: str,
    protected: Sequence[str],
    allow: Sequence[str],
    source_status: RefStatus | None,
    source_head: str,
    source_manifests: Mapping[str, TableManifest],
    destination_manifests: Mapping[str, TableManifest],
    source_keys: KeyConfig,
    destination_keys: KeyConfig,
    is_lakehook_merge: bool,
) -> GateDecision:
    """Decide a pre-merge event.

    Args:
        destination_branch: the branch merged into.
        protected: ``gate.protected`` of the destination's config.
        allow: ``gate.allow``, the drift classes allowed into protected branches.
        source_status: the recorded status of the source ref (``None``: never processed).
        source_head: the commit being merged (the source's head).
        source_manifests: table -> manifest at the source head.
        destination_manifests: table -> manifest at the destination head.
        source_keys: the key config at the source head.
        destination_keys: the key config at the destination head.
        is_lakehook_merge: marker and committer both say lakehook made this merge.

    Returns:
        ``allowed`` and, when refused, one reason per problem naming table, columns and what
        to do.
    """
    if is_lakehook_merge:
        return GateDecision(True, ("lakehook's own merge",))
    if not is_protected(destination_branch, protected):
        return GateDecision(True, (f"{destination_branch} is not protected",))

    reasons = _status_reasons(source_status, source_head)
    if reasons:
        return GateDecision(False, tuple(reasons))

    allowed = {c.upper() for c in allow} | {NONE}
    for table in sorted(set(source_manifests) | set(destination_manifests)):
        drift = classify(
            destination_manifests.get(table),
            source_manifests.get(table),
            old_keys=destination_keys,
            new_keys=source_keys,
        )
        offending = [c for c in drift.changes if c.drift_class not in allowed]
        if not offending:
            continue
        columns = sorted({c.column for c in offending if c.column})
        what = "; ".join(describe(c) for c in offending)
        reasons.append(
            f"table {table}: {drift.drift_class} drift into protected branch "
            f"{destination_branch}"
            + (f" (columns: {', '.join(columns)})" if columns else "")
            + f": {what}. Allowed: {', '.join(sorted(allowed))}. "
            "Fix the data or contents on the source branch and commit, "
            "or add the class to gate.allow in lakehook.yaml on the destination."
        )
    if reasons:
        return GateDecision(False, tuple(reasons))
    return GateDecision(True)


def _status_reasons(status: RefStatus | None, head: str) -> list[str]:
    if status is None:
        return [
            f"the source is still processing: it has not been processed yet (head "
            f"{head[:12]}); wait for lakehook to finish or run `lakehook reconcile`, then merge "
            "again"
        ]
    where = f"{status.ref_type} {status.ref}"
    if status.head_commit != head:
        return [
            f"{where} is still processing: lakehook last finished "
            f"{status.head_commit[:12] or 'nothing'} but the head is {head[:12]}; wait for state "
            f"synced (`lakehook status --repo {status.repository} --{status.ref_type} "
            f"{status.ref}`) and merge again"
        ]
    if status.state == "failed":
        errors = "; ".join(
            str(e.get("message", e)) + (f" [{e['table']}]" if e.get("table") else "")
            for e in status.errors
        )
        return [
            f"{where} failed: {errors or status.reason or 'see lakehook status'}; fix the "
            "input on the source branch and commit before merging"
        ]
    if status.state in ("pending", "processing") and status.last_synced_commit == head:
        return []  # a re-check on a head lakehook already synced: its outputs are there
    if status.state != "synced":
        still = "still processing: " if status.state in ("pending", "processing") else ""
        return [
            f"{where} is {still}{status.state}"
            + (f" ({status.reason})" if status.reason else "")
            + "; wait for state synced and merge again"
        ]
    return []
