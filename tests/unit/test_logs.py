"""The server's JSON logs honour ``LAKEHOOK_LOG_LEVEL`` whatever a library sets its logger to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from server.logs import configure

if TYPE_CHECKING:
    import pytest


def test_a_library_logger_set_to_info_is_silent_at_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        configure("WARNING", tmp_path)
        access = logging.getLogger("cherrypy.access.test")  # CherryPy sets INFO on its own
        access.setLevel(logging.INFO)
        access.info('127.0.0.1 - - "POST /webhooks/lakefs HTTP/1.1" 202')
        logging.getLogger("lakehook.test").warning("a warning")
        for handler in root.handlers:
            handler.flush()
        lines = (tmp_path / "server.jsonl").read_text().splitlines()
        assert len(lines) == 1, lines
        assert "a warning" in lines[0]
        assert "POST /webhooks" not in capsys.readouterr().err
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
