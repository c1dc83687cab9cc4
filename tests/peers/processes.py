"""Running the peer programs (part of the ``peers`` package): the commands that start them,
scenario servers as :class:`PeerServer` processes, scenario clients to completion, and checking
a client's result against :data:`EXPECTED_CLIENT_RESULT`.
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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .install import _reference_env, npm_peer_dir, reference_python
from .scenario import (
    CLIENT_TIMEOUT,
    EXPECTED_CLIENT_RESULT,
    PEER_PROGRAMS,
    PEERS_DIR,
    REPO_ROOT,
    STARTUP_TIMEOUT,
    PeerError,
)

# The client programs get this much less for their own deadline, so they report a JSON error
# (with what they gathered) before the harness has to kill them.
_CLIENT_GRACE = 8.0


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
