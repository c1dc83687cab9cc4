"""Run the fuzz targets: ``python -m fuzz [--seconds N] [target ...]`` from the repository root.

Each target runs in its own process (libFuzzer exits the process when it stops) for ``--seconds``
seconds, starting from its seed corpus (``fuzz/corpus/<target>/``, never modified: new inputs go
to a scratch folder). The exit status is 0 when every target ran clean, 1 when one found a
failing input: its traceback is in the output and the input is saved under ``--artifacts``
(printed as hex too, so a CI log is enough to write the regression test).

Examples::

    python -m fuzz --seconds 60                  # every target, a minute each
    python -m fuzz --seconds 300 server_session  # one target, longer
    python -m fuzz --replay                      # just run the seed corpus through every target
    python -m fuzz --engine random --seconds 20  # no atheris: plain mutations

CI runs ``python -m fuzz --seconds 40`` (five targets, under four minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz import CORPUS_ROOT, TARGETS, corpus_files, load_target

#: libFuzzer flags per target: the decoder and the codec need long inputs to reach the limits.
_TARGET_FLAGS = {
    "decoder": ["-max_len=70000", "-len_control=200"],
    "core": ["-max_len=70000", "-len_control=200"],
    "server_session": ["-max_len=4096"],
    "walker": ["-max_len=70000", "-len_control=200"],
    "mold": ["-max_len=8192"],
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help=f"targets to run: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per target (default 60)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "random"),
        default="auto",
        help="atheris (libFuzzer), random (no coverage guidance), or auto: atheris when installed",
    )
    parser.add_argument("--artifacts", type=Path, help="where failing inputs are saved (default: a temp dir)")
    parser.add_argument("--replay", action="store_true", help="only run the seed corpus through the targets")
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    return arguments


def replay(targets: list[str]) -> int:
    """Run every seed input through its target in this process; return the number that failed."""
    failures = 0
    for name in targets:
        test_one_input = load_target(name)
        files = corpus_files(name)
        for path in files:
            try:
                test_one_input(path.read_bytes())
            except Exception as exc:
                failures += 1
                print(f"{name}: {path.name} FAILED: {exc!r}", flush=True)
        print(f"{name}: {len(files)} seed inputs replayed", flush=True)
    return failures


def run_target(name: str, seconds: float, engine: str, artifacts: Path) -> bool:
    """Fuzz one target in a child process; return True when it found nothing."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        command = [
            sys.executable,
            "-m",
            TARGETS[name],
            f"-max_total_time={max(1, round(seconds))}",
            "-timeout=20",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}{os.sep}{name}-",
            *_TARGET_FLAGS.get(name, []),
            scratch,
            str(CORPUS_ROOT / name),
        ]
        environment = dict(os.environ, FUZZ_ENGINE=engine)
        root = Path(__file__).resolve().parent.parent
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), environment.get("PYTHONPATH")]))
        started = time.monotonic()
        print(f"==> fuzz {name}: {seconds:g} s ({engine})", flush=True)
        result = subprocess.run(
            command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        output = result.stdout.decode(errors="replace")
        elapsed = time.monotonic() - started
    if result.returncode == 0:
        print(f"fuzz {name}: clean, {_summary(output)} in {elapsed:.0f} s", flush=True)
        return True
    print(output[-20000:], flush=True)
    print(f"fuzz {name}: FAILED (exit status {result.returncode}) after {elapsed:.0f} s", flush=True)
    for path in sorted(artifacts.glob(f"{name}-*")):
        data = path.read_bytes()
        print(f"fuzz {name}: failing input {path} ({len(data)} bytes): {data[:2048].hex()}", flush=True)
    return False


def _summary(output: str) -> str:
    done = re.findall(r"Done (\d+) runs", output) or re.findall(r"DONE (\d+) runs", output)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", output)
    runs = f"{int(done[-1]):,} runs" if done else "runs unknown"
    if coverage:
        runs += f", coverage {coverage[-1][0]} edges / {coverage[-1][1]} features"
    return runs


def main(argv: list[str] | None = None) -> int:
    arguments = _parse(argv)
    targets = arguments.targets or list(TARGETS)
    if arguments.replay:
        return 1 if replay(targets) else 0
    artifacts = arguments.artifacts or Path(tempfile.mkdtemp(prefix="fuzz-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = [
        name for name in targets if not run_target(name, arguments.seconds, arguments.engine, artifacts)
    ]
    if failed:
        print(f"fuzz: {', '.join(failed)} found failing inputs (saved in {artifacts})", flush=True)
        return 1
    print(f"fuzz: {len(targets)} targets clean", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
