import numpy as np
import pytest

from unetflow.augment import AugmentParams
from unetflow.training.data import Slices, TileSampler
from unetflow.training.sampling import HardTileOrder, TileDifficulty

FIXED = AugmentParams(flip=False, rotate=False, elastic_sigma=0, contrast=0, brightness=0)


def two_slices() -> Slices:
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(64, 64)).astype(np.float32) for _ in range(2)]
    targets = [(rng.random((64, 64)) > 0.5).astype(np.uint8) for _ in range(2)]
    return Slices(images, targets, [np.ones((64, 64), np.float32) for _ in range(2)])


def test_a_tile_loss_reaches_exactly_the_cells_its_output_covers():
    difficulty = TileDifficulty([(64, 64), (64, 64)], (8, 8), momentum=0.5)
    difficulty.record(1, (20, 20), (16, 16), 2.0)  # output rows/columns 12..27: cells 1..3
    covered = ~np.isnan(difficulty.grids[1])
    expected = np.zeros((8, 8), bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(covered, expected)
    assert np.isnan(difficulty.grids[0]).all()
    difficulty.record(1, (20, 20), (16, 16), 4.0)  # a running average, not the last value
    assert difficulty.grids[1][2, 2] == pytest.approx(3.0)
    difficulty.record(1, (0, 63), (16, 16), 1.0)  # a window over the corner stays inside the grid
    assert difficulty.grids[1][0, 7] == 1.0
    difficulty.record(0, (5, 5), (8, 8), float("nan"))  # a non-finite loss is not recorded
    assert np.isnan(difficulty.grids[0]).all()


def test_draws_come_from_the_hardest_cells():
    difficulty = TileDifficulty([(64, 64), (64, 64)], (8, 8))
    losses = np.random.default_rng(2).permutation(128).reshape(2, 8, 8) / 128
    for item in range(2):
        for gy in range(8):
            for gx in range(8):
                difficulty.record(item, (gy * 8 + 4, gx * 8 + 4), (8, 8), float(losses[item, gy, gx]))
    rng = np.random.default_rng(0)
    draws = [difficulty.draw(rng, 0.25) for _ in range(2000)]
    cells = {(item, c[0] // 8, c[1] // 8) for item, c in draws}
    hardest = {tuple(int(v) for v in np.unravel_index(j, losses.shape)) for j in np.argsort(losses, axis=None)[-32:]}
    assert cells == hardest  # all of the hardest quarter, nothing else
    assert len({c for _, c in draws}) > 1000  # centres spread over the cells' pixels
    with pytest.raises(ValueError, match="train.hard_tile_top"):
        difficulty.draw(rng, 0.0)


def test_cells_not_yet_seen_come_first():
    difficulty = TileDifficulty([(32, 32), (32, 32)], (8, 8))
    rng = np.random.default_rng(1)
    before = [difficulty.draw(rng, 0.25)[0] for _ in range(400)]
    assert 150 < sum(before) < 250  # uniform over both items before any loss is recorded
    for gy in range(4):
        for gx in range(4):
            difficulty.record(0, (gy * 8 + 4, gx * 8 + 4), (8, 8), 10.0)
    assert all(difficulty.draw(rng, 0.25)[0] == 1 for _ in range(100))  # however high the losses seen
    for gy in range(4):
        for gx in range(3):
            difficulty.record(1, (gy * 8 + 4, gx * 8 + 4), (8, 8), 0.1)
    # 4 cells unseen and 8 the hardest quarter: the 4 unseen and the 4 hardest seen
    drawn = {(item, c[0] // 8, c[1] // 8) for item, c in (difficulty.draw(rng, 0.25) for _ in range(400))}
    assert {cell for cell in drawn if cell[0] == 1} == {(1, gy, 3) for gy in range(4)}
    assert len(drawn) == 8


def test_state_round_trip_and_mismatch():
    difficulty = TileDifficulty([(64, 64)], (8, 8))
    difficulty.record(0, (30, 30), (16, 16), 1.5)
    copy = TileDifficulty([(64, 64)], (8, 8))
    copy.load_state_dict(difficulty.state_dict())
    np.testing.assert_array_equal(copy.grids[0], difficulty.grids[0])
    with pytest.raises(ValueError, match="does not match"):
        TileDifficulty([(64, 64)], (16, 16)).load_state_dict(difficulty.state_dict())
    with pytest.raises(ValueError, match="cell sides"):
        TileDifficulty([(64, 64)], (0, 8))


def test_order_places_tiles_where_the_loss_is_high():
    tiles = TileSampler(two_slices(), (24, 24), (8, 8), FIXED, seed=3, length=50)
    difficulty = TileDifficulty([(64, 64), (64, 64)], (8, 8))
    uniform = list(HardTileOrder(tiles, difficulty, 0.0, 0.1, 3, 0, 50))
    assert uniform == [(i, *tiles.uniform_position(i)) for i in range(50)]
    assert tiles[7][0].equal(tiles[uniform[7]][0])  # an int and its tuple: the same tile

    for y in range(4, 64, 8):
        for x in range(4, 64, 8):
            difficulty.record(0, (y, x), (8, 8), 1e-4)
            difficulty.record(1, (y, x), (8, 8), 1e-4)
    difficulty.record(0, (60, 60), (8, 8), 1.0)
    order = HardTileOrder(tiles, difficulty, 1.0, 0.005, 3, 10, 30)
    placed = list(order)
    assert len(placed) == len(order) == 20 and [p[0] for p in placed] == list(range(10, 30))
    assert all(item == 0 and min(c) >= 56 for _, item, c in placed)  # the one hardest cell (0.5% of 128, rounded up)
    assert set(order.positions) == set(range(10, 30))
    order.record(10, (8, 8), 5.0)
    assert 10 not in order.positions
    with pytest.raises(ValueError, match="train.hard_tile_share"):
        HardTileOrder(tiles, difficulty, 1.5, 0.1, 3, 0, 1)
    with pytest.raises(ValueError, match="train.hard_tile_top"):
        HardTileOrder(tiles, difficulty, 0.5, 1.5, 3, 0, 1)


def test_a_placed_tile_is_centred_where_it_was_placed():
    data = two_slices()
    tiles = TileSampler(data, (24, 24), (8, 8), FIXED, seed=0, length=4)
    image, target, weight = tiles[(2, 1, (30, 40))]
    np.testing.assert_array_equal(image[0].numpy(), data.images[1][18:42, 28:52])
    np.testing.assert_array_equal(target.numpy(), data.targets[1][26:34, 36:44])
    assert weight.shape == (8, 8)
