"""Ports for the servers and relays a test starts.

A port the kernel picks (``bind(("127.0.0.1", 0))``, then closed) is in its ephemeral range, so
between the test choosing it and its server binding it, any outgoing connection on the machine
can take it as its source port; in a full parallel run that happened (``portend.Timeout: Port
35683 not free``). These ports are below the ephemeral range (32768-60999 on Linux by default),
each pytest-xdist worker draws from its own thousand, and a port is only handed out when it can
be bound right now.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST_PORT = 20_000
PORTS_PER_WORKER = 1_000
WORKER_SLICES = 12  # 20000-31999: below the ephemeral range

_drawn = itertools.count()


def _first_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3" in a parallel run
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return FIRST_PORT + (index % WORKER_SLICES) * PORTS_PER_WORKER


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on, not handed out before by this process."""
    first = _first_port()
    for _ in range(PORTS_PER_WORKER):
        port = first + next(_drawn) % PORTS_PER_WORKER
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")
