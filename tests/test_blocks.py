import numpy as np
import pytest

from unetflow.blocks import block_grid, blocks_of_group, group_shape, mirror_indices, read_mirrored, shard


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


def test_grid_is_computed_by_index_arithmetic_in_c_order():
    import itertools

    grid = block_grid((5, 17, 10), (2, 8, 8), (0, 3, 3), (2, 14, 14))
    naive = list(itertools.product(range(3), range(3), range(2)))
    assert [b.index for b in grid] == naive
    assert [grid.index(k) for k in range(len(grid))] == naive
    assert grid[-1] == grid.block((2, 2, 1)) and grid[-1].write == (slice(4, 5), slice(16, 17), slice(8, 10))
    part = shard(grid, 1, 4)
    assert len(part) == 5 and [b.index for b in part] == [naive[k] for k in range(1, 18, 4)]


def test_planning_a_terabyte_costs_what_one_job_costs():
    """A 2000 x 22400 x 22400 volume in 1 x 256 x 256 blocks: 15 million blocks, none of them listed."""
    import tracemalloc

    tracemalloc.start()
    grid = block_grid((2000, 22400, 22400), (1, 256, 256), (0, 92, 92), (1, 440, 440))
    mine = shard(grid, 9_999, 10_000)
    first, last = mine[0], mine[-1]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(grid) == 2000 * 88 * 88 and len(mine) == -(-(len(grid) - 9_999) // 10_000)
    assert first.index == grid.index(9_999) and last.index == grid.index(9_999 + (len(mine) - 1) * 10_000)
    assert peak < 1 << 20  # well under a megabyte: nothing grows with the volume


def test_records_are_kept_per_slab_and_counted_folder_by_folder(tmp_path):
    from unetflow.blocks import count_done, first_missing, is_done, record_done, start_records

    grid = block_grid((3, 4, 4), (1, 2, 2), (0, 0, 0), (1, 2, 2))
    start_records(tmp_path)
    for b in grid:
        if b.index != (2, 1, 0):
            record_done(tmp_path, b.index)
    assert count_done(tmp_path) == len(grid) - 1
    assert is_done(tmp_path, (0, 0, 0)) and not is_done(tmp_path, (2, 1, 0))
    assert first_missing(tmp_path, grid) == (2, 1, 0)
    assert len(list((tmp_path / ".unetflow_blocks").iterdir())) == 3  # one folder per z slab of blocks


def test_groups_of_blocks_grow_square_in_the_plane_then_in_z_within_their_size():
    # 1 x 256 x 256 blocks of 4 bytes per voxel in 64 MiB files: 16 x 16 blocks of one slice.
    assert group_shape((1, 256, 256), (2000, 22400, 22400), 4, 64 * 2**20) == (1, 4096, 4096)
    # A small volume is one file; a group never outgrows the volume (rounded up to whole blocks).
    assert group_shape((1, 256, 256), (16, 500, 300), 4, 64 * 2**20) == (16, 512, 512)
    # At least one block, however small the target.
    assert group_shape((2, 64, 64), (9, 99, 99), 4, 1) == (2, 64, 64)
    # Narrow y doubles before x: 1 x 8 x 32 blocks in 4 KiB groups of 1-byte voxels become 1 x 64 x 64.
    assert group_shape((1, 8, 32), (1, 1000, 1000), 1, 4096) == (1, 64, 64)


def test_the_blocks_of_groups_tile_the_grid_once():
    blocks = block_grid((5, 17, 10), (2, 8, 4), (0, 3, 3), (2, 14, 10))
    groups = block_grid((5, 17, 10), (4, 16, 8), (0, 0, 0), (4, 16, 8))
    seen = [i for g in groups for i in blocks_of_group(blocks, g)]
    assert sorted(seen) == sorted(b.index for b in blocks) and len(seen) == len(set(seen))
    for g in groups:
        for i in blocks_of_group(blocks, g):
            w = blocks.block(i).write
            assert all(gw.start <= bw.start and bw.stop <= gw.stop for gw, bw in zip(g.write, w, strict=True))
