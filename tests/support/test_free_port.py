"""The test fleets' port allocator: two hosts of one fleet once got the same port (CI, stop 20),
so one app could not bind and its health check was answered by the other host's app."""

from __future__ import annotations

import socket
from pathlib import Path

from reconciler.testing import fleet
from reconciler.testing.fleet import free_port


def test_ports_are_handed_out_once_below_the_ephemeral_range_and_bindable():
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low = int(ranges[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_skipped():
    upcoming = fleet._next_port[0]  # the port the allocator would try next
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", upcoming))
        listener.listen()
        port = free_port()
    assert port != upcoming
