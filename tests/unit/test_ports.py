"""The test servers' ports: never from the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.ports import free_port


def _ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_ports_are_outside_the_ephemeral_range_and_distinct() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert not set(ports) & set(_ephemeral_range())


def test_a_port_in_use_is_skipped() -> None:
    taken = free_port()
    with socket.socket() as server:  # someone else now listens on the next candidate
        server.bind(("127.0.0.1", taken + 1))
        server.listen()
        assert free_port() != taken + 1
