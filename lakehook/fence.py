"""The claim a worker holds on its job, checked before every step that writes (contract §8).

A ``Fence`` is anything with ``check()``: it returns when the caller may still write and raises
``LeaseLost`` otherwise. The worker installs its job's lease for the duration of the job
(``holding``); code that writes takes ``current()`` and calls ``check()`` right before each
write (a commit, a merge, a branch deletion, a metastore change, a status). Outside a job
(tests, the CLI) the fence is ``UNFENCED``, which never refuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol


class Fence(Protocol):
    def check(self) -> None:
        """Return if the holder may still write; raise ``LeaseLost`` otherwise."""
        ...


class _Unfenced:
    def check(self) -> None:
        return None

    def __repr__(self) -> str:
        return "UNFENCED"


UNFENCED: Fence = _Unfenced()
_current: ContextVar[Fence] = ContextVar("lakehook_fence", default=UNFENCED)


@contextlib.contextmanager
def holding(fence: Fence) -> Iterator[Fence]:
    """Make ``fence`` the current one in this thread for the duration of the block."""
    token = _current.set(fence)
    try:
        yield fence
    finally:
        _current.reset(token)


def current() -> Fence:
    """The fence of the job this thread works on (``UNFENCED`` outside a job)."""
    return _current.get()
