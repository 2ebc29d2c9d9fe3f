"""Two "hosts" on one machine for tests: two network namespaces joined by a veth pair, each end with an address
(10.231.0.1/24, 10.231.0.2/24) that exists only inside its namespace, loopback up in both. A process started with
`Host.command` sees only its namespace's network: its own address, the peer's across the veth, and its own
loopback; it shares the file system with the other host (as nodes of a cluster share one).

Names carry the test process's id and a random tag, so concurrent runs never meet; `two_hosts` removes both
namespaces (and with them the veth pair) on the way out, whatever happened inside.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SUBNET = "10.231.0"  # a private /24 that is made, used and removed inside the namespaces only


class HostsUnavailable(Exception):
    """The namespaces cannot be made here (not root, no ``ip``, no namespace support); the message says why."""


@dataclass(frozen=True)
class Host:
    netns: str  # the network namespace's name
    ifname: str  # the veth end inside it (GLOO_SOCKET_IFNAME)
    addr: str  # its address on that veth

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace (the environment passes through ``ip netns exec``)."""
        return ["ip", "netns", "exec", self.netns, *argv]


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they may be (the attempt itself can still fail)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2) to make network namespaces"
    return None


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise HostsUnavailable(f"'ip {' '.join(args)}' failed: {done.stderr.strip()}")


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Make the two hosts, yield them, remove them. Raises `HostsUnavailable` before yielding when they cannot be
    made (a test skips on it); anything raised inside is the test's own."""
    reason = unavailable_reason()
    if reason:
        raise HostsUnavailable(reason)
    tag = f"bt{os.getpid() % 100000}{secrets.token_hex(2)}"  # <= 11 characters: interface names allow 15
    hosts = tuple(Host(f"{tag}h{i}", f"{tag}v{i}", f"{SUBNET}.{i + 1}") for i in range(2))
    made: list[str] = []
    try:
        for h in hosts:
            _must("netns", "add", h.netns)
            made.append(h.netns)
        _must("link", "add", hosts[0].ifname, "type", "veth", "peer", "name", hosts[1].ifname)
        for h in hosts:
            _must("link", "set", h.ifname, "netns", h.netns)
            _must("-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", h.ifname)
            _must("-n", h.netns, "link", "set", h.ifname, "up")
            _must("-n", h.netns, "link", "set", "lo", "up")
    except BaseException:
        _remove(hosts, made)
        raise
    try:
        yield hosts
    finally:
        _remove(hosts, made)


def _remove(hosts: tuple[Host, ...], made: list[str]) -> None:
    """Delete the namespaces made (a veth end inside one goes with it, and takes its peer along), and the veth
    pair itself if it was made but never moved out of this namespace."""
    for name in made:
        _ip("netns", "del", name)
    if _ip("link", "show", hosts[0].ifname).returncode == 0:
        _ip("link", "del", hosts[0].ifname)
