"""Threads that overlap a frame loop's I/O with its compute.

`Ahead` runs an iterator (a video decoder) on a thread of its own, a few items ahead of the loop;
`Behind` runs a function over the loop's results (drawing, encoding, writing files) on another, a
few items behind. PyAV, PyTorch and ONNX Runtime release the GIL in their heavy calls, so on a
machine with a free core decoding and encoding no longer wait for inference, nor it for them.

Both are bounded (a few items in flight, never a whole video), keep the order of the items, and
hand a worker's exception to the loop's thread as the same object, after the items that came
before it: the caller sees the same one-line error, at the same item, as without threads.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator

_END = object()
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Ahead:
    """Iterate `items` on a thread of its own, at most `depth` items ahead of the consumer.

    `waited` is the seconds the consumer spent waiting for an item (the producer was slower).
    `close()` stops the producer early: it closes the iterator in its own thread (a generator's
    `finally` runs there, e.g. closing a video file)."""

    def __init__(self, items: Iterator, depth: int = 4, name: str = "ahead") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as err:  # handed over, raised in the consumer's thread
            self._put(_Raised(err))
        else:
            self._put(_END)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Ahead:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        start = time.perf_counter()
        while True:
            try:
                item = self._queue.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # stopped by close()
                    self._done = True
                    raise StopIteration from None
        self.waited += time.perf_counter() - start
        if item is _END or isinstance(item, _Raised):
            self._done = True
            if item is _END:
                raise StopIteration
            raise item.error
        return item

    def close(self, wait: float | None = 1.0) -> None:
        """Stop the producer and wait for it (at most `wait` s: a live stream may block in a read;
        the thread is a daemon and ends with the process)."""
        self._done = True
        self._stop.set()
        self._thread.join(wait)


class Behind:
    """Call `work(item)` on a thread of its own for each item `put`, in order, at most `depth`
    items behind the caller.

    `waited` is the seconds `put` spent blocked (the worker was slower). The worker's first
    exception is raised by the next `put` or by `finish`; the items after it are dropped."""

    def __init__(self, work: Callable, depth: int = 4, name: str = "behind") -> None:
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._dropping = False
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is None and not self._dropping:
                try:
                    self._work(item)
                except BaseException as err:  # handed over, raised in the caller's thread
                    self._error = err

    def put(self, item) -> None:
        self._raise()
        start = time.perf_counter()
        while True:
            try:
                self._queue.put(item, timeout=_POLL)
                break
            except queue.Full:
                self._raise()
        self.waited += time.perf_counter() - start

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait until every item put is done; raise the worker's exception, if any. Interrupted
        (a second Ctrl-C), it drops the items not yet started but still waits for the one in hand,
        so that what the worker writes is never closed under it."""
        try:
            if self._thread.is_alive():
                self._queue.put(_END)
                self._thread.join()
        except BaseException:
            self._dropping = True
            self._thread.join()
            raise
        self._raise()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the same clean stop serves both."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (elsewhere: nothing changes,
    Python runs signal handlers only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
