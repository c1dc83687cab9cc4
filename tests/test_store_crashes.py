"""Message stores under crashes and at scale: ``kill -9`` of a writer process at a random moment,
a full disk, a million (and, marked slow, ten million) messages; and what the store imports.
"""

from __future__ import annotations

import ast
import errno
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasdaq_protocols.soup import store as store_module
from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import FileStore
from storeutil import decode, payload_for

# --------------------------------------------------------------------------- crashes

KILL_WRITER = """
import sys
from nasdaq_protocols.soup.store import FileStore

{payload_source}

store = FileStore(sys.argv[1], session="KILL", durability="flush")
sequence = store.last_sequence
while True:
    if sequence % 10 == 9:
        sequence = store.append_many([payload_for(n) for n in range(sequence + 1, sequence + 6)])
    else:
        sequence += 1
        assert store.append(payload_for(sequence)) == sequence
    print(sequence, flush=True)
"""


@pytest.mark.parametrize("round_number", range(5))
def test_kill_9_loses_nothing_append_returned(tmp_path: Path, round_number: int) -> None:
    path = tmp_path / "journal"
    script = KILL_WRITER.format(payload_source=inspect.getsource(payload_for))
    chooser = random.Random(round_number)
    printed: list[int] = []
    for run in range(2):  # the second run appends to what the first left, then dies too
        with subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            try:
                for _ in range(chooser.randrange(100, 3000)):
                    line = process.stdout.readline()
                    if not line.endswith(b"\n"):
                        break
                    printed.append(int(line))
                time.sleep(chooser.random() * 0.05)  # a random moment of the real process's life
            finally:
                process.send_signal(signal.SIGKILL)
            # Not communicate(): it reads the pipe's fd and would skip what readline() buffered.
            rest = process.stdout.read()
            errors = process.stderr.read()
        assert process.returncode == -signal.SIGKILL, errors.decode()
        printed += [int(line) for line in rest.split(b"\n")[:-1]]  # the last one is unfinished
        assert printed, f"run {run}: the writer printed nothing"
        with FileStore(path) as store:
            assert store.session == "KILL"
            assert store.last_sequence >= printed[-1]
            packets, count = store.read_packets(1, 1 << 31)
            assert count == store.last_sequence
            assert decode(packets) == [payload_for(n) for n in range(1, count + 1)]
            print(
                f"run {run}: {count} messages, {len(printed)} acknowledged, torn tail {store.recovered_bytes}"
            )


DISK_FULL = """
import errno, json, os, resource, signal, sys
from nasdaq_protocols.soup.store import FileStore, StoreError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
report = {}
store = FileStore(path, session="FULL")
store.append_many([b"%05d" % n * 20 for n in range(1, 101)])  # 100 records of 103 bytes
size = os.path.getsize(path)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 250, hard))  # room for 2 more, and 44 bytes

appended = 0
try:
    while True:
        store.append(b"%05d" % (101 + appended) * 20)
        appended += 1
except StoreError as exc:
    report["single"] = [appended, exc.errno, os.path.getsize(path) - size]
try:
    store.append_many([b"%05d" % n * 20 for n in range(1, 4)])
except StoreError as exc:
    report["batch"] = [exc.errno, os.path.getsize(path) - size]
report["readable"] = [store.get(n) == b"%05d" % n * 20 for n in range(1, 103)].count(True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again: the store goes on
report["after"] = store.append(b"after the full disk")
store.close()
print(json.dumps(report))
"""


def test_a_full_disk_fails_the_append_and_keeps_everything_before(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["single"] == [2, errno.EFBIG, 206], "the third append failed and left nothing"
    assert report["batch"] == [errno.EFBIG, 206], "the batch failed and left nothing"
    assert report["readable"] == 102
    assert report["after"] == 103
    with FileStore(path) as store:
        assert store.recovered_bytes == 0
        assert store.last_sequence == 103
        assert [store.get(n) for n in range(1, 103)] == [b"%05d" % n * 20 for n in range(1, 103)]
        assert store.get(103) == b"after the full disk"


# --------------------------------------------------------------------------- scale


def big_payload(sequence: int) -> bytes:
    return b"%010d" % sequence + b"." * (sequence % 40)


def test_one_million_messages_reopen_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    count = 1_000_000
    started = time.perf_counter()
    with FileStore(path, session="BIG") as store:
        for first in range(1, count + 1, 50_000):
            store.append_many([big_payload(n) for n in range(first, first + 50_000)])
    built = time.perf_counter() - started
    expected = frame_sequenced([big_payload(n) for n in range(1, count + 1)])
    timings = {"build": built}
    for label in ("with index file", "without index file"):
        if label == "without index file":
            os.unlink(f"{path}.idx")
        started = time.perf_counter()
        with FileStore(path, readonly=True) as store:
            timings[f"reopen {label}"] = time.perf_counter() - started
            assert store.last_sequence == count
            assert store.indexed_from_file == (count if label == "with index file" else 0)
            started = time.perf_counter()
            chunks = []
            start = 1
            while start <= count:
                packets, got = store.read_packets(start)
                chunks.append(packets)
                start += got
            timings[f"replay {label}"] = time.perf_counter() - started
            assert b"".join(chunks) == expected
            assert decode(chunks[-1])[-1] == big_payload(count)
            assert store.get(777_777) == big_payload(777_777)
    print(", ".join(f"{name}: {seconds:.3f} s" for name, seconds in timings.items()))


TEN_MILLION_PROBE = """
import json, sys, time
from nasdaq_protocols.soup.store import FileStore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024

started = time.perf_counter()
store = FileStore(sys.argv[1], readonly=True)
reopen = time.perf_counter() - started
started = time.perf_counter()
start = 1
while True:
    packets, count = store.read_packets(start)
    if not count:
        break
    start += count
replay = time.perf_counter() - started
print(json.dumps({"reopen_s": reopen, "replay_s": replay, "messages": start - 1,
                  "from_index": store.indexed_from_file, "rss_mb": status("VmRSS"),
                  "peak_rss_mb": status("VmHWM")}))
"""


@pytest.mark.slow
def test_ten_million_messages_reopen_fast_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    count = 10_000_000
    builder = "\n".join(
        [
            "from nasdaq_protocols.soup.store import FileStore",
            inspect.getsource(big_payload),
            f"with FileStore({str(path)!r}, session='BIG') as store:",
            f"    for first in range(1, {count} + 1, 50_000):",
            "        store.append_many([big_payload(n) for n in range(first, first + 50_000)])",
        ]
    )
    subprocess.run([sys.executable, "-c", builder], check=True, timeout=600)
    results = {}
    for label in ("with index file", "without index file"):
        if label == "without index file":
            os.unlink(f"{path}.idx")
        probe = subprocess.run(
            [sys.executable, "-c", TEN_MILLION_PROBE, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        results[label] = report = json.loads(probe.stdout)
        assert report["messages"] == count
        assert report["peak_rss_mb"] < 200
        assert report["reopen_s"] < (5 if label == "with index file" else 60)
    print(json.dumps(results, indent=1))


def test_the_store_imports_only_the_wire_format_and_the_standard_library() -> None:
    # The soup package's __init__ pulls in the asyncio sessions; what matters is the store
    # modules' own imports: each other, the wire format, the standard library.
    package = Path(inspect.getfile(store_module)).parent
    modules = {path.stem for path in package.glob("*.py")}
    siblings, outside, absolute = set(), set(), set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                siblings.add(node.module)
            elif isinstance(node, ast.ImportFrom) and node.level:
                outside.add((node.level, node.module))
            elif isinstance(node, ast.ImportFrom):
                absolute.add(str(node.module).split(".")[0])
            elif isinstance(node, ast.Import):
                absolute.update(alias.name.split(".")[0] for alias in node.names)
    assert siblings <= modules | {None}
    assert outside <= {(2, "core"), (2, "errors"), (2, "framing")}
    assert absolute <= set(sys.stdlib_module_names) - {"asyncio"}
