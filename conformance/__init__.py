"""Conformance: nasdaq-protocols 1.3.0's own soup tests, run against this package (issue 16).

This package promises to be a drop-in for the ``nasdaq_protocols.soup`` API of the PyPI package
nasdaq-protocols 1.3.0 (the reference). The reference's sdist holds its test suite; this runner
checks the promise with it, without the project containing any of its code:

1. :func:`fetch_sdist` downloads ``nasdaq_protocols-1.3.0.tar.gz`` with pip, pinned by version and
   by :data:`SDIST_SHA256` (``pip download --require-hashes``), into ``<repo>/.peers/sdist/``
   (git-ignored, shared with the interop peers), and reuses it while its hash matches.
2. :func:`extract_tests` unpacks only :data:`UPSTREAM_FILES` (the three soup test files and the
   ``conftest.py`` and ``mocks.py`` they use) into ``<repo>/.peers/conformance/``, afresh each run.
3. :func:`run_tests` runs pytest there, in a subprocess, against the ``nasdaq_protocols`` installed
   in this interpreter, with :mod:`conformance.plugin`, which marks the tests of
   :mod:`conformance.expected_failures` (our deliberate differences, each with its reason)
   ``xfail(strict=True)``.

Run it from the repository root: ``python -m conformance`` (see :mod:`conformance.__main__`).
Without network access on the first run (no cached sdist) it fails with the reason; it never
skips. The other soup files of the sdist are not run: ``test_soup_reader.py`` tests the private
``nasdaq_protocols.soup._reader``, ``test_soup_tools_soupapp_tail.py`` the ITCH code generator.

Nothing here is imported by the library; this package needs the repository root on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CACHE_DIR",
    "REFERENCE_DISTRIBUTION",
    "REFERENCE_VERSION",
    "REPO_ROOT",
    "SDIST_NAME",
    "SDIST_SHA256",
    "TEST_FILES",
    "UPSTREAM_FILES",
    "ConformanceSetupError",
    "extract_tests",
    "fetch_sdist",
    "run_tests",
    "sha256_of",
]

REFERENCE_DISTRIBUTION = "nasdaq-protocols"
REFERENCE_VERSION = "1.3.0"
SDIST_NAME = f"nasdaq_protocols-{REFERENCE_VERSION}.tar.gz"
#: SHA-256 of the sdist PyPI serves for nasdaq-protocols 1.3.0.
SDIST_SHA256 = "4f7b0fccc042bcf3f3b5b97fcb02bf10914f1b8da29002b391e8cb76171f1bd0"
#: The directory every member of the sdist is under.
SDIST_ROOT = f"nasdaq_protocols-{REFERENCE_VERSION}"

#: The upstream test files run, relative to the sdist's root (issue 16 names them).
TEST_FILES = ("tests/test_soup_core.py", "tests/test_soup_session.py", "tests/test_soup_tools_tail.py")
#: Everything taken from the sdist: the test files and what they import (``tests.mocks``,
#: the fixtures of ``tests/conftest.py``).
UPSTREAM_FILES = ("tests/__init__.py", "tests/conftest.py", "tests/mocks.py", *TEST_FILES)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".peers"

#: Seconds pip may take to download the sdist (it builds its metadata in an isolated environment).
PIP_TIMEOUT = 600.0
#: Seconds the whole upstream test run may take before it is killed and reported as failed.
RUN_TIMEOUT = 600.0
#: Seconds a single upstream test may run before pytest dumps every thread's stack.
HUNG_TEST_DUMP_AFTER = 120

# pytest configuration for the unpacked tests: the same asyncio mode as upstream's pyproject.toml.
_PYTEST_INI = f"""\
# Written by the conformance runner (conformance/__init__.py) for each run; do not edit.
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
faulthandler_timeout = {HUNG_TEST_DUMP_AFTER}
"""


class ConformanceSetupError(RuntimeError):
    """The reference's sdist could not be downloaded, verified or unpacked.

    The conformance suite fails with this, never skips: CI has the network it needs.
    """


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(cache_dir: Path | None = None, *, python: str = sys.executable) -> Path:
    """Return the path of the reference's sdist, downloading it with pip if it is not cached.

    The file is ``<cache_dir>/nasdaq_protocols-1.3.0.tar.gz``. A cached file is used only if its
    SHA-256 is :data:`SDIST_SHA256`; otherwise it is downloaded again with
    ``pip download --no-deps --no-binary nasdaq-protocols --require-hashes``, so pip itself
    refuses a file with another hash. The download goes to a temporary directory and is moved into
    place, so a concurrent or interrupted run never sees half a file.

    Args:
        cache_dir: where to keep the file (default ``<repo>/.peers/sdist``).
        python: the interpreter whose pip downloads it.

    Raises:
        ConformanceSetupError: pip failed (no network...) or the file's hash is not the pinned one.
    """
    cache_dir = cache_dir if cache_dir is not None else CACHE_DIR / "sdist"
    target = cache_dir / SDIST_NAME
    if target.is_file() and sha256_of(target) == SDIST_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="download-", dir=cache_dir) as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(
            f"{REFERENCE_DISTRIBUTION}=={REFERENCE_VERSION} --hash=sha256:{SDIST_SHA256}\n"
        )
        downloads = Path(scratch) / "downloads"
        command = [
            python, "-m", "pip", "download", "--no-deps", "--no-binary", REFERENCE_DISTRIBUTION,
            "--require-hashes", "--disable-pip-version-check", "--no-input",
            "--retries", "2", "--timeout", "30", "-r", str(requirements), "-d", str(downloads),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConformanceSetupError(f"cannot download {SDIST_NAME}: {exc}") from None
        downloaded = downloads / SDIST_NAME
        if done.returncode != 0 or not downloaded.is_file():
            output = (done.stdout + done.stderr).strip()
            raise ConformanceSetupError(
                f"cannot download {SDIST_NAME}: `{' '.join(command)}` exited with {done.returncode}."
                " The conformance suite needs PyPI the first time it runs; it fails rather than"
                f" skips. Output:\n{output[-3000:]}"
            )
        actual = sha256_of(downloaded)
        if actual != SDIST_SHA256:  # pip checked it already; this guards the check itself
            raise ConformanceSetupError(f"{SDIST_NAME} has SHA-256 {actual}, expected {SDIST_SHA256}")
        os.replace(downloaded, target)
    return target


def extract_tests(sdist: Path, workdir: Path | None = None) -> Path:
    """Unpack :data:`UPSTREAM_FILES` from ``sdist`` into a fresh ``workdir``; return ``workdir``.

    ``workdir`` (default ``<repo>/.peers/conformance``) is emptied first, so no file of an earlier
    run lingers, and receives a generated ``pytest.ini``. Only the listed members are read, and
    they are written under their listed names, so no path in the archive chooses where to write.

    Raises:
        ConformanceSetupError: the archive is unreadable or lacks one of the files.
    """
    workdir = workdir if workdir is not None else CACHE_DIR / "conformance"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for name in UPSTREAM_FILES:
                member = archive.extractfile(f"{SDIST_ROOT}/{name}")
                if member is None:
                    raise KeyError(name)
                destination = workdir / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(member.read())
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise ConformanceSetupError(f"cannot unpack {name} from {sdist}: {exc!r}") from None
    (workdir / "pytest.ini").write_text(_PYTEST_INI)
    return workdir


def run_tests(workdir: Path, pytest_args: Sequence[str] = (), *, timeout: float = RUN_TIMEOUT) -> int:
    """Run pytest on the unpacked upstream tests in ``workdir``; return pytest's exit status.

    Runs ``python -m pytest -p conformance.plugin`` with this interpreter (so the
    ``nasdaq_protocols`` under test is the one installed here), in ``workdir``, on
    :data:`TEST_FILES` unless ``pytest_args`` names other tests. Output goes to this process's
    stdout and stderr.

    Args:
        workdir: the directory :func:`extract_tests` filled.
        pytest_args: extra pytest arguments; positional ones replace the default test files.
        timeout: seconds before the run and every process it started are killed; the status is
            then 124 (as ``timeout(1)`` reports it).
    """
    selects = any(not arg.startswith("-") for arg in pytest_args)
    command = [
        sys.executable, "-m", "pytest", "-p", "conformance.plugin", "-p", "no:cacheprovider",
        "-rfEX", "--continue-on-collection-errors", *pytest_args, *(() if selects else TEST_FILES),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTEST_ADDOPTS", None)  # our own suite's options are not upstream's
    with subprocess.Popen(command, cwd=workdir, env=env, start_new_session=True) as process:
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"conformance: the upstream tests ran over {timeout:g} s: killed", file=sys.stderr)
            return 124
        finally:
            # The tail tests start worker processes: end the whole group the run started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
