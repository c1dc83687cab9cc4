"""Installing the peers (part of the ``peers`` package): the reference implementation
``nasdaq-protocols==1.3.0`` in a virtualenv of its own, the npm package ``soupbintcp@1.0.2``.

Both are created under ``<repo>/.peers`` on first use (under a file lock) and reused afterwards;
a failure is a :class:`PeerSetupError`, which :func:`require_peer` turns into a test failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .scenario import CACHE_DIR, PeerSetupError

T = TypeVar("T")

REFERENCE_DISTRIBUTION = "nasdaq-protocols"
REFERENCE_VERSION = "1.3.0"
NPM_PACKAGE = "soupbintcp"
NPM_VERSION = "1.0.2"

_PIP_TIMEOUT = 600.0
_NPM_TIMEOUT = 300.0
_LOCK_TIMEOUT = 900.0


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
