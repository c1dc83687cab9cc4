"""The conformance runner (``python -m conformance``): nasdaq-protocols 1.3.0's soup tests on our package.

The runner's own behaviour is tested offline, on a made-up sdist whose test files carry the names
the expected-failure list uses: what it unpacks, how a listed test that fails, a listed test that
passes, a stale entry and an upstream xfail mark end the run, and that a bad cached download is
never used. The real run downloads the sdist from PyPI: marked ``interop``, it fails (never
skips) without the network.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import conformance
import pytest
from conformance import (
    SDIST_ROOT,
    TEST_FILES,
    UPSTREAM_FILES,
    ConformanceSetupError,
    extract_tests,
    fetch_sdist,
    run_tests,
    sha256_of,
)
from conformance.expected_failures import EXPECTED_FAILURES, UPSTREAM_XFAIL_DROPPED

PASSING = "def test_{name}():\n    pass\n"
FAILING = "def test_{name}():\n    assert False, 'fails on purpose'\n"


def upstream_like(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Test files named as upstream's: each listed test fails, one more test passes per file."""
    files = {name: "" for name in UPSTREAM_FILES}
    for nodeid in EXPECTED_FAILURES:
        path, name = nodeid.split("::")
        files[path] += FAILING.format(name=name.removeprefix("test_"))
    for path in TEST_FILES:
        files[path] += PASSING.format(name="unlisted_" + Path(path).stem)
    files.update(overrides or {})
    return files


def make_sdist(directory: Path, files: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    """A .tar.gz laid out as the reference's sdist, holding ``files`` (and ``extra`` members)."""
    sdist = directory / "made-up.tar.gz"
    members = {f"{SDIST_ROOT}/{name}": text for name, text in files.items()}
    members.update(extra or {})
    with tarfile.open(sdist, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return sdist


def run_made_up(tmp_path: Path, capfd: pytest.CaptureFixture[str], files: dict[str, str]) -> tuple[int, str]:
    workdir = extract_tests(make_sdist(tmp_path, files), tmp_path / "work")
    status = run_tests(workdir, timeout=120)
    captured = capfd.readouterr()
    return status, captured.out + captured.err


# --------------------------------------------------------------------------- unpacking


def test_only_the_listed_files_are_unpacked_under_their_own_names(tmp_path: Path) -> None:
    files = upstream_like()
    sdist = make_sdist(
        tmp_path,
        files,
        extra={
            f"{SDIST_ROOT}/src/nasdaq_protocols/soup/session.py": "raise SystemExit('reference code')",
            f"{SDIST_ROOT}/tests/test_fix_session.py": "import nasdaq_protocols.fix",
            "../outside.py": "escaped",
        },
    )
    workdir = tmp_path / "work"
    (workdir / "tests").mkdir(parents=True)
    (workdir / "tests" / "test_left_over.py").write_text("from earlier run")
    assert extract_tests(sdist, workdir) == workdir
    unpacked = sorted(str(path.relative_to(workdir)) for path in workdir.rglob("*") if path.is_file())
    assert unpacked == sorted([*UPSTREAM_FILES, "pytest.ini"])
    assert (workdir / "tests" / "conftest.py").read_text() == files["tests/conftest.py"]
    assert not (tmp_path / "outside.py").exists()
    assert "asyncio_mode = auto" in (workdir / "pytest.ini").read_text()


def test_an_sdist_without_a_needed_file_is_a_setup_error(tmp_path: Path) -> None:
    files = upstream_like()
    del files["tests/mocks.py"]
    with pytest.raises(ConformanceSetupError, match=r"tests/mocks\.py"):
        extract_tests(make_sdist(tmp_path, files), tmp_path / "work")


# --------------------------------------------------------------------------- the expected-failure list


def test_every_entry_has_a_reason_and_names_a_file_that_is_run() -> None:
    assert EXPECTED_FAILURES
    for nodeid, reason in EXPECTED_FAILURES.items():
        assert nodeid.split("::")[0] in TEST_FILES, nodeid
        assert reason.startswith(("deliberate difference:", "private module:")), nodeid
    assert set(UPSTREAM_XFAIL_DROPPED) <= set(TEST_FILES)


def test_listed_failures_are_expected_and_unlisted_tests_must_pass(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    status, out = run_made_up(tmp_path, capfd, upstream_like())
    assert status == 0, out
    assert f"{len(TEST_FILES)} passed, {len(EXPECTED_FAILURES)} xfailed" in out
    assert "expected failures (conformance/expected_failures.py)" in out
    for nodeid, reason in EXPECTED_FAILURES.items():
        assert f"XFAIL {nodeid}\n      {reason}" in out
    assert "conformance: nasdaq_protocols under test from" in out


def test_a_listed_test_that_passes_fails_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    nodeid = next(iter(EXPECTED_FAILURES))
    path, name = nodeid.split("::")
    files = upstream_like()
    files[path] = files[path].replace(FAILING.format(name=name.removeprefix("test_")), "") + PASSING.format(
        name=name.removeprefix("test_")
    )
    status, out = run_made_up(tmp_path, capfd, files)
    assert status == 1, out
    assert f"FAILED {nodeid}" in out
    assert "XPASS(strict)" in out


def test_an_unlisted_failure_fails_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    files = upstream_like()
    files["tests/test_soup_session.py"] += FAILING.format(name="new_gap")
    status, out = run_made_up(tmp_path, capfd, files)
    assert status == 1, out
    assert "FAILED tests/test_soup_session.py::test_new_gap" in out


def test_an_entry_naming_a_test_upstream_does_not_have_fails_the_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    nodeid = next(iter(EXPECTED_FAILURES))
    path, name = nodeid.split("::")
    files = upstream_like()
    files[path] = files[path].replace(FAILING.format(name=name.removeprefix("test_")), "")
    status, out = run_made_up(tmp_path, capfd, files)
    assert status == pytest.ExitCode.USAGE_ERROR, out
    assert (
        f"conformance/expected_failures.py lists tests the upstream files do not contain:\n  {nodeid}" in out
    )


def test_upstream_xfail_marks_are_dropped_where_listed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = next(iter(UPSTREAM_XFAIL_DROPPED))
    files = upstream_like()
    files[path] = (
        "import pytest\npytestmark = pytest.mark.xfail(reason='upstream hedge')\n"
        + FAILING.format(name="tail_broken")
        + files[path]
    )
    status, out = run_made_up(tmp_path, capfd, files)
    assert status == 1, out
    assert f"FAILED {path}::test_tail_broken" in out


def test_a_hung_run_is_killed_and_reported(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    files = upstream_like()
    files["tests/test_soup_core.py"] += (
        "import threading\n" + "def test_hangs():\n    threading.Event().wait()\n"
    )
    workdir = extract_tests(make_sdist(tmp_path, files), tmp_path / "work")
    assert run_tests(workdir, timeout=5) == 124
    assert "ran over 5 s: killed" in capfd.readouterr().err


# --------------------------------------------------------------------------- fetching


@pytest.fixture
def no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pip find nothing, at once and offline: any download attempt fails."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.mark.usefixtures("no_index")
def test_a_cached_file_with_the_pinned_hash_is_used_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = make_sdist(tmp_path, upstream_like()).rename(tmp_path / conformance.SDIST_NAME)
    monkeypatch.setattr(conformance, "SDIST_SHA256", sha256_of(cached))
    assert fetch_sdist(tmp_path) == cached


@pytest.mark.usefixtures("no_index")
def test_a_cached_file_with_another_hash_is_not_used_and_a_failed_download_fails(tmp_path: Path) -> None:
    cached = make_sdist(tmp_path, upstream_like()).rename(tmp_path / conformance.SDIST_NAME)
    with pytest.raises(ConformanceSetupError, match="it fails rather than skips"):
        fetch_sdist(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [cached.name]  # no scratch left behind


@pytest.mark.usefixtures("no_index")
def test_python_m_conformance_fails_when_the_sdist_cannot_be_had(tmp_path: Path) -> None:
    # The real cache may hold the sdist: point the runner at an empty one through its module.
    code = (
        "import sys, conformance, conformance.__main__ as main;"
        f"conformance.CACHE_DIR = __import__('pathlib').Path({str(tmp_path)!r});"
        "sys.exit(main.main([]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=conformance.REPO_ROOT
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "conformance: FAILED to set up: cannot download nasdaq_protocols-1.3.0.tar.gz" in done.stderr


# --------------------------------------------------------------------------- the real thing


@pytest.mark.interop
def test_the_upstream_soup_tests_pass_on_this_package() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conformance"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=conformance.REPO_ROOT,
    )
    assert done.returncode == 0, (
        f"python -m conformance failed:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    )
