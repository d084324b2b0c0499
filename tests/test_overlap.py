"""The threads that overlap a frame loop's I/O with its compute keep the order, stay bounded, and
hand a worker's error to the loop as the same object after the items before it."""

from __future__ import annotations

import threading

import pytest

from ganforge.errors import DataError
from ganforge.overlap import Ahead, Behind


def test_ahead_keeps_order_stays_bounded_and_raises_after_the_items_before():
    produced = []

    def numbers():
        for i in range(20):
            produced.append(i)
            yield i
        raise DataError("stopped at 20")

    ahead = Ahead(numbers(), depth=3)
    got = []
    with pytest.raises(DataError, match="stopped at 20"):
        for item in ahead:
            got.append(item)
            # at most `depth` items queued plus the one the producer holds: never the whole source
            assert len(produced) <= len(got) + 3 + 1
    assert got == list(range(20))
    assert list(ahead) == []  # ended: nothing more, no second raise


def test_ahead_close_stops_the_producer_and_closes_its_iterator_in_its_thread():
    where = {}

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            where["closed in"] = threading.current_thread().name

    ahead = Ahead(endless(), depth=2, name="decode")
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close(wait=None)
    assert where == {"closed in": "decode"}
    assert list(ahead) == []


def test_behind_works_in_order_and_raises_the_workers_error_at_the_next_put_or_finish():
    done = []
    error = OSError(28, "No space left on device")

    def work(item):
        if item == 5:
            raise error
        done.append(item)

    behind = Behind(work, depth=2)
    with pytest.raises(OSError) as raised:
        for i in range(1000):  # the error stops the caller long before the end
            behind.put(i)
        behind.finish()
    assert raised.value is error
    assert done == [0, 1, 2, 3, 4]  # in order, and nothing after the failed item
    with pytest.raises(OSError):
        behind.finish()  # still reported to a caller that only finishes


def test_behind_finish_waits_for_every_item():
    done = []
    behind = Behind(done.append, depth=1)
    for i in range(50):
        behind.put(i)
    behind.finish()
    assert done == list(range(50))
