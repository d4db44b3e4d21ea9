"""The intake's HTTP server: CherryPy's, except that a connection takes a thread only once it
has sent something.

cheroot hands every newly accepted connection to a worker thread at once, which then blocks
reading its first request until ``server.socket_timeout``; only a kept-alive connection waits
in the selector for its next request. So connections that were opened and sent nothing held
every thread: 3,000 of them from one script (measured 2026-12-02, 64 threads, 5 s timeout)
kept ``/healthz``, the webhooks and the pre-merges from any answer for over 90 s. Here a new
connection waits in the selector like a kept-alive one: no thread until it is readable, and
closed once idle for the timeout (cheroot's own expiry of idle connections). A client that
sends part of a request and pauses still holds a thread until the timeout (docs/security.md,
slow clients).

CherryPy builds this server itself from ``server.instance`` (its dotted name, in
``server.app.mount``).
"""

from __future__ import annotations

from typing import Any

from cheroot.connections import ConnectionManager
from cherrypy._cpwsgi_server import CPWSGIServer


class ReadableFirst(ConnectionManager):
    """cheroot's connection manager, keeping a new connection in the selector until it has
    something to read (what it does for every connection after its first request)."""

    def _from_server_socket(self, server_socket: Any) -> Any:
        # cheroot's stubs leave its private accept step out
        conn = super()._from_server_socket(server_socket)  # type: ignore[misc]
        if conn is not None:
            self.put(conn)  # selector; a thread once readable, closed when idle too long
        return None  # nothing for the caller to hand to a thread now


class IntakeServer(CPWSGIServer):  # type: ignore[misc]  # cherrypy is untyped
    """``cherrypy._cpwsgi_server.CPWSGIServer`` with :class:`ReadableFirst` connections."""

    def prepare(self) -> None:
        super().prepare()
        if type(self._connections) is ConnectionManager:
            self._connections.__class__ = ReadableFirst
