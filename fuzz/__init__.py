"""Coverage-guided fuzzing of what reads bytes from the network (issue 8).

Each target is a module with ``test_one_input(data: bytes) -> None``. It returns normally for
every input the library handles as documented (including rejecting it with the documented error)
and raises, usually ``AssertionError``, when an invariant breaks: that is a bug.

=====================  =======================================================================
target                 what it drives
=====================  =======================================================================
``decoder``            ``SoupDecoder`` fed arbitrary bytes in arbitrary splits
                       (:mod:`fuzz.fuzz_decoder`)
``core``               ``SoupMessage.from_bytes`` / ``decode_payload`` per packet type
                       (:mod:`fuzz.fuzz_core`)
``server_session``     a ``SoupServerSession`` subclass, and ``SoupServer``'s own session, fed
                       random packet sequences over a fake transport, on a virtual clock
                       (:mod:`fuzz.fuzz_server_session`)
``walker``             the compiled packet walker against the pure-Python one, on arbitrary
                       bytes, positions, limits and sequence numbers (:mod:`fuzz.fuzz_walker`)
``mold``               the MoldUDP64 codec, packer and receiving core (``Sequencer``) on
                       arbitrary datagrams from three lines, on a clock (:mod:`fuzz.fuzz_mold`)
=====================  =======================================================================

Run them with ``python -m fuzz`` (see :mod:`fuzz.__main__`); each target is also runnable alone,
``python -m fuzz.fuzz_decoder [libFuzzer flags] [corpus dirs]``. The engine is atheris
(libFuzzer) when it is installed (``pip install -e '.[fuzz]'``); without it a plain mutation loop
over the seed corpus (``engine="random"``) keeps the same command working, with no coverage
guidance. Seed inputs live in ``fuzz/corpus/<target>/``; ``tests/test_fuzz_regressions.py`` runs
every one of them, and every crash found so far, through the targets on each test run.

Nothing here is imported by the library; this package needs the repository root on ``sys.path``
(run from there).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import os
import random
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CORPUS_ROOT",
    "TARGETS",
    "Input",
    "corpus_files",
    "load_target",
    "main",
    "mutate",
]

#: Target name -> module (importable from the repository root).
TARGETS: dict[str, str] = {
    "decoder": "fuzz.fuzz_decoder",
    "core": "fuzz.fuzz_core",
    "server_session": "fuzz.fuzz_server_session",
    "walker": "fuzz.fuzz_walker",
    "mold": "fuzz.fuzz_mold",
}

#: Seed inputs, one folder per target.
CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"

TestOneInput = Callable[[bytes], None]


def load_target(name: str) -> TestOneInput:
    """The ``test_one_input`` function of target ``name`` (a key of :data:`TARGETS`)."""
    module = importlib.import_module(TARGETS[name])
    function: TestOneInput = module.test_one_input
    return function


def corpus_files(name: str) -> list[Path]:
    """The seed inputs of target ``name``, sorted by file name."""
    folder = CORPUS_ROOT / name
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


class Input:
    """Reads fuzz bytes as a sequence of choices; running out reads as zeros (never raises).

    The same bytes always give the same choices, so a crash file replays exactly.
    """

    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def byte(self) -> int:
        """The next byte (0 when exhausted)."""
        if self.position >= len(self.data):
            return 0
        value = self.data[self.position]
        self.position += 1
        return value

    def below(self, limit: int) -> int:
        """A number in ``[0, limit)`` from one byte (two when ``limit`` exceeds 256)."""
        if limit <= 1:
            return 0
        value = self.byte()
        if limit > 256:
            value = (value << 8) | self.byte()
        return value % limit

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes (fewer when exhausted)."""
        chunk = self.data[self.position : self.position + count]
        self.position += len(chunk)
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def choice(self, options: tuple[object, ...] | list[object]) -> object:
        return options[self.below(len(options))]


# ------------------------------------------------------------------------------- engines


def main(name: str, test_one_input: TestOneInput, argv: list[str] | None = None) -> None:
    """Fuzz one target: ``python -m fuzz.fuzz_<name> [libFuzzer flags] [corpus dirs]``.

    With atheris installed (and ``FUZZ_ENGINE`` not ``random``) this is libFuzzer: it accepts
    libFuzzer's flags (``-max_total_time=60``, ``-runs=N``, ``-artifact_prefix=DIR/``) and writes
    new inputs into the first corpus folder. Otherwise the mutation loop of :func:`random_engine`
    understands ``-max_total_time``, ``-runs``, ``-seed`` and ``-artifact_prefix`` and reads the
    corpus folders. Either way the process exits 0 when no input failed and non-zero when one did
    (the input is saved as ``<artifact_prefix>crash-<sha1>``).
    """
    argv = list(sys.argv if argv is None else argv)
    engine = os.environ.get("FUZZ_ENGINE", "auto")
    if engine not in ("auto", "atheris", "random"):
        raise SystemExit(f"FUZZ_ENGINE must be auto, atheris or random, not {engine!r}")
    if engine != "random":
        try:
            import atheris
        except ImportError:
            if engine == "atheris":
                raise SystemExit(
                    "atheris is not installed: pip install -e '.[fuzz]' (or FUZZ_ENGINE=random)"
                ) from None
        else:
            # Instrument what is loaded now: the package under test and the target (imported
            # before main() runs). The standard library is left alone (atheris.instrument_all()
            # would take it too): asyncio's branches would only drown the signal.
            _instrument_loaded(atheris, ("nasdaq_protocols", "fuzz"))
            atheris.Setup(argv, test_one_input)
            atheris.Fuzz()
            return
    sys.exit(random_engine(name, test_one_input, argv))


def _instrument_loaded(atheris: object, prefixes: tuple[str, ...]) -> None:
    """Add coverage instrumentation to every loaded function of modules named ``prefixes...``."""
    instrument = atheris.instrument_func  # type: ignore[attr-defined]
    for value in gc.get_objects():
        if isinstance(value, types.FunctionType) and str(value.__module__).startswith(prefixes):
            with contextlib.suppress(Exception):  # a few code objects cannot be patched
                instrument(value)


def random_engine(name: str, test_one_input: TestOneInput, argv: list[str]) -> int:
    """A mutation loop without coverage guidance (when atheris is missing). Returns an exit code."""
    flags: dict[str, str] = {}
    folders: list[Path] = []
    for argument in argv[1:]:
        if argument.startswith("-") and "=" in argument:
            key, _, value = argument[1:].partition("=")
            flags[key] = value
        else:
            folders.append(Path(argument))
    seconds = float(flags.get("max_total_time", "10"))
    runs = int(flags.get("runs", "-1"))
    seed = int(flags.get("seed", str(int(time.time()))))
    max_len = int(flags.get("max_len", "4096"))
    prefix = flags.get("artifact_prefix", "./")
    seeds = [path.read_bytes() for folder in folders if folder.is_dir() for path in sorted(folder.iterdir())]
    seeds = [data for data in seeds if data] or [b""]
    generator = random.Random(seed)
    print(f"fuzz {name}: random engine (no atheris), seed {seed}, {len(seeds)} seed inputs", flush=True)
    started = time.monotonic()
    executions = 0
    for data in _inputs(seeds, generator, max_len):
        if runs >= 0 and executions >= runs:
            break
        if runs < 0 and time.monotonic() - started >= seconds:
            break
        executions += 1
        try:
            test_one_input(data)
        except Exception:
            traceback.print_exc()
            path = Path(f"{prefix}crash-{hashlib.sha1(data).hexdigest()}")
            path.write_bytes(data)
            print(f"fuzz {name}: input {executions} failed; saved to {path}", flush=True)
            return 1
    elapsed = time.monotonic() - started
    print(f"fuzz {name}: DONE {executions} runs in {elapsed:.1f} s, no failure", flush=True)
    return 0


def _inputs(seeds: list[bytes], generator: random.Random, max_len: int) -> Iterator[bytes]:
    yield from seeds  # every seed as it is first
    while True:
        data = generator.choice(seeds)
        for _ in range(generator.randint(1, 8)):
            data = mutate(data, generator, seeds)
        yield data[:max_len]


#: Values that tend to sit on boundaries of a 2-byte length field or a type byte.
_INTERESTING = [
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    ord("L"),
    ord("S"),
    ord("U"),
    ord("+"),
    ord("R"),
    ord("O"),
    ord(" "),
]


def mutate(data: bytes, generator: random.Random, others: list[bytes]) -> bytes:
    """One random edit of ``data``: flip, set, insert, delete, duplicate, splice or truncate."""
    buffer = bytearray(data)
    kind = generator.randrange(8)
    position = generator.randrange(len(buffer) + 1)
    if kind == 0 and buffer:
        buffer[min(position, len(buffer) - 1)] ^= 1 << generator.randrange(8)
    elif kind == 1 and buffer:
        buffer[min(position, len(buffer) - 1)] = generator.choice(_INTERESTING)
    elif kind == 2:
        buffer[position:position] = generator.randbytes(generator.randint(1, 16))
    elif kind == 3 and buffer:
        del buffer[position : position + generator.randint(1, 16)]
    elif kind == 4 and buffer:
        stop = min(len(buffer), position + generator.randint(1, 64))
        buffer[position:position] = buffer[position:stop] * generator.randint(1, 4)
    elif kind == 5:
        other = generator.choice(others)
        cut = generator.randrange(len(other) + 1)
        buffer[position:] = other[cut:]
    elif kind == 6:
        del buffer[position:]
    else:
        length = generator.randrange(0x10000)
        buffer[position:position] = bytes((length >> 8, length & 0xFF))
    return bytes(buffer)
