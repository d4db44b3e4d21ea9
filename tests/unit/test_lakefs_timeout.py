"""A lakeFS that accepts connections and never answers does not hang lakehook's requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lakehook.errors import ServiceUnavailable
from pipeline.adapters.lakefs import REQUEST_TIMEOUT, LakeFSClient


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts every connection, reads what is sent, answers nothing (a frozen lakeFS)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_a_request_to_a_silent_lakefs_fails_as_an_outage_after_its_timeout(
    silent_server: str,
) -> None:
    client = LakeFSClient(silent_server, "key", "secret", timeout=(1.0, 0.5))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="lakeFS unreachable"):
        client.list_repositories()
    # urllib3 tries a GET 4 times: well under a minute, not forever
    assert time.monotonic() - started < 30


def test_every_client_has_a_request_timeout_by_default() -> None:
    assert REQUEST_TIMEOUT[0] > 0
    assert REQUEST_TIMEOUT[1] > 0
