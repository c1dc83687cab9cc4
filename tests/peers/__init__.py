"""Interop harness: run SoupBinTCP implementations nobody here wrote as peer processes.

The peers are the reference implementation ``nasdaq-protocols==1.3.0`` (PyPI) and the npm package
``soupbintcp@1.0.2``. The reference installs the same import name as our package
(``nasdaq_protocols``), so it never enters our virtualenv: it lives in a virtualenv of its own,
``<repo>/.peers/ref-venv``, and runs only in subprocesses. The npm package is installed under
``<repo>/.peers/npm``. Both are created on first use and reused afterwards; if that fails (no
network) the interop tests fail with the reason, they are never skipped.

THE INTEROP SCENARIO (every peer program here implements one side of it)
========================================================================

Server program, ``<server> [--host H] [--port P] [--echo-sequenced] [--exit-on-stdin-eof]``:

* Listens on H:P (default ``127.0.0.1:0``, 0 = ephemeral) and prints the bound port, alone, as
  the first line of stdout. Nothing else goes to stdout; diagnostics go to stderr.
* Serves a fixed stream of ``MESSAGE_COUNT`` (100) messages, ``b"msg-%d" % seq`` for seq 1..100,
  in session ``SESSION`` (``"INTEROP"``); the only credentials are ``USER``/``PASSWORD``
  (``user``/``pass``).
* Login Request with other credentials: Login Rejected ``'A'``, then close. A requested session
  that is neither blank nor ``INTEROP``: Login Rejected ``'S'``, then close.
* Otherwise, requested sequence ``n``: ``1 <= n <= 101`` starts at ``n``; ``0`` or ``n > 101``
  starts at 101. Replies ``LoginAccepted("INTEROP", start)`` then the Sequenced Data for
  ``start..100``.
* Unsequenced Data ``X``: replies Unsequenced Data ``b"echo:" + X``; with ``--echo-sequenced``
  (for clients that cannot receive U packets, such as the npm client) a Sequenced Data
  ``b"echo:" + X`` instead. The echo is sent on that connection only; it is not added to the
  stream (a later login still sees 100 messages).
* Logout Request: closes the connection.
* Heartbeats per the implementation's defaults (reference: 10 s, npm: 1 s, times out at 15 s).
* ``--exit-on-stdin-eof``: the program exits when its stdin closes (the harness passes it, so a
  server never outlives a killed pytest).

Client program, ``<client> HOST PORT [--echo-sequenced] [--timeout SECONDS]``:

1. Logs in as ``user``/``pass``, session ``''``, sequence 1; expects Login Accepted; receives
   exactly 100 Sequenced Data and checks each payload.
2. Sends Unsequenced Data ``b"ping"`` and waits for the echo: a U packet, or an S packet with
   ``--echo-sequenced`` (the npm client always expects S: it cannot receive U).
3. Logs out; connects again with sequence 51, receives msg-51..msg-100, logs out.
4. Logs in with a wrong password and records the reject reason.
5. Prints one JSON object on one stdout line and exits 0 (non-zero with an ``"error"`` key, and
   whatever it had gathered so far, on failure)::

       {"first_login": {"session": "INTEROP", "sequence": 1},
        "messages": ["msg-1", ..., "msg-100"], "echo": "echo:ping",
        "resume": {"sequence": 51, "messages": ["msg-51", ..., "msg-100"]},
        "bad_login": "A"}

   which is :data:`EXPECTED_CLIENT_RESULT`. Payloads are decoded as latin-1, the session name is
   stripped of padding. ``--timeout`` bounds the whole scenario (default 20 s).

Programs by kind (:data:`PEER_PROGRAMS`): ``reference`` = ``ref_server.py`` / ``ref_client.py`` run
by the reference venv's python; ``npm`` = ``npm_server.js`` / ``npm_client.js`` run by ``node``
with ``NODE_PATH`` pointing at the npm install; ``ours`` = ``our_server.py`` / ``our_client.py``
run by this interpreter (to be written on top of our session layer, same contract).

USING IT (test modules import it as ``peers``: pytest puts ``tests/`` on ``sys.path``)
=====================================================================================

::

    from peers import (
        assert_scenario_passed, reference_python, require_peer, run_peer_client, start_peer_server,
    )

    @pytest.mark.interop
    def test_npm_client_against_reference_server():
        require_peer(reference_python)  # in the test body: a missing peer fails, never skips
        with start_peer_server("reference", echo_sequenced=True) as server:  # killed on exit
            result = run_peer_client("npm", server.host, server.port, echo_sequenced=True)
        assert_scenario_passed(result, server)

``run_peer_client`` blocks: from an async test that serves with our in-process server, call it
as ``await asyncio.to_thread(run_peer_client, ...)`` so the event loop keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "CLIENT_TIMEOUT",
    "EXPECTED_CLIENT_RESULT",
    "MESSAGE_COUNT",
    "PASSWORD",
    "PEERS_DIR",
    "PEER_KINDS",
    "PEER_PROGRAMS",
    "REPO_ROOT",
    "RESUME_FROM",
    "SESSION",
    "STARTUP_TIMEOUT",
    "USER",
    "PeerError",
    "PeerServer",
    "PeerSetupError",
    "assert_scenario_passed",
    "client_command",
    "npm_peer_dir",
    "reference_python",
    "require_peer",
    "run_client_process",
    "run_peer_client",
    "run_reference_program",
    "server_command",
    "start_peer_server",
    "start_server_process",
    "stream_message",
]

T = TypeVar("T")

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parents[1]
CACHE_DIR = REPO_ROOT / ".peers"

REFERENCE_DISTRIBUTION = "nasdaq-protocols"
REFERENCE_VERSION = "1.3.0"
NPM_PACKAGE = "soupbintcp"
NPM_VERSION = "1.0.2"

SESSION = "INTEROP"
USER = "user"
PASSWORD = "pass"
MESSAGE_COUNT = 100
RESUME_FROM = 51

#: Seconds a server program has to print its port.
STARTUP_TIMEOUT = 30.0
#: Seconds a client program has to run the whole scenario before it is killed.
CLIENT_TIMEOUT = 30.0
# The client programs get this much less for their own deadline, so they report a JSON error
# (with what they gathered) before the harness has to kill them.
_CLIENT_GRACE = 8.0
_PIP_TIMEOUT = 600.0
_NPM_TIMEOUT = 300.0
_LOCK_TIMEOUT = 900.0

PEER_KINDS = ("reference", "npm")
#: ``kind -> (server program, client program)``, files in this folder.
PEER_PROGRAMS = {
    "reference": ("ref_server.py", "ref_client.py"),
    "npm": ("npm_server.js", "npm_client.js"),
    "ours": ("our_server.py", "our_client.py"),
}


def stream_message(sequence: int) -> bytes:
    """The scenario's Sequenced Data payload number ``sequence`` (1-based)."""
    return b"msg-%d" % sequence


#: What every scenario client program must print against every scenario server.
EXPECTED_CLIENT_RESULT: dict[str, Any] = {
    "first_login": {"session": SESSION, "sequence": 1},
    "messages": [stream_message(seq).decode() for seq in range(1, MESSAGE_COUNT + 1)],
    "echo": "echo:ping",
    "resume": {
        "sequence": RESUME_FROM,
        "messages": [stream_message(seq).decode() for seq in range(RESUME_FROM, MESSAGE_COUNT + 1)],
    },
    "bad_login": "A",
}


class PeerError(RuntimeError):
    """A peer program did not start, did not finish in time, or printed something unreadable."""


class PeerSetupError(PeerError):
    """A peer implementation could not be installed (no network, no node...).

    Interop tests turn this into a failure, never a skip: CI installs the peers.
    """


# --------------------------------------------------------------------------- installing the peers

_setup_lock = threading.Lock()
# Success (a Path) or the failure, so that a missing network costs one attempt per test run.
_setup_results: dict[str, Path | PeerSetupError] = {}


def _cached_setup(name: str, create: Callable[[], Path]) -> Path:
    with _setup_lock:
        if name not in _setup_results:
            try:
                _setup_results[name] = create()
            except PeerSetupError as exc:
                _setup_results[name] = exc
        result = _setup_results[name]
    if isinstance(result, PeerSetupError):
        raise result
    return result


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = _LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two pytest processes don't install at once."""
    import fcntl  # POSIX only, like the rest of the harness's process handling

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PeerSetupError(
                        f"waited {timeout:.0f} s for {path}: another test run is still installing a peer"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run_setup(argv: Sequence[str | os.PathLike[str]], what: str, timeout: float, **kwargs: Any) -> None:
    command = " ".join(str(part) for part in argv)
    try:
        done = subprocess.run(
            [str(part) for part in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except FileNotFoundError as exc:
        raise PeerSetupError(f"cannot {what}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise PeerSetupError(f"cannot {what}: `{command}` did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise PeerSetupError(
            f"cannot {what}: `{command}` exited with {done.returncode}."
            " The interop tests need the package registries the first time they run (CI installs"
            f" the peers); they fail rather than skip. Output:\n{output[-3000:]}"
        )


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _reference_env() -> dict[str, str]:
    # The reference must not see our package: no PYTHONPATH, no user site (``-I`` does the same).
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return env


_REFERENCE_CHECK = (
    "import importlib.metadata as m, os, sys, nasdaq_protocols.soup as s;"
    f"version = m.version({REFERENCE_DISTRIBUTION!r});"
    f"assert version == {REFERENCE_VERSION!r}, version;"
    "assert os.path.realpath(s.__file__).startswith(os.path.realpath(sys.prefix)), s.__file__;"
    "assert hasattr(s, 'SoupClientSessionSync')"
)


def _reference_works(python: Path) -> bool:
    if not python.exists():
        return False
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", _REFERENCE_CHECK],
            env=_reference_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _create_reference_venv() -> Path:
    venv = CACHE_DIR / "ref-venv"
    python = _venv_python(venv)
    complete = venv / ".interop-complete"
    with _file_lock(CACHE_DIR / "ref-venv.lock"):
        if complete.exists() and _reference_works(python):
            return python
        # Absent, half-built (no marker: an earlier run was interrupted) or broken: start over.
        shutil.rmtree(venv, ignore_errors=True)
        what = f"create the reference implementation's virtualenv {venv}"
        _run_setup([sys.executable, "-m", "venv", venv], what, 120, env=_reference_env())
        _run_setup(
            [
                python,
                "-I",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--retries",
                "2",
                "--timeout",
                "30",
                f"{REFERENCE_DISTRIBUTION}=={REFERENCE_VERSION}",
            ],
            f"install {REFERENCE_DISTRIBUTION}=={REFERENCE_VERSION} into {venv}",
            _PIP_TIMEOUT,
            env=_reference_env(),
        )
        if not _reference_works(python):
            raise PeerSetupError(
                f"{venv} was created but does not import {REFERENCE_DISTRIBUTION} {REFERENCE_VERSION}"
            )
        complete.write_text(f"{REFERENCE_DISTRIBUTION}=={REFERENCE_VERSION}\n")
        return python


def reference_python() -> Path:
    """Return the python of a virtualenv that has ``nasdaq-protocols==1.3.0`` installed.

    Creates ``<repo>/.peers/ref-venv`` the first time (under a file lock, so concurrent pytest
    processes wait for each other), and reuses it while it imports the right version. Run it
    with ``-I`` (as the harness does) so that nothing of ours is importable.

    Raises:
        PeerSetupError: the virtualenv could not be created (no network...).
    """
    return _cached_setup("reference", _create_reference_venv)


def _npm_installed(prefix: Path) -> bool:
    manifest = prefix / "node_modules" / NPM_PACKAGE / "package.json"
    try:
        return bool(json.loads(manifest.read_text()).get("version") == NPM_VERSION)
    except (OSError, ValueError, AttributeError):
        return False


def _install_npm_peer() -> Path:
    prefix = CACHE_DIR / "npm"
    if shutil.which("node") is None:
        raise PeerSetupError("cannot run the npm peer: `node` is not on PATH (Node >= 18 is needed)")
    with _file_lock(CACHE_DIR / "npm.lock"):
        if _npm_installed(prefix):
            return prefix
        npm = shutil.which("npm")
        if npm is None:
            raise PeerSetupError("cannot install the npm peer: `npm` is not on PATH")
        prefix.mkdir(parents=True, exist_ok=True)
        _run_setup(
            [npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", f"{NPM_PACKAGE}@{NPM_VERSION}"],
            f"install {NPM_PACKAGE}@{NPM_VERSION} into {prefix}",
            _NPM_TIMEOUT,
        )
        if not _npm_installed(prefix):
            raise PeerSetupError(
                f"`npm install` succeeded but {prefix}/node_modules/{NPM_PACKAGE} is not {NPM_VERSION}"
            )
        return prefix


def npm_peer_dir() -> Path:
    """Return the directory whose ``node_modules`` holds ``soupbintcp@1.0.2``.

    Runs ``npm install --prefix <repo>/.peers/npm soupbintcp@1.0.2`` the first time (under a file
    lock); skips it when that version is already there.

    Raises:
        PeerSetupError: node or npm is missing, or the install failed (no network...).
    """
    return _cached_setup("npm", _install_npm_peer)


def require_peer(install: Callable[[], T]) -> T:
    """Call ``install`` (e.g. :func:`reference_python`) from a test *body*, failing the test on
    :class:`PeerSetupError`: a missing peer is a failure with the reason, never a skip.

    (In a fixture the same ``pytest.fail`` would report an error at setup instead.)
    """
    import pytest

    try:
        return install()
    except PeerSetupError as exc:
        reason = str(exc)
    # Outside the except block, so the report shows the reason once, without a chained traceback.
    pytest.fail(f"interop peer unavailable: {reason}", pytrace=False)


# --------------------------------------------------------------------------- commands


def _program_command(kind: str, side: int) -> tuple[list[str], dict[str, str] | None]:
    try:
        program = PEERS_DIR / PEER_PROGRAMS[kind][side]
    except KeyError:
        raise ValueError(f"unknown peer kind {kind!r}: expected one of {sorted(PEER_PROGRAMS)}") from None
    if not program.exists():
        raise PeerError(f"peer program {program} does not exist")
    if kind == "reference":
        return [str(reference_python()), "-I", "-u", str(program)], _reference_env()
    if kind == "npm":
        env = dict(os.environ, NODE_PATH=str(npm_peer_dir() / "node_modules"))
        return [shutil.which("node") or "node", str(program)], env
    return [sys.executable, "-u", str(program)], None


def server_command(
    kind: str, *, host: str = "127.0.0.1", port: int = 0, echo_sequenced: bool = False
) -> tuple[list[str], dict[str, str] | None]:
    """Return ``(argv, env)`` that starts the scenario server of ``kind`` (see the module doc).

    ``env`` is ``None`` for "inherit". Installs the peer first if needed (:class:`PeerSetupError`).
    """
    argv, env = _program_command(kind, 0)
    argv += ["--host", host, "--port", str(port)]
    if echo_sequenced:
        argv.append("--echo-sequenced")
    return argv, env


def client_command(
    kind: str, host: str, port: int, *, echo_sequenced: bool = False, timeout: float = CLIENT_TIMEOUT
) -> tuple[list[str], dict[str, str] | None]:
    """Return ``(argv, env)`` that runs the scenario client of ``kind`` against ``host:port``."""
    argv, env = _program_command(kind, 1)
    argv += [host, str(port), "--timeout", f"{max(timeout - _CLIENT_GRACE, 1.0):g}"]
    if echo_sequenced:
        argv.append("--echo-sequenced")
    return argv, env


# --------------------------------------------------------------------------- running servers


class PeerServer:
    """A running server process that printed its port; a context manager that stops it.

    Attributes:
        name: a label for messages.
        process: the ``subprocess.Popen``.
        host, port: where it listens (``address`` is both as a tuple).
    """

    def __init__(self, name: str, process: subprocess.Popen[bytes], host: str, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.host = host
        self.port = 0
        self._log_path = log_path
        self._log_text: str | None = None
        self._stdout_lines: list[str] = []
        self._stdout_reader: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the server wrote to stderr (and any stray stdout after the port line)."""
        if self._log_text is not None:
            text = self._log_text
        else:
            try:
                text = self._log_path.read_text(errors="replace")
            except OSError:
                text = ""
        if self._stdout_lines:
            text += "\n[stdout after the port line]\n" + "".join(self._stdout_lines)
        return text

    def stop(self) -> None:
        """Stop the process (stdin EOF, then SIGTERM, then SIGKILL) and keep its output."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()
            for signal_it, wait in ((None, 2.0), (self.process.terminate, 5.0), (self.process.kill, 10.0)):
                if signal_it is not None:
                    with contextlib.suppress(OSError):
                        signal_it()
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._stdout_reader is not None:
            # The process is gone, so its stdout reaches EOF and the reader ends by itself.
            self._stdout_reader.join(timeout=2.0)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._log_text is None:
            self._log_text = self.output()
            with contextlib.suppress(OSError):
                self._log_path.unlink()

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.process.returncode}"
        return f"<PeerServer {self.name} {self.host}:{self.port} pid={self.process.pid} {state}>"


def start_server_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    name: str | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> PeerServer:
    """Start any server program that prints its bound port as its first stdout line.

    ``--exit-on-stdin-eof`` is appended to ``argv`` and the process gets a stdin pipe that
    :meth:`PeerServer.stop` closes.

    Returns:
        the running :class:`PeerServer` (use it as a context manager).

    Raises:
        PeerError: the program exited, or printed no port within ``timeout`` seconds; the
            message has its stderr. The process is killed first.
    """
    name = name or Path(argv[1] if len(argv) > 1 else argv[0]).name
    log_file = tempfile.NamedTemporaryFile(prefix=f"peer-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    try:
        process = subprocess.Popen(
            [*argv, "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
            cwd=REPO_ROOT,
        )
    except OSError as exc:
        log_file.close()
        log_path.unlink()
        raise PeerError(f"cannot start {name}: {exc}") from None
    finally:
        log_file.close()
    server = PeerServer(name, process, host, log_path)
    first_line: list[bytes] = []
    got_line = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        try:
            first_line.append(process.stdout.readline())
            got_line.set()
            # Keep draining so a chatty server never blocks on a full pipe.
            for line in process.stdout:
                server._stdout_lines.append(line.decode(errors="replace"))
        except (OSError, ValueError):  # the pipe was closed under us: the server is being stopped
            pass
        finally:
            got_line.set()

    server._stdout_reader = threading.Thread(target=read_stdout, name=f"{name}-stdout", daemon=True)
    server._stdout_reader.start()
    got_line.wait(timeout)
    line = first_line[0].decode(errors="replace").strip() if first_line else ""
    if not line.isdigit():
        reason = f"printed {line!r}" if first_line else f"printed nothing in {timeout:.0f} s"
        server.stop()
        raise PeerError(
            f"server {name} {reason} instead of its port (exit code {process.returncode});"
            f" command {' '.join(argv)}\n--- its stderr ---\n{server.output()}"
        )
    server.port = int(line)
    return server


def start_peer_server(
    kind: str,
    *,
    echo_sequenced: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = STARTUP_TIMEOUT,
) -> PeerServer:
    """Start the scenario server of ``kind`` (``"reference"``, ``"npm"``, ``"ours"``).

    Returns:
        a running :class:`PeerServer`; ``with start_peer_server("npm") as server: ...``.

    Raises:
        PeerSetupError: the peer could not be installed.
        PeerError: the server did not start.
    """
    argv, env = server_command(kind, host=host, port=port, echo_sequenced=echo_sequenced)
    return start_server_process(argv, env=env, host=host, name=f"{kind}-server", timeout=timeout)


# --------------------------------------------------------------------------- running clients


def run_client_process(
    argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = CLIENT_TIMEOUT
) -> dict[str, Any]:
    """Run a client program to completion and return the JSON object it printed last.

    A result with an ``"error"`` key, or a non-zero exit, is returned as it is (the client's
    stderr is copied to ours, so pytest shows it); a non-zero exit without an ``"error"`` key
    gets one.

    Raises:
        PeerError: the program did not finish within ``timeout`` seconds (it is killed), or its
            last stdout line is not a JSON object.
    """
    command = " ".join(argv)
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(
            f"client `{command}` did not finish in {timeout:.0f} s (killed)\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        ) from None
    except OSError as exc:
        raise PeerError(f"cannot run client `{command}`: {exc}") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except (IndexError, ValueError):
        raise PeerError(
            f"client `{command}` exited with {done.returncode} without a JSON result\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        ) from None
    if done.returncode != 0:
        result.setdefault("error", f"client exited with {done.returncode}")
    if done.stderr.strip() or "error" in result:
        sys.stderr.write(f"--- stderr of client `{command}` (exit {done.returncode}) ---\n{done.stderr}\n")
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def run_peer_client(
    kind: str, host: str, port: int, *, echo_sequenced: bool = False, timeout: float = CLIENT_TIMEOUT
) -> dict[str, Any]:
    """Run the scenario client of ``kind`` against ``host:port`` and return its JSON result.

    Compare the result with :data:`EXPECTED_CLIENT_RESULT` (:func:`assert_scenario_passed`).

    Raises:
        PeerSetupError: the peer could not be installed.
        PeerError: see :func:`run_client_process`.
    """
    argv, env = client_command(kind, host, port, echo_sequenced=echo_sequenced, timeout=timeout)
    return run_client_process(argv, env=env, timeout=timeout)


def run_reference_program(
    program: str, *args: str, input_json: Any = None, timeout: float = CLIENT_TIMEOUT
) -> Any:
    """Run ``tests/peers/<program>`` with the reference venv's python; return its stdout as JSON.

    ``input_json`` (if not ``None``) is written to its stdin as JSON.

    Raises:
        PeerSetupError: the reference could not be installed.
        PeerError: the program failed, timed out or did not print JSON (its stderr is in the message).
    """
    argv = [str(reference_python()), "-I", "-u", str(PEERS_DIR / program), *args]
    try:
        done = subprocess.run(
            argv,
            input=None if input_json is None else json.dumps(input_json),
            capture_output=True,
            text=True,
            env=_reference_env(),
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PeerError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s (killed)") from None
    try:
        if done.returncode != 0:
            raise ValueError(f"exit code {done.returncode}")
        return json.loads(done.stdout)
    except ValueError as exc:
        raise PeerError(
            f"`{' '.join(argv)}` failed ({exc})\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        ) from None


def assert_scenario_passed(result: dict[str, Any], server: PeerServer | None = None) -> None:
    """Assert a client result is :data:`EXPECTED_CLIENT_RESULT`; the message names what differs
    and carries the server's stderr."""
    if result == EXPECTED_CLIENT_RESULT:
        return
    differences = [
        f"{key}: expected {EXPECTED_CLIENT_RESULT.get(key)!r}, got {result.get(key)!r}"
        for key in sorted(set(result) | set(EXPECTED_CLIENT_RESULT))
        if result.get(key) != EXPECTED_CLIENT_RESULT.get(key)
    ]
    message = "interop scenario failed:\n  " + "\n  ".join(differences)
    if server is not None:
        message += f"\n--- {server!r} stderr ---\n{server.output()}"
    raise AssertionError(message)
