"""One classification of failures, used by the worker, the reconciler and the status.

=========  ==========================================  =======================================
kind       what                                        what lakehook does
=========  ==========================================  =======================================
input      the user's data or config is wrong          final for that head: recorded as
           (``InputError``, ``ConfigError``,            ``failed`` with the reason; retried only
           ``KeyCollision``, ``NotFound``, a merge      when the branch gets a new head (new
           conflict: any other ``TerminalError``)       inputs or config)
service    a service is down, slow or refuses us        retried with exponential backoff and
           (``TransientError``: outages, 5xx, lost      jitter until it succeeds, never given
           races; ``ServiceMisconfigured``: 403/400     up; the status stays ``pending`` with
           from credentials or endpoints), or the       the attempt count and the next try
           server itself ran out of disk space or
           file handles
internal   lakehook's own bug (any other exception)    final for that head, reported as
                                                       "internal error, please report it"; the
                                                       traceback goes to the log only
=========  ==========================================  =======================================

``LeaseLost`` is none of these: the job was handed to another worker and this one stops without
writing (``server.worker``).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from tenacity import RetryCallState, wait_random_exponential

from lakehook.errors import (
    LakehookError,
    ServiceMisconfigured,
    TerminalError,
    TransientError,
)

INPUT, SERVICE, INTERNAL = "input", "service", "internal"
KINDS = (INPUT, SERVICE, INTERNAL)

BACKOFF_INITIAL = 1.0  # seconds before the second try of a service failure
BACKOFF_MAX = 300.0  # the longest wait between two tries


# The server's own resources ran out: nothing is wrong with the data or with lakehook, and the
# same job succeeds once an operator frees them. Python's and pyarrow's OSErrors carry the
# errno (pyarrow writing to /dev/full: OSError 28, "... Detail: [errno 28] No space left on
# device"); one made from such a text alone is read from the text.
_EXHAUSTED = {
    errno.ENOSPC: "the server's disk is full",
    errno.EDQUOT: "the server's disk quota is exceeded",
    errno.EMFILE: "the server has too many open files",
    errno.ENFILE: "the server has too many open files",
}
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def _exhausted(err: BaseException) -> str | None:
    """What ran out, when ``err`` says the server's own disk or file handles did."""
    if not isinstance(err, OSError):
        return None
    code = err.errno
    if code is None and (found := _ERRNO_IN_TEXT.search(str(err))):
        code = int(found.group(1))
    return _EXHAUSTED.get(code) if code is not None else None


@dataclass(frozen=True)
class Failure:
    kind: str  # input | service | internal
    message: str  # one line for the status; never a traceback
    retry_in_place: bool = False  # a quick retry inside the job may already succeed

    @property
    def final(self) -> bool:
        """Not retried until the ref's head changes."""
        return self.kind != SERVICE

    def as_error(self, **extra: Any) -> dict[str, Any]:
        """The entry of the status's ``errors`` list."""
        return {"stage": "job", "kind": self.kind, "message": self.message, **extra}


def classify(err: BaseException) -> Failure:
    """Which kind of failure ``err`` is, and the message the status shows."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, TransientError):
        return Failure(SERVICE, text, retry_in_place=True)
    if isinstance(err, ServiceMisconfigured):
        return Failure(SERVICE, text)
    if isinstance(err, TerminalError | LakehookError):
        return Failure(INPUT, text)
    if (what := _exhausted(err)) is not None:
        return Failure(SERVICE, f"{what} ({text}); retried with backoff once it is freed")
    return Failure(
        INTERNAL,
        f"internal error in lakehook ({type(err).__name__}), please report it with the "
        "server log; the traceback is logged",
    )


def backoff(attempt: int, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> float:
    """Seconds before try ``attempt + 1`` of a service failure (``attempt`` >= 1 tries made):
    tenacity's exponential backoff with random jitter, capped at ``maximum``."""
    wait = wait_random_exponential(multiplier=initial, max=maximum)
    state = cast("RetryCallState", SimpleNamespace(attempt_number=max(attempt, 1)))
    return float(wait(state))


def retried_by_reconciler(error: dict[str, Any]) -> bool:
    """Whether a recorded error of a ``failed`` ref is worth another sweep at the same head.

    Input and internal failures are final until the head changes; a per-table metastore or
    verification failure with no kind recorded (older statuses) is retried, as before.
    """
    kind = error.get("kind")
    if kind is not None:
        return bool(kind == SERVICE)
    return error.get("stage") in ("metastore", "verify")
