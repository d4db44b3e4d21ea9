"""The one error tree of lakehook.

::

    LakehookError                     (every error we raise)
    ├── TransientError                (retry with backoff: a service is down, a race lost)
    │   ├── ServiceUnavailable        (lakeFS, Trino, the metastore or Marquez did not answer)
    │   ├── RefMoved                  (a branch head moved under us; re-plan and retry)
    │   └── LeaseLost                 (this worker no longer holds its job: stop, write nothing)
    └── TerminalError                 (retrying changes nothing: record it and stop)
        ├── ConfigError               (settings or lakehook.yaml are wrong; says how to fix)
        ├── InputError                (a user's file is bad: names file, line, column, hint)
        ├── InvalidEvent              (a webhook payload we cannot accept; HTTP 400)
        ├── NotFound                  (a repository, ref or object does not exist)
        ├── ServiceMisconfigured      (a service refuses us: 403/400 from credentials, endpoints)
        └── KeyCollision              (two natural keys hash to one surrogate key)

Adapters translate vendor exceptions into this tree at the edge; ``lakehook.failures``
classifies any exception as input, service or internal, so callers never look at HTTP codes.
"""

from __future__ import annotations


class LakehookError(Exception):
    """Base of every lakehook error."""

    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientError(LakehookError):
    """Retrying later may succeed."""

    transient = True


class ServiceUnavailable(TransientError):
    """A service we depend on did not answer, or answered 5xx."""


class RefMoved(TransientError):
    """A branch head moved while we worked on it."""


class LeaseLost(TransientError):
    """The job's claim expired or was taken over: stop at once, write nothing, mark nothing.

    Another worker holds (or will hold) the job; whatever this one has not written yet is
    written by that one.
    """


class TerminalError(LakehookError):
    """Retrying changes nothing: the cause must be fixed first."""


class ConfigError(TerminalError):
    """A setting or the study configuration is wrong."""


class NotFound(TerminalError):
    """A repository, ref or object does not exist."""


class InvalidEvent(TerminalError):
    """A webhook payload that cannot be accepted."""


class ServiceMisconfigured(TerminalError):
    """A service answered, but refuses lakehook's requests (wrong credentials, endpoint, bucket).

    Not transient (an immediate retry gets the same answer) and not the user's input: a
    service failure (``lakehook.failures``), retried with the long backoff until it is fixed.
    """


class KeyCollision(TerminalError):
    """Two different natural keys produced one surrogate key."""


class InputError(TerminalError):
    """A user's input file is bad.

    The message names the file and, where known, the line and column, and says what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        column: str | None = None,
        hint: str = "",
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.hint = hint
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        text = f"{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)
        self.reason = message

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.reason,
            "hint": self.hint,
        }
