"""The tiler behind VAEDecodeTiled / VAEEncodeTiled and ImageUpscaleWithModel: seam-free on functions
that act pixel by pixel, the blend weights as derived by hand, progress counts."""
import pytest
import torch
import torch.nn.functional as F

from nodes.sd.tiling import check_tiling, edge_ramp, three_way_tiled_map, tile_count, tile_starts, tiled_map


def test_tile_starts_step_by_tile_minus_overlap_and_the_last_may_be_short():
    assert tile_starts(8, 8, 0) == [0]
    assert tile_starts(8, 4, 0) == [0, 4]
    assert tile_starts(8, 4, 2) == [0, 2, 4]
    assert tile_starts(10, 4, 0) == [0, 4, 8]  # the third tile is 2 wide
    assert tile_count(10, 8, 4, 4, 2) == len(tile_starts(10, 4, 2)) * len(tile_starts(8, 4, 2))


def test_edge_ramp_by_hand():
    assert edge_ramp(6, 2).tolist() == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5]
    # length 3, feather 2: t=0 scales [0] and [2] by 1/2; t=1 scales [1] and [1] by 2/2 -> [0.5, 1, 0.5]
    assert edge_ramp(3, 2).tolist() == [0.5, 1.0, 0.5]
    assert edge_ramp(4, 4).tolist() == [1.0] * 4  # a feather as long as the tile: no ramp
    assert edge_ramp(4, 0).tolist() == [1.0] * 4


@pytest.mark.parametrize("overlap", [0, 2, 3])
def test_a_pixelwise_function_is_reproduced_exactly_seam_free(overlap):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 13, 11)

    def upscale(x):  # nearest 2x plus a per-pixel curve: any weighted mean of equal values is that value
        return F.interpolate(x, scale_factor=2, mode="nearest") ** 2

    tiled = tiled_map(image, upscale, tile=(5, 4), overlap=overlap, scale=2, out_channels=3)
    assert tiled.shape == (2, 3, 26, 22)
    torch.testing.assert_close(tiled, upscale(image), rtol=1e-6, atol=1e-6)


def test_overlaps_are_blended_with_the_ramp_weights():
    """Each tile outputs its own constant (its start column); where two tiles overlap the result is
    their ramp-weighted mean, computed here by hand."""
    image = torch.zeros(1, 1, 1, 6)
    starts = []

    def constant(x):
        starts.append(len(starts))
        return torch.full_like(x, float(len(starts) - 1))

    # width 6, tile 4, overlap 2: tiles at 0 and 2 (starts 0, 2), each ramped [0.5, 1, 1, 0.5]
    out = tiled_map(image, constant, tile=(1, 4), overlap=2, scale=1, out_channels=1)
    # columns 0,1: tile 0 only -> 0; 2: (0·1 + 1·0.5)/(1 + 0.5); 3: (0·0.5 + 1·1)/(0.5 + 1); 4,5: tile 1 -> 1
    expected = [0.0, 0.0, 0.5 / 1.5, 1.0 / 1.5, 1.0, 1.0]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected))


def test_three_way_tiling_averages_three_tilings_and_reports_every_tile(monkeypatch):
    events = []
    monkeypatch.setattr("nodegraph.progress.report_progress", lambda value, total, preview=None: events.append((value, total)))
    image = torch.rand(1, 2, 8, 8)
    shapes = []

    def record(x):
        shapes.append(tuple(x.shape[-2:]))
        return x * 3

    out = three_way_tiled_map(image, record, tile=4, overlap=0, scale=1, out_channels=2)
    torch.testing.assert_close(out, image * 3)
    # (8, 2) tiles: 1 x 4; (2, 8): 4 x 1; (4, 4): 2 x 2
    assert sorted(set(shapes)) == [(2, 8), (4, 4), (8, 2)] and len(shapes) == 12
    assert events[-1] == (12, 12)


def test_check_tiling_names_an_overlap_the_narrow_tiles_cannot_step_over():
    assert check_tiling((64, 64), 64, 0) is None
    assert check_tiling((64, 64), 64, 16) is None
    assert "overlap (32)" in check_tiling((128, 128), 64, 32)
    assert check_tiling((16, 16), 64, 32) is None  # everything fits in one tile: no stepping
