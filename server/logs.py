"""Structured JSON logs: one object per line with repository, ref, commit and job id."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

_FIELDS = (
    "repository",
    "ref",
    "branch",
    "commit",
    "job_id",
    "kind",
    "event",
    "seconds",
    "status",
    "steps",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str, log_dir: Path | None = None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_dir / "server.jsonl", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        # the level is the handler's too: CherryPy sets its access loggers to INFO themselves,
        # so with LAKEHOOK_LOG_LEVEL=WARNING the intake still formatted and wrote a JSON line
        # per request (14 % of its busy time while a worker processed 1 GB; issue 16)
        handler.setLevel(level.upper())
        root.addHandler(handler)
