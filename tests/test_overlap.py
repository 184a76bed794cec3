"""Reading ahead and writing behind (`unetflow.overlap`): order, bounds, overlap and errors."""

from __future__ import annotations

import threading

import pytest

from unetflow.overlap import WriteBehind, read_ahead

WAIT = 10  # seconds an event may take on a loaded machine; only reached when a test fails


def test_read_ahead_yields_every_item_in_order():
    assert list(read_ahead(range(7), lambda i: i * i)) == [(i, i * i) for i in range(7)]
    assert list(read_ahead([], lambda i: i)) == []
    assert list(read_ahead(range(3), str, depth=5)) == [(0, "0"), (1, "1"), (2, "2")]


def test_the_next_item_is_read_while_the_current_one_is_computed_and_no_further():
    started = {i: threading.Event() for i in range(5)}

    def read(i):
        started[i].set()
        return i

    items = read_ahead(range(5), read, depth=1)
    item, _ = next(items)
    assert item == 0
    assert started[1].wait(WAIT), "item 1 was not read while item 0 was being computed"
    assert not started[2].wait(0.3), "read more than one item ahead"
    assert [i for i, _ in items] == [1, 2, 3, 4]


def test_a_failed_read_is_raised_when_its_item_is_reached():
    def read(i):
        if i == 2:
            raise ValueError("item 2 is damaged")
        return i

    seen = []
    with pytest.raises(ValueError, match="item 2 is damaged"):
        for item, _ in read_ahead(range(5), read):
            seen.append(item)
    assert seen == [0, 1]


def test_stopping_early_leaves_no_read_running():
    read = []
    for item, _ in read_ahead(range(100), read.append, depth=2):
        if item == 3:
            break
    threading_names = [t.name for t in threading.enumerate()]
    assert not any(name.startswith("read-ahead") for name in threading_names)
    assert len(read) <= 6


def test_writes_run_behind_the_caller_in_order_and_at_most_depth_outstanding():
    gate, done, written = threading.Event(), threading.Event(), []
    writer = WriteBehind(depth=1)
    writer.submit(lambda: (gate.wait(WAIT), written.append(1)))
    assert written == [], "submit waited for the write"

    def second():
        writer.submit(written.append, 2)
        done.set()

    threading.Thread(target=second).start()
    assert not done.wait(0.3), "a second write was queued while the first was outstanding (depth 1)"
    gate.set()
    assert done.wait(WAIT)
    writer.close()
    assert written == [1, 2]


def test_a_failed_write_is_raised_at_the_next_submit_or_at_flush():
    def fail():
        raise OSError("disk full")

    writer = WriteBehind(depth=1)
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.submit(lambda: None)
    writer.close()
    writer = WriteBehind(depth=2)
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    writer.close()


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth"):
        WriteBehind(0)
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead(range(3), str, depth=0))
