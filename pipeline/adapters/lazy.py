"""An adapter built on first use.

Importing ``lakefs_sdk`` costs about 2 CPU seconds on the reference machine (pydantic builds a
model for every API method at import), the Thrift and Trino clients about 0.5 each. The intake
process needs them only for what it is rarely asked (an explicit reconcile, a gate decided in
process): built on first use, they cost nothing to an intake that answers webhooks, health
checks and statuses, which then starts in less than half the CPU time. Every server start
paid it before, and restarts are when the intake must be back fastest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Lazy:
    """Stands in for the object ``build`` returns, calling it once, on first attribute use."""

    def __init__(self, build: Callable[[], Any], name: str) -> None:
        self._build = build
        self._name = name
        self._real: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._real is not None

    def _get(self) -> Any:
        real = self._real
        if real is None:
            with self._lock:
                if self._real is None:
                    self._real = self._build()
                real = self._real
        return real

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._get(), attribute)

    def __repr__(self) -> str:
        return f"Lazy({self._name}, built={self.built})"


def warm(*adapters: Any) -> None:
    """Build the lazy ones among ``adapters`` now (a background thread's job, so that the
    first request that needs one does not pay for it)."""
    for adapter in adapters:
        if isinstance(adapter, Lazy):
            adapter._get()
