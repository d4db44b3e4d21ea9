"""A network partition between lakehook and one service of the stack, for outage tests.

``Partition`` relays TCP from a local port to a service (lakeFS, the metastore, Trino,
Marquez). A lakehook server pointed at the relay sees the service exactly as through the
network, until the test calls ``cut()``: the relay stops listening (new connections are
refused, as from a stopped service) and resets every open connection (requests in flight
fail, as when the service dies). ``heal()`` listens again on the same port.

Why not stop the service itself: the stack is shared by the tests that run in parallel, and
the service is only down *for lakehook*; lakeFS's webhooks, Trino's reads of lakeFS and the
tests' own checks keep working. What lakehook meets is the same: refused and reset
connections, for as long as the partition lasts. Stopping and restarting the real components
is `test_zz_stack_restart.py`'s part.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlparse

from tests.ports import free_port

_CHUNK = 256 * 1024


class Partition:
    """A TCP relay from ``127.0.0.1:<port>`` to ``target`` that a test can cut and heal."""

    def __init__(self, target_url: str, default_port: int) -> None:
        parsed = urlparse(target_url)
        self.scheme = parsed.scheme
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or default_port)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = free_port()  # not ephemeral: nothing else takes it while the relay is cut
        self.connections = 0  # accepted since the start: proof that lakehook went through it
        self.heal()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def heal(self) -> None:
        """Listen (again, on the same port once it has one) and relay."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            _reset(sock)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)  # the service itself is down: so is the relay
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _reset(client)
                    _reset(upstream)
                    return
                self._open |= {client, upstream}
                self.connections += 1
            running = [2]  # the two ways of this connection still relaying
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink, running), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, running: list[int]) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # half-close: the other way may still talk
        except OSError:
            _reset(source)  # one side failed: so does the connection, both ways
            _reset(sink)
        with self._lock:
            running[0] -= 1
            done = running[0] == 0  # the other way had ended too: the connection is over
            if done:
                self._open -= {source, sink}
        if done:
            source.close()
            sink.close()


def _reset(sock: socket.socket) -> None:
    """End the connection at once, as a dying peer does.

    ``shutdown`` first: closing a socket that another thread is blocked reading (the relay's
    other direction) would not end the connection until that read returned, and the peer
    would wait on a connection that is neither alive nor closed.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
