import numpy as np
import pytest

from unetflow.blocks import block_grid, mirror_indices, read_mirrored, shard


def test_mirror_indices_match_numpy_reflect():
    for size in (1, 2, 5, 9):
        data = np.arange(size)
        for pad in (0, 3, 11):
            expected = np.pad(data, pad, mode="reflect") if size > 1 else np.zeros(size + 2 * pad, int)
            np.testing.assert_array_equal(data[mirror_indices(-pad, size + pad, size)], expected)


def test_read_mirrored_region():
    a = np.arange(5 * 6).reshape(5, 6)
    got = read_mirrored(a, (slice(-2, 4), slice(3, 9)))
    np.testing.assert_array_equal(got, np.pad(a, 3, mode="reflect")[1:7, 6:12])


def test_grid_covers_volume_once():
    blocks = block_grid((5, 17, 10), (2, 8, 8), (0, 3, 3), (2, 14, 14))
    covered = np.zeros((5, 17, 10), int)
    for b in blocks:
        covered[b.write] += 1
        assert all(r.start == w.start - c for r, w, c in zip(b.read, b.write, (0, 3, 3), strict=True))
        assert [r.stop - r.start for r in b.read] == [2, 14, 14]
    assert np.all(covered == 1)
    assert len(blocks) == 3 * 3 * 2


def test_shards_partition_blocks():
    blocks = block_grid((4, 4), (1, 1), (0, 0), (1, 1))
    parts = [shard(blocks, i, 3) for i in range(3)]
    assert sorted(b.index for p in parts for b in p) == sorted(b.index for b in blocks)
    with pytest.raises(ValueError, match="3/3"):
        shard(blocks, 3, 3)
