"""I/O hidden behind compute: the next item's input is read, and the previous item's output written, on a
background thread while the caller computes the current one.

Both are bounded: `read_ahead` holds at most `depth` items read ahead of the one being computed, and
`WriteBehind` at most `depth` writes outstanding (a submit waits for the oldest). Errors keep their order: a
failed read is raised when the caller reaches that item, a failed write at the next submit or at `flush`. Reading
and writing (zarr decoding and encoding, numpy) release the GIL, so on a GPU, or on a CPU with a core beside the
model's threads, their time disappears from the run's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(items: Iterable[T], read: Callable[[T], R], depth: int = 1) -> Iterator[tuple[T, R]]:
    """(item, read(item)) for each item in order, reading up to `depth` items ahead on one background thread."""
    if depth < 1:
        raise ValueError(f"read-ahead depth must be at least 1, got {depth}")
    pending: deque[tuple[T, Future[R]]] = deque()
    remaining = iter(items)
    pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")

    def submit_next() -> None:
        for item in remaining:
            pending.append((item, pool.submit(read, item)))
            return

    try:
        for _ in range(depth):
            submit_next()
        while pending:
            item, future = pending.popleft()
            value = future.result()
            submit_next()  # read while the caller computes on `value`
            yield item, value
    finally:  # the caller stopped early or a read failed: drop what was read ahead
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)


class WriteBehind:
    """Runs writes one at a time on a background thread, at most `depth` outstanding; thread-safe.

    `flush` waits for every write and raises the first error; `close` does so too and stops the thread."""

    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"write-behind depth must be at least 1, got {depth}")
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self._pending: deque[Future[Any]] = deque()
        self._lock = threading.Lock()

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            while self._pending and (len(self._pending) >= self.depth or self._pending[0].done()):
                self._pending.popleft().result()  # waits for the oldest; raises its error
            self._pending.append(self._pool.submit(write, *args))

    def flush(self) -> None:
        with self._lock:
            while self._pending:
                self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)
