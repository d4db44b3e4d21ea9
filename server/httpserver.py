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

import errno
import logging
import resource
import time
from typing import Any

from cheroot.connections import ConnectionManager
from cherrypy._cpwsgi_server import CPWSGIServer

log = logging.getLogger("lakehook.server")


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (as Go programs do at
    start, lakeFS among them); returns the new soft limit. Each connection is a descriptor,
    and services often start with a soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


class ReadableFirst(ConnectionManager):
    """cheroot's connection manager, keeping a new connection in the selector until it has
    something to read (what it does for every connection after its first request), and
    making room when the process runs out of file descriptors."""

    def _from_server_socket(self, server_socket: Any) -> Any:
        try:
            # cheroot's stubs leave its private accept step out
            conn = super()._from_server_socket(server_socket)  # type: ignore[misc]
        except OSError as err:
            if err.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # Out of descriptors: cheroot raised out of its loop before expiring idle
            # connections, so the next accept failed the same way, for as long as a client
            # kept its connections open (measured: no answer for 90 s with 1,024 descriptors
            # and 1,120 silent connections). Close every connection idle in the selector;
            # clients that were only keeping a connection alive open a new one.
            self._expire(threshold=time.time() + 1)  # type: ignore[attr-defined]  # no stub
            log.warning("out of file descriptors: closed the idle connections (%s)", err)
            return None
        if conn is not None:
            self.put(conn)  # selector; a thread once readable, closed when idle too long
        return None  # nothing for the caller to hand to a thread now


class IntakeServer(CPWSGIServer):  # type: ignore[misc]  # cherrypy is untyped
    """``cherrypy._cpwsgi_server.CPWSGIServer`` with :class:`ReadableFirst` connections."""

    def prepare(self) -> None:
        super().prepare()
        if type(self._connections) is ConnectionManager:
            self._connections.__class__ = ReadableFirst
