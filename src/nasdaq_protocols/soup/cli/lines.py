"""Standard input as lines, for the commands that publish it (``serve --stdin``, ``publish``).

What belongs here: reading standard input without blocking the event loop, a batch of lines at
a time, whatever it is (a file, a pipe, a terminal).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator

__all__ = ["stdin_lines"]


async def stdin_lines(batch_size: int = 1000) -> AsyncIterator[list[bytes]]:
    """Batches of standard input's lines, without ``\\n`` (or ``\\r\\n``), as they arrive.

    A daemon thread reads, so that files, pipes and terminals all work and a stop never waits
    for a read to return. The last line needs no newline.

    Args:
        batch_size: the most lines in one batch.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(16)  # chunks read ahead at most: the reader waits for the loop
    descriptor = sys.stdin.buffer.fileno()

    def read() -> None:
        while True:
            try:
                chunk = os.read(descriptor, 1 << 16)
            except OSError:
                chunk = b""
            room.acquire()
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:
                return  # the command is ending (its loop closed): nobody reads any more
            if not chunk:
                return

    threading.Thread(target=read, name="soup-stdin", daemon=True).start()
    rest = b""
    while True:
        chunk = await chunks.get()
        room.release()
        if not chunk:
            if rest:
                yield [rest[:-1] if rest.endswith(b"\r") else rest]
            return
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        for start in range(0, len(lines), batch_size):
            yield lines[start : start + batch_size]
