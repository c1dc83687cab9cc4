"""Packet loss and partitions made by the kernel, for the fault tests (imported as ``kernelfaults``).

The kernel drops the packets, so TCP itself meets the fault: retransmits, shrinking windows,
connects that get no answer. Each fault is one nftables table of its own that drops TCP packets
to and from some loopback ports, at random with nftables' ``numgen random`` (the counterpart of
iptables' ``statistic --mode random``) for a loss rate, all of them for a partition. Removing
the table removes the fault at once. The kernel here has no ``netem``: latency comes from the
fault proxy (``faultproxy``).

It needs root (``CAP_NET_ADMIN``) and the ``nft`` command (Debian's ``nftables``, which
``.ci/run`` installs); :func:`unavailable` says plainly why a machine cannot, and the tests skip
with that reason (``python tests/kernelfaults.py`` prints it too, as CI does before the tests).

Clean-up: a test removes its tables in ``finally`` (the :func:`kernel_faults` fixture does it
for it, and on SIGTERM too). A run killed outright (SIGKILL) leaves its tables behind; their
names carry the process id (``soupfaults_<pid>_<n>``), so :func:`remove_leftovers`, which the
fixture runs first, removes those of processes that no longer live, and only those (several test
runs may share a machine).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from types import FrameType

import pytest

__all__ = ["KernelFaults", "PacketDrop", "kernel_faults", "remove_leftovers", "unavailable"]

#: Every table this module makes is named PREFIX + "<pid>_<n>".
PREFIX = "soupfaults_"
_TABLE = re.compile(rf"^table inet ({PREFIX}(\d+)_\w+)$", re.MULTILINE)
#: Loss rates are drawn out of this many (0.01 %: fine enough for any rate a test asks for).
_SCALE = 10_000


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["nft", *args] if script is None else ["nft", "-f", "-"]
    return subprocess.run(command, input=script, capture_output=True, text=True, timeout=10, check=False)


@functools.cache
def unavailable() -> str | None:
    """Why kernel faults cannot be made here, in a sentence; ``None`` when they can."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform}): the kernel faults use nftables"
    if os.geteuid() != 0:
        return f"not root (uid {os.geteuid()}): nftables rules need CAP_NET_ADMIN"
    if shutil.which("nft") is None:
        return "the nft command is not installed (Debian: apt-get install nftables)"
    probe = PacketDrop(f"{PREFIX}{os.getpid()}_probe", (9,), 0.01)  # port 9 (discard): unused
    try:
        probe.install()
    except RuntimeError as exc:
        return f"the kernel refused an nftables table: {exc}"
    finally:
        probe.remove()
    if probe.table in _nft("list", "tables").stdout:
        return f"nft cannot delete the table it made ({probe.table})"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Remove the tables of fault-test runs that no longer live (killed before their clean-up).

    Returns:
        The names of the tables removed.
    """
    listed = _nft("list", "tables")
    removed = []
    for table, pid in _TABLE.findall(listed.stdout):
        mine = int(pid) == os.getpid()
        if not mine and not _alive(int(pid)) and _nft("delete", "table", "inet", table).returncode == 0:
            removed.append(table)
    return removed


class PacketDrop:
    """One kernel fault: TCP packets to and from ``ports`` on loopback dropped with probability
    ``percent``/100 (only loopback: nothing from outside the machine is touched).

    Made by :meth:`KernelFaults.drop`; :meth:`remove` ends it (idempotent).
    """

    def __init__(self, table: str, ports: tuple[int, ...], percent: float) -> None:
        self.table = table
        self.ports = ports
        self.percent = percent
        self.removed = False

    def install(self) -> None:
        ports = ", ".join(str(port) for port in self.ports)
        chance = round(self.percent * _SCALE / 100)
        match = "" if chance >= _SCALE else f" numgen random mod {_SCALE} < {chance}"
        script = (
            f"table inet {self.table} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -150; policy accept;\n"
            f'    iifname "lo" tcp dport {{ {ports} }}{match} counter drop\n'
            f'    iifname "lo" tcp sport {{ {ports} }}{match} counter drop\n'
            "  }\n"
            "}\n"
        )
        result = _nft(script=script)
        if result.returncode != 0:
            raise RuntimeError(f"nft refused table {self.table}: {result.stderr.strip()}")

    def dropped_packets(self) -> int:
        """Packets dropped so far (from the rules' counters; 0 once removed)."""
        if self.removed:
            return 0
        listed = _nft("list", "table", "inet", self.table)
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listed.stdout))

    def remove(self) -> None:
        """End the fault (delete its table)."""
        if not self.removed:
            self.removed = True
            _nft("delete", "table", "inet", self.table)


class KernelFaults:
    """The kernel faults of one test; :meth:`remove_all` ends them all (the fixture calls it)."""

    def __init__(self) -> None:
        self.faults: list[PacketDrop] = []

    def drop(self, ports: Iterable[int], percent: float) -> PacketDrop:
        """Drop ``percent`` % of the TCP packets to and from ``ports`` on this machine, from now
        (100: a full partition; nothing goes through, not even a SYN).

        Returns:
            The fault; its ``remove()`` ends it.
        """
        table = f"{PREFIX}{os.getpid()}_{len(self.faults) + 1}"
        fault = PacketDrop(table, tuple(sorted(set(ports))), percent)
        self.faults.append(fault)
        fault.install()
        return fault

    def partition(self, ports: Iterable[int]) -> PacketDrop:
        """Drop every TCP packet to and from ``ports`` (a network partition) until removed."""
        return self.drop(ports, 100.0)

    def remove_all(self) -> None:
        """End every fault of this test."""
        for fault in self.faults:
            fault.remove()


@pytest.fixture
def kernel_faults() -> Iterator[KernelFaults]:
    """Kernel faults for one test, all removed when it ends, however it ends (SIGTERM included);
    the test is skipped, saying why, where the kernel faults cannot be made."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"kernel faults unavailable: {reason}")
    remove_leftovers()
    faults = KernelFaults()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        faults.remove_all()
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield faults
    finally:
        faults.remove_all()
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    # What CI prints before the tests: whether the kernel fault cases will run, and if not why.
    why = unavailable()
    if why is None:
        left = remove_leftovers()
        extra = f" (removed {len(left)} tables left by killed runs: {', '.join(left)})" if left else ""
        print(f"kernel faults: available (nftables, as root){extra}: the kernel fault cases will run")
    else:
        print(f"kernel faults: UNAVAILABLE, the kernel fault cases will be SKIPPED: {why}")
