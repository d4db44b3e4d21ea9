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

    def __getattr__(self, attribute: str) -> Any:
        real = self._real
        if real is None:
            with self._lock:
                if self._real is None:
                    self._real = self._build()
                real = self._real
        return getattr(real, attribute)

    def __repr__(self) -> str:
        return f"Lazy({self._name}, built={self.built})"
