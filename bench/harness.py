"""Worker processes for the benchmark controller: start them, read their JSON lines, stop them.

A worker (see ``bench/workers/__init__.py``) talks JSON lines on stdout; its stderr goes to a
temporary file that is shown when it fails. The controller never imports an implementation: it
only runs commands, so that our package, the reference and the baseline each run in a process of
their own, with their own interpreter where needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKERS = REPO_ROOT / "bench" / "workers"


class WorkerError(RuntimeError):
    """A worker failed, timed out, or printed something that is not its JSON report."""


class Implementation:
    """How to run the workers of one implementation."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env

    def command(self, role: str, *options: Any) -> list[str]:
        return [*self.argv, role, *(str(option) for option in options)]


def ours_implementation(source: Path | None = None) -> Implementation:
    """Our workers, importing ``nasdaq_protocols`` from ``source`` (default: this checkout's ``src``)."""
    env = dict(os.environ)
    # Our package from this checkout (or the one asked for), even if the interpreter has another
    # copy installed.
    source = source or REPO_ROOT / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return Implementation("ours", [sys.executable, "-m", "bench.workers.ours"], env)


def ours_python_implementation(source: Path | None = None) -> Implementation:
    """Our workers on the pure-Python packet walker and framer (``SOUPBINTCP_NO_EXTENSIONS=1``)."""
    ours = ours_implementation(source)
    assert ours.env is not None
    return Implementation("ours (pure Python)", ours.argv, {**ours.env, "SOUPBINTCP_NO_EXTENSIONS": "1"})


def raw_implementation() -> Implementation:
    return Implementation("raw", [sys.executable, "-m", "bench.workers.raw"])


def reference_implementation(python: Path) -> Implementation:
    # -I: nothing of ours (PYTHONPATH, user site, the script's folder) reaches the reference.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return Implementation("reference", [str(python), "-I", "-u", str(WORKERS / "ref.py")], env)


class Worker:
    """A running worker process."""

    def __init__(
        self, command: list[str], env: dict[str, str] | None = None, name: str = "", ignore: bytes = b""
    ) -> None:
        self.command = command
        self.ignore = ignore  # stdout lines starting with this are not reports (a profiler's chatter)
        self.name = name or " ".join(command[-3:])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO_ROOT,
            env=env,
        )
        self._buffer = b""

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _fail(self, why: str) -> WorkerError:
        stderr = self.stderr()
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        cause = f" ({last.strip()[:120]})" if last else ""
        return WorkerError(
            f"{self.name}: {why}{cause}\n--- command ---\n{' '.join(self.command)}\n--- stderr ---\n"
            f"{stderr[-4000:]}"
        )

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the worker prints (waiting at most ``timeout`` seconds)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                while b"\n" not in self._buffer:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._fail(f"no report within {timeout:g} s")
                    if not selector.select(remaining):
                        continue
                    chunk = os.read(stdout.fileno(), 65536)
                    if not chunk:
                        self.process.wait(5)
                        raise self._fail(f"exited with {self.process.returncode} before reporting")
                    self._buffer += chunk
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.strip() and not (self.ignore and line.startswith(self.ignore)):
                    break
        try:
            report = json.loads(line)
        except ValueError:
            raise self._fail(f"printed {line[:200]!r}, not a JSON report") from None
        if not isinstance(report, dict):
            raise self._fail(f"printed {line[:200]!r}, not a JSON object")
        return report

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Close the worker's stdin (the "stop" signal) and return its final report."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        report = self.read_json(timeout)
        self.wait(timeout)
        return report

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._fail(f"still running after {timeout:g} s (killed)") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


@contextlib.contextmanager
def workers() -> Iterator[list[Worker]]:
    """A list to start workers into; every one of them is killed on the way out."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def start(pool: list[Worker], implementation: Implementation, role: str, *options: Any) -> Worker:
    worker = Worker(
        implementation.command(role, *options), implementation.env, f"{implementation.name} {role}"
    )
    pool.append(worker)
    return worker


def run(implementation: Implementation, role: str, *options: Any, timeout: float = 300.0) -> dict[str, Any]:
    """Run a client worker to completion; return its report."""
    with workers() as pool:
        worker = start(pool, implementation, role, *options)
        report = worker.read_json(timeout)
        worker.wait(30)
        return report


# --------------------------------------------------------------------------- the reference


def reference_python() -> Path:
    """The interpreter of a virtualenv with ``nasdaq-protocols==1.3.0``.

    The interop harness (``tests/peers``) owns that virtualenv (``.peers/ref-venv``): it is asked
    first, so that both share one install. Its ``reference_python()`` creates the virtualenv when
    missing (which needs PyPI).

    Raises:
        RuntimeError: the reference could not be installed or found.
    """
    tests = str(REPO_ROOT / "tests")
    sys.path.insert(0, tests)
    try:
        import peers  # type: ignore[import-not-found]  # tests/peers: the interop harness

        return Path(peers.reference_python())
    except Exception as exc:
        fallback = REPO_ROOT / ".peers" / "ref-venv" / "bin" / "python"
        if (REPO_ROOT / ".peers" / "ref-venv" / ".interop-complete").exists() and fallback.exists():
            return fallback
        raise RuntimeError(f"the reference implementation is not available: {exc}") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(tests)


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, Python, OS and load: what a reader needs to weigh the numbers."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = "?"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
    }


def uvloop_available() -> bool:
    """True if uvloop imports in this interpreter (the workers' interpreter)."""
    done = subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True, check=False)
    return done.returncode == 0
