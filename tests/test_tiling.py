"""InternVL dynamic tiling: reference vectors, parity with transformers, modes, config, loading."""

from __future__ import annotations

import json
import multiprocessing
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GotOcr2ImageProcessorPil

import model.tiling as tiling
from model.tiling import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    ImageLoadError,
    TilingConfig,
    as_rgb,
    candidate_grids,
    count_tiles,
    load_image,
    normalize,
    preprocess_image,
    split_into_tiles,
    tile_grid,
)
from tests import internvl_tiling_rule as rule

# internvl.md §1 test vectors: (W, H) -> (grid, tiles) at max 6 and at max 12, thumbnail on.
# Transcribed from the documented table; `python -m tests.internvl_tiling_rule` regenerates it from an
# independent restatement of InternVL's rule, and test_reference_table_matches_the_rule checks both agree.
REFERENCE = [
    ((448, 448), (1, 1), 1, (1, 1), 1),
    ((500, 500), (1, 1), 1, (1, 1), 1),
    ((224, 224), (1, 1), 1, (1, 1), 1),
    ((1000, 1000), (2, 2), 5, (3, 3), 10),
    ((800, 600), (3, 2), 7, (4, 3), 13),
    ((640, 480), (3, 2), 7, (4, 3), 13),
    ((1024, 768), (3, 2), 7, (4, 3), 13),
    ((1920, 1080), (2, 1), 3, (4, 2), 9),
    ((1600, 900), (2, 1), 3, (4, 2), 9),
    ((2688, 896), (3, 1), 4, (6, 2), 13),
    ((100, 1000), (1, 6), 7, (1, 10), 11),
]
REFERENCE_SIZES = [r[0] for r in REFERENCE]


def _random_sizes(n: int = 30, seed: int = 1234) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    sizes = [(1, 1), (1, 4000), (4000, 1), (3, 700), (2500, 40), (7, 9), (13, 5)]
    while len(sizes) < n:
        w, h = rng.randint(16, 3000), rng.randint(16, 3000)
        if rng.random() < 0.3:  # extreme aspect ratio
            squash = rng.randint(5, 40)
            w, h = (w, max(1, w // squash)) if rng.random() < 0.5 else (max(1, h // squash), h)
        sizes.append((w, h))
    return sizes


RANDOM_SIZES = _random_sizes()


def _noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def _processor(
    max_tiles: int = 12,
    tile_size: int = 448,
    crop: bool = True,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> GotOcr2ImageProcessorPil:
    return GotOcr2ImageProcessorPil(
        size={"height": tile_size, "width": tile_size},
        crop_to_patches=crop,
        min_patches=1,
        max_patches=max_tiles,
        image_mean=mean,
        image_std=std,
        resample=Image.Resampling.BICUBIC,
    )


def _assert_identical(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit-for-bit equality (the README's promise), with the size of any difference in the message."""
    assert ours.dtype == expected.dtype == torch.float32
    assert ours.shape == expected.shape
    if not torch.equal(ours, expected):
        diff = (ours - expected).abs()
        pytest.fail(
            f"not bit-identical: {int((diff > 0).sum())} of {diff.numel()} values differ, "
            f"max abs diff {float(diff.max()):.3g}"
        )


# --- reference vectors and candidate order ---------------------------------------------------


def test_candidate_order_max6_matches_internvl() -> None:
    assert candidate_grids(1, 6) == [
        (1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4),
        (2, 2), (1, 5), (5, 1), (6, 1), (2, 3), (1, 6), (3, 2),
    ]  # fmt: skip


def test_candidate_order_max12() -> None:
    grids = candidate_grids(1, 12)
    assert len(grids) == 35
    assert grids[:8] == [(1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (2, 2), (4, 1), (1, 4)]
    assert grids[-5:] == [(3, 4), (4, 3), (1, 12), (6, 2), (2, 6)]
    products = [c * r for c, r in grids]
    assert products == sorted(products)
    assert set(grids) == {(c, r) for c in range(1, 13) for r in range(1, 13) if c * r <= 12}


def test_candidate_grids_respects_min_and_returns_copy() -> None:
    grids = candidate_grids(3, 4)
    assert all(3 <= c * r <= 4 for c, r in grids) and len(grids) == 5
    grids.clear()
    assert len(candidate_grids(3, 4)) == 5


def test_rule_reproduces_the_documented_candidate_orders() -> None:
    assert rule.check_documented_orders() == []


def test_reference_table_matches_the_rule() -> None:
    # The table is the documented one, and the independent rule derives the same rows: a wrong entry
    # here, or a wrong rule there, fails.
    assert REFERENCE_SIZES == rule.DOCUMENTED_SIZES
    assert REFERENCE == [rule.reference_row(size) for size in REFERENCE_SIZES]


def test_candidate_order_matches_the_rule_for_every_range() -> None:
    for max_tiles in range(1, 41):
        for min_tiles in range(1, max_tiles + 1):
            assert candidate_grids(min_tiles, max_tiles) == rule.candidates(min_tiles, max_tiles), (
                min_tiles,
                max_tiles,
            )


def _rule_sweep_sizes() -> list[tuple[int, int]]:
    # Every size up to 48x48, exact multiples of every max-12 grid's ratio (where ties happen) at
    # several scales around the area thresholds, and the random sizes with their extreme ratios.
    sizes = [(w, h) for w in range(1, 49) for h in range(1, 49)]
    for cols, rows in rule.candidates(1, 12):
        sizes += [(cols * t, rows * t) for t in (1, 7, 50, 100, 149, 150, 151, 224, 225, 300, 317)]
    return sizes + RANDOM_SIZES


@pytest.mark.parametrize(
    ("min_tiles", "max_tiles", "tile_size"),
    [(1, 12, 448), (1, 6, 448), (1, 12, 16), (1, 6, 16), (2, 9, 16), (3, 4, 448), (1, 1, 448)],
)
def test_tile_grid_matches_the_rule(min_tiles: int, max_tiles: int, tile_size: int) -> None:
    for w, h in _rule_sweep_sizes():
        expected = rule.grid(w, h, min_tiles, max_tiles, tile_size)
        assert tile_grid(w, h, min_tiles, max_tiles, tile_size) == expected, (w, h)
        config = TilingConfig(tile_size=tile_size, min_tiles=min_tiles, max_tiles=max_tiles)
        assert count_tiles(w, h, config) == rule.tiles(w, h, min_tiles, max_tiles, tile_size)


@pytest.mark.parametrize(("size", "grid6", "tiles6", "grid12", "tiles12"), REFERENCE)
def test_reference_vectors(size, grid6, tiles6, grid12, tiles12) -> None:
    w, h = size
    assert tile_grid(w, h, 1, 6) == grid6
    assert tile_grid(w, h, 1, 12) == grid12
    assert count_tiles(w, h, TilingConfig(max_tiles=6)) == tiles6
    assert count_tiles(w, h, TilingConfig(max_tiles=12)) == tiles12


def test_small_images_are_upscaled_to_the_closest_ratio() -> None:
    # A strictly closer ratio wins regardless of area: 64x48 still gets 4x3 at max 12.
    assert tile_grid(64, 48) == (4, 3)
    assert len(split_into_tiles(_noise(64, 48), TilingConfig())) == 13


def test_tile_grid_rejects_empty_image() -> None:
    with pytest.raises(ValueError):
        tile_grid(0, 10)


# --- parity with transformers' GotOcr2ImageProcessorPil ----------------------------------------


@pytest.mark.parametrize("max_tiles", [12, 6, 4, 2])
def test_tile_count_parity_with_transformers(max_tiles: int) -> None:
    proc = _processor(max_tiles)
    config = TilingConfig(max_tiles=max_tiles)
    kwargs = {"max_patches": max_tiles, "crop_to_patches": True}
    for w, h in REFERENCE_SIZES + RANDOM_SIZES:
        expected = proc.get_number_of_image_patches(h, w, kwargs)
        assert count_tiles(w, h, config) == expected, (w, h)


@pytest.mark.parametrize(
    ("size", "max_tiles"),
    [((2688, 896), 12), ((640, 480), 4), ((300, 1000), 4), ((1000, 1000), 4), ((20, 15), 4)],
)
def test_pixel_parity_with_transformers(size: tuple[int, int], max_tiles: int) -> None:
    image = _noise(*size, seed=size[0])
    expected = _processor(max_tiles)(image, return_tensors="pt")
    ours = preprocess_image(image, TilingConfig(max_tiles=max_tiles))
    assert int(expected["num_patches"][0]) == ours.shape[0]
    _assert_identical(ours, expected["pixel_values"])


@pytest.mark.parametrize(("size", "n_tiles"), [((448, 448), 1), ((1600, 900), 9), ((640, 480), 13), ((2688, 896), 13)])
def test_pixel_parity_at_the_benchmarked_sizes(size: tuple[int, int], n_tiles: int, monkeypatch) -> None:
    # bench/bench_tiling.py's images: 1, 9 and 13 tiles and the stitched driving layout, on one thread and on
    # three (each colour plane resized and gathered in its own thread).
    image = _noise(*size, seed=size[1])
    expected = _processor(12)(image, return_tensors="pt")["pixel_values"]
    assert expected.shape[0] == n_tiles
    for threads in (1, 3):
        monkeypatch.setattr(tiling, "_threads", lambda threads=threads: threads)
        _assert_identical(preprocess_image(image, TilingConfig(max_tiles=12)), expected)


@pytest.mark.parametrize("size", [(50, 6000), (30, 4000)])
def test_pixel_parity_for_a_tall_strip_on_threads(size: tuple[int, int], monkeypatch) -> None:
    # PIL resizes a shrinking strip over 100x taller than wide vertically first; the threaded bands went
    # horizontal first, and 30 % of a 50x6000 image's values differed from transformers'
    image = _noise(*size, seed=7)
    expected = _processor(12)(image, return_tensors="pt")["pixel_values"]
    for threads in (1, 3):
        monkeypatch.setattr(tiling, "_threads", lambda threads=threads: threads)
        _assert_identical(preprocess_image(image, TilingConfig(max_tiles=12)), expected)


def test_a_task_waits_for_the_tasks_it_reads() -> None:
    # A resize's vertical bands read the intermediate its horizontal bands write, and may run on the other lane
    # while those are still running: the reader must wait for the writer's event, not only come later in order.
    import threading
    import time

    written, ready = [], threading.Event()

    def write() -> None:
        time.sleep(0.2)  # long enough for the helper lane to take the reader meanwhile
        written.append(1)

    seen = []
    tiling._run_lanes([write, lambda: seen.append(list(written))], 2, after=[None, ready], done=[ready.set, None])
    assert seen == [[1]]


def test_a_failing_task_does_not_leave_its_reader_waiting() -> None:
    import threading

    ready = threading.Event()

    def fail() -> None:
        raise OSError("decoder broke")

    errors = []

    def run() -> None:
        try:
            tiling._run_lanes([fail, lambda: None], 2, after=[None, ready], done=[ready.set, None])
        except OSError as err:
            errors.append(str(err))

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "a lane waits forever for a task that failed"
    assert errors == ["decoder broke"]


def _preprocess_into(image: Image.Image, config: TilingConfig, queue) -> None:
    queue.put(preprocess_image(image, config).numpy())


def test_preprocess_in_a_forked_child_after_the_parent_used_threads(monkeypatch) -> None:
    # A DataLoader worker forked from a process whose tiling threads exist has none of those threads.
    monkeypatch.setattr(tiling, "_threads", lambda: 2)
    image, config = _noise(900, 600), TilingConfig(tile_size=64)
    expected = preprocess_image(image, config)
    assert tiling._pool is not None  # the parent's pool exists when the child is forked
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_preprocess_into, args=(image, config, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    assert torch.equal(torch.from_numpy(got), expected)


def test_pixel_parity_many_sizes_small_tiles() -> None:
    # Small tiles keep this fast while exercising the grid choice, resize, crop and thumbnail
    # on every random size, including extreme aspect ratios and 1x1; an odd tile size takes the
    # one-pixel gather (pixel pairs need an even width).
    for tile_size, max_tiles in ((28, 12), (28, 6), (27, 12)):
        proc = _processor(max_tiles, tile_size=tile_size)
        config = TilingConfig(tile_size=tile_size, max_tiles=max_tiles)
        for i, (w, h) in enumerate(RANDOM_SIZES):
            image = _noise(min(w, 600), min(h, 600), seed=i)  # cap decode cost, keep the shape
            expected = proc(image, return_tensors="pt")["pixel_values"]
            ours = preprocess_image(image, config)
            assert ours.shape == expected.shape, (image.size, max_tiles)
            _assert_identical(ours, expected)


def test_grayscale_input_parity_with_transformers() -> None:
    image = _noise(500, 300, mode="L")
    expected = _processor(4)(image, return_tensors="pt")["pixel_values"]
    _assert_identical(preprocess_image(image, TilingConfig(max_tiles=4)), expected)


def test_resize_mode_clip_stats_parity_with_transformers() -> None:
    image = _noise(333, 517)
    proc = _processor(crop=False, mean=CLIP_MEAN, std=CLIP_STD)
    expected = proc(image, return_tensors="pt")["pixel_values"]
    config = TilingConfig(mode="resize", mean=CLIP_MEAN, std=CLIP_STD)
    _assert_identical(preprocess_image(image, config), expected)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (336, 336), (337, 1001), (1000, 17), (200, 100),
                                  (1600, 900), (3001, 2999)])
def test_crop_mode_parity_with_clip_image_processor(size: tuple[int, int], monkeypatch) -> None:
    """MobileVLM without padding: CLIPImageProcessor's shortest-edge resize and centre crop, bit for bit, on one
    thread and on three (the centred tile does not start on a multiple of the tile size)."""
    from transformers import CLIPImageProcessorPil

    image = _noise(*size, seed=size[0])
    proc = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, resample=3,
                                 do_center_crop=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    expected = proc(images=[image], return_tensors="pt")["pixel_values"]
    config = TilingConfig(tile_size=336, max_tiles=1, thumbnail=False, mode="crop", mean=CLIP_MEAN, std=CLIP_STD)
    for threads in (1, 3):
        monkeypatch.setattr(tiling, "_threads", lambda threads=threads: threads)
        _assert_identical(preprocess_image(image, config), expected)
    assert count_tiles(*size, config) == 1 and split_into_tiles(image, config)[0].size == (336, 336)


@pytest.mark.parametrize(
    ("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), (CLIP_MEAN, CLIP_STD), (SIGLIP_MEAN, SIGLIP_STD)]
)
def test_every_uint8_value_normalises_bit_identically(mean, std) -> None:
    # A 16x16 tile holding all 256 values in each channel (in different orders), so the normalisation of
    # every possible pixel value is compared with transformers' float64-rescale / float32-normalise.
    values = np.arange(256, dtype=np.uint8)
    arr = np.stack([values, values[::-1], np.roll(values, 77)], axis=-1).reshape(16, 16, 3)
    image = Image.fromarray(arr)
    expected = _processor(crop=False, tile_size=16, mean=mean, std=std)(image, return_tensors="pt")
    ours = preprocess_image(image, TilingConfig(tile_size=16, mode="resize", mean=mean, std=std))
    assert all(len(torch.unique(ours[0, c])) == 256 for c in range(3))  # the resize kept every value
    _assert_identical(ours, expected["pixel_values"])


# --- tiling behaviour ----------------------------------------------------------------------------


def test_tiles_are_row_major_and_thumbnail_last() -> None:
    # 2 cols x 3 rows of solid 8x8 blocks; the grid matches exactly, so the resize is a no-op.
    colours = [(10 * k, 255 - 10 * k, 3 * k) for k in range(6)]
    arr = np.zeros((24, 16, 3), dtype=np.uint8)
    for k, colour in enumerate(colours):
        r, c = divmod(k, 2)
        arr[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = colour
    config = TilingConfig(tile_size=8, max_tiles=6)
    tiles = split_into_tiles(Image.fromarray(arr), config)
    assert tile_grid(16, 24, 1, 6) == (2, 3)
    assert len(tiles) == 7 == count_tiles(16, 24, config)
    for k, colour in enumerate(colours):
        assert tiles[k].size == (8, 8) and tiles[k].mode == "RGB"
        assert np.all(np.asarray(tiles[k]) == colour), k
    thumb = np.asarray(tiles[6])
    assert thumb.shape == (8, 8, 3) and len(np.unique(thumb.reshape(-1, 3), axis=0)) > 1


@pytest.mark.parametrize("size", [(448, 448), (224, 224), (500, 500), (30, 31)])
def test_single_tile_never_gets_thumbnail(size: tuple[int, int]) -> None:
    config = TilingConfig(thumbnail=True)
    assert count_tiles(*size, config) == 1
    assert len(split_into_tiles(_noise(*size), config)) == 1


def test_max_tiles_one_gives_single_tile() -> None:
    config = TilingConfig(max_tiles=1)
    assert count_tiles(2688, 896, config) == 1
    assert preprocess_image(_noise(300, 100), config).shape == (1, 3, 448, 448)


def test_thumbnail_off() -> None:
    config = TilingConfig(thumbnail=False, tile_size=32)
    image = _noise(640, 480)
    tiles = split_into_tiles(image, config)
    assert len(tiles) == 12 == count_tiles(640, 480, config)
    on = split_into_tiles(image, TilingConfig(tile_size=32))
    assert len(on) == 13
    for off_tile, on_tile in zip(tiles, on[:12], strict=True):
        assert np.array_equal(np.asarray(off_tile), np.asarray(on_tile))


@pytest.mark.parametrize(
    "config",
    [
        TilingConfig(tile_size=32),
        TilingConfig(tile_size=32, thumbnail=False, max_tiles=6),
        TilingConfig(tile_size=32, mode="pad", mean=CLIP_MEAN, std=CLIP_STD),
        TilingConfig(tile_size=32, mode="resize", mean=SIGLIP_MEAN, std=SIGLIP_STD),
        TilingConfig(tile_size=32, mode="crop", mean=CLIP_MEAN, std=CLIP_STD),
        TilingConfig(tile_size=31, mode="pad"),
    ],
)
def test_preprocess_equals_split_then_normalize(config: TilingConfig) -> None:
    for size in [(640, 480), (100, 1000), (33, 33), (1, 1)]:
        image = _noise(*size, seed=sum(size), mode="RGBA")
        ours = preprocess_image(image, config)
        reference = normalize(split_into_tiles(image, config), config.mean, config.std)
        assert ours.shape == (count_tiles(*size, config), 3, config.tile_size, config.tile_size)
        assert torch.equal(ours, reference)


def test_rgba_drops_alpha_like_internvl() -> None:
    # InternVL calls convert("RGB"): alpha is discarded, not composited onto white.
    rgba = _noise(100, 60, mode="RGBA")
    rgb = Image.fromarray(np.asarray(rgba)[..., :3])
    config = TilingConfig(tile_size=16)
    assert torch.equal(preprocess_image(rgba, config), preprocess_image(rgb, config))


@pytest.mark.parametrize("mode", ["LA", "La", "RGBA", "RGBa"])
def test_every_alpha_mode_drops_alpha_as_rgba_does(mode: str) -> None:
    """An La image (greyscale, premultiplied alpha) failed inside the tiling with Pillow's bare "conversion from La
    to L not supported"; every alpha mode now tiles as RGBA does: alpha dropped, colours as stored unpremultiplied.
    Opaque pixels keep their colour exactly; half-transparent ones come back within premultiplication's rounding."""
    colour = _noise(40, 24, seed=3, mode="RGB" if mode.startswith("RGB") else "L")
    alpha = np.full((24, 40), 255, dtype=np.uint8)
    alpha[12:] = 128
    image = Image.merge("RGBA" if mode.startswith("RGB") else "LA", [*colour.split(), Image.fromarray(alpha)])
    image = image.convert(mode)
    config = TilingConfig(tile_size=16, max_tiles=4)
    tiles = preprocess_image(image, config)
    assert torch.equal(tiles, normalize(split_into_tiles(image, config), config.mean, config.std))
    rgb = np.asarray(as_rgb(image), dtype=np.int16)
    want = np.asarray(colour.convert("RGB"), dtype=np.int16)
    assert rgb.shape == want.shape and (rgb[:12] == want[:12]).all() and np.abs(rgb - want).max() <= 2


def test_normalize_values_and_errors() -> None:
    tile = Image.fromarray(np.array([[[0, 255, 128]]], dtype=np.uint8))
    out = normalize([tile], SIGLIP_MEAN, SIGLIP_STD)
    assert out.shape == (1, 3, 1, 1) and out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 1.0, 128 / 255 * 2 - 1]))
    with pytest.raises(ValueError):
        normalize([], IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ValueError):
        normalize([tile, _noise(2, 2)], IMAGENET_MEAN, IMAGENET_STD)


def test_pad_mode_centres_image_on_mean_colour() -> None:
    pad = (122, 116, 104)  # int(255 * CLIP_MEAN)
    # Wide 64x32 -> 64x64 canvas (rows 16..47 image) -> bicubic down to 32x32: image rows ~8..23.
    config = TilingConfig(tile_size=32, mode="pad", mean=CLIP_MEAN, std=CLIP_STD)
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    (tile,) = split_into_tiles(image, config)
    px = np.asarray(tile)
    assert tile.size == (32, 32)
    assert (px[:6] == pad).all() and (px[-6:] == pad).all()
    assert (px[10:22] == (255, 0, 0)).all()
    assert count_tiles(64, 32, config) == 1
    assert preprocess_image(image, config).shape == (1, 3, 32, 32)
    # Tall 16x64 at tile 64: no resize, so the centring is exact (columns 24..39).
    config64 = TilingConfig(tile_size=64, mode="pad", mean=CLIP_MEAN, std=CLIP_STD)
    tall = np.asarray(split_into_tiles(Image.new("RGB", (16, 64), (0, 0, 255)), config64)[0])
    assert (tall[:, :24] == pad).all() and (tall[:, 40:] == pad).all()
    assert (tall[:, 24:40] == (0, 0, 255)).all()


def test_pad_mode_odd_padding_goes_after() -> None:
    config = TilingConfig(tile_size=5, mode="pad", mean=CLIP_MEAN)
    px = np.asarray(split_into_tiles(Image.new("RGB", (5, 2), (255, 255, 255)), config)[0])
    # 5x2 -> 5x5 canvas with the image at rows 1..2 (offset (5-2)//2 = 1), no resize needed.
    assert (px[0] == (122, 116, 104)).all() and (px[3:] == (122, 116, 104)).all()
    assert (px[1:3] == 255).all()


def test_resize_mode_squashes_to_one_tile() -> None:
    config = TilingConfig(tile_size=40, mode="resize")
    image = _noise(2688, 896)
    (tile,) = split_into_tiles(image, config)
    assert tile.size == (40, 40)
    expected = image.resize((40, 40), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(tile), np.asarray(expected))
    assert count_tiles(2688, 896, config) == 1


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_and_round_trip() -> None:
    config = TilingConfig()
    assert (config.tile_size, config.min_tiles, config.max_tiles) == (448, 1, 12)
    assert config.thumbnail and config.mode == "dynamic" and config.mean == IMAGENET_MEAN
    custom = TilingConfig(tile_size=336, max_tiles=6, mode="pad", mean=CLIP_MEAN, std=CLIP_STD)
    d = json.loads(json.dumps(custom.to_dict()))
    assert TilingConfig.from_dict(d) == custom
    assert TilingConfig.from_dict({"mean": [0.5, 0.5, 0.5]}).mean == (0.5, 0.5, 0.5)
    hash(TilingConfig.from_dict(d))


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown TilingConfig key.*'max_patches'.*'size'"):
        TilingConfig.from_dict({"max_patches": 6, "size": 448, "tile_size": 448})


@pytest.mark.parametrize(
    "bad",
    [
        {"min_tiles": 7, "max_tiles": 6},
        {"tile_size": 0},
        {"tile_size": -448},
        {"min_tiles": 0},
        {"mode": "letterbox"},
        {"mean": [0.5, 0.5]},
        {"std": [0.5, 0.0, 0.5]},
        {"max_tiles": 6.0},
    ],
)
def test_from_dict_validates(bad: dict) -> None:
    with pytest.raises(ValueError):
        TilingConfig.from_dict(bad)


@pytest.mark.parametrize(
    ("n_images", "cap"), [(1, 12), (2, 6), (3, 4), (5, 2), (6, 2), (7, 1), (12, 1), (40, 1)]
)
def test_for_images_rule(n_images: int, cap: int) -> None:
    config = TilingConfig(max_tiles=12).for_images(n_images)
    assert config.max_tiles == cap and config.min_tiles == 1 and config.thumbnail
    cols, rows = tile_grid(2688, 896, 1, cap)
    assert count_tiles(2688, 896, config) == (1 if cap == 1 else cols * rows + 1)


def test_for_images_cap_one_has_no_thumbnail_and_clamps_min() -> None:
    config = TilingConfig(min_tiles=2, max_tiles=6).for_images(4)
    assert (config.min_tiles, config.max_tiles) == (1, 1)
    assert len(split_into_tiles(_noise(900, 300), config)) == 1
    with pytest.raises(ValueError):
        TilingConfig().for_images(0)


@pytest.mark.parametrize(("min_tiles", "max_tiles", "n_images"), [(4, 12, 4), (5, 12, 3), (3, 6, 3), (2, 12, 6),
                                                                   (4, 12, 2), (6, 6, 1)])
def test_for_images_keeps_min_tiles_as_internvl_does(min_tiles: int, max_tiles: int, n_images: int) -> None:
    """A share of max_tiles below min_tiles lowered min_tiles to the share without a word (min 4, 4 images of 12:
    a 3-tile grid plus thumbnail each); InternVL's dynamic_preprocess keeps min_dynamic_patch, finds no grid and
    keeps one tile, and so does pocket-adapt now, wherever a cap is applied (a source's max_tiles too)."""
    from adapt.data.samples import Record, record_tiling

    config = TilingConfig(min_tiles=min_tiles, max_tiles=max_tiles)
    share = max(1, max_tiles // n_images)
    for capped in (config.for_images(n_images), config.with_max_tiles(share),
                   record_tiling(Record("s", 1, [], [], [], max_tiles=share), config)):
        for w, h in REFERENCE_SIZES + [(900, 300), (300, 1200)]:
            assert count_tiles(w, h, capped) == rule.tiles(w, h, min_tiles, share), (w, h, capped)
        if min_tiles <= share:
            assert (capped.min_tiles, capped.max_tiles) == (min_tiles, share)
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(tiling.TilingError, match="max_tiles must be a whole number >= 1"):
            config.with_max_tiles(bad)
        with pytest.raises(tiling.TilingError, match="n_images must be a whole number >= 1"):
            config.for_images(bad)


# --- load_image ------------------------------------------------------------------------------


def test_load_image_converts_to_rgb(tmp_path) -> None:
    path = tmp_path / "gray.png"
    _noise(40, 30, mode="L").save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (40, 30)
    assert load_image(str(path)).mode == "RGB"


def test_load_image_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="nope.jpg") as info:
        load_image(path)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)


def test_load_image_not_an_image(tmp_path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a PNG\n" * 20)
    with pytest.raises(ImageLoadError, match="notes.png: ."):
        load_image(path)


def test_load_image_truncated_png(tmp_path) -> None:
    full = tmp_path / "full.png"
    _noise(256, 256).save(full)  # noise barely compresses, so cutting it loses pixel data
    data = full.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    Image.open(path)  # the header alone still parses: only a full decode catches it
    with pytest.raises(ImageLoadError, match="truncated.png: ."):
        load_image(path)


def test_load_image_directory(tmp_path) -> None:
    with pytest.raises(ImageLoadError):
        load_image(tmp_path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_size_of_an_oriented_tiff_is_the_size_load_image_returns(tmp_path, orientation) -> None:
    """Pillow reports a TIFF's size already turned by its orientation tag, and upright_size swapped it once more:
    a 30x20 TIFF tagged 6 was planned (tile counts, remote-sensing box turns) as 30x20 but loaded as 20x30."""
    stored = _noise(30, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    tiff, png = tmp_path / "scan.tif", tmp_path / "scan.png"
    stored.save(tiff, exif=exif)
    stored.save(png, exif=exif)
    upright = load_image(tiff)
    assert np.array_equal(np.asarray(upright), np.asarray(load_image(png)))  # both turned once, alike
    assert tiling.upright_size(tiff) == (upright.size, orientation) == tiling.upright_size(png)


# --- extreme aspect ratios in the single-tile modes -----------------------------------------------------------


def _refuse_big_images(monkeypatch, limit: int) -> None:
    """PIL's resize and Image.new refuse an output above `limit` pixels before allocating it."""
    resize, new = Image.Image.resize, Image.new

    def checked(size) -> None:
        assert size[0] * size[1] <= limit, f"a {size[0]}x{size[1]} image would be allocated"

    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: (checked(size), resize(self, size, *a, **k))[1])
    monkeypatch.setattr(Image, "new", lambda mode, size, *a, **k: (checked(size), new(mode, size, *a, **k))[1])


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("size", [(1, 4000), (4000, 1), (2, 60_000)])
def test_extreme_aspect_single_tile_modes_stay_within_the_resize_budget(mode, size, monkeypatch) -> None:
    """crop resized a 1x4000 image to a 448 x 1.8 M strip (43 s, 4 GB) to keep one tile; pad made a side² canvas."""
    _refuse_big_images(monkeypatch, tiling._RESIZE_BUDGET)
    config = TilingConfig(mode=mode)
    image = Image.new("RGB", size, (200, 30, 90))
    for threads in (1, 3):
        monkeypatch.setattr(tiling, "_threads", lambda threads=threads: threads)
        out = preprocess_image(image, config)
        assert out.shape == (1, 3, 448, 448)
    assert split_into_tiles(image, config)[0].size == (448, 448)
    if mode == "crop":  # a flat colour stays that colour, wherever the tile comes from
        assert np.asarray(split_into_tiles(image, config)[0]).reshape(-1, 3).tolist().count([200, 30, 90]) == 448 * 448


@pytest.mark.parametrize("size", [(3, 400), (400, 3), (57, 8000), (8000, 57)])
def test_extreme_aspect_crop_stays_close_to_the_full_resize(size, monkeypatch) -> None:
    # the bounded path against the unbounded reference (the budget lowered so the reference is cheap)
    image = _noise(*size, seed=3)
    config = TilingConfig(tile_size=32, mode="crop", mean=CLIP_MEAN, std=CLIP_STD)
    exact = np.asarray(split_into_tiles(image, config)[0], dtype=int)
    monkeypatch.setattr(tiling, "_RESIZE_BUDGET", 32 * 32)
    diff = np.abs(exact - np.asarray(split_into_tiles(image, config)[0], dtype=int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_extreme_aspect_crop_runs_under_a_memory_limit(tmp_path) -> None:
    """The real thing in a child under `ulimit -v`: before the bound the 1x4000 crop alone needed ~3 GB."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import resource; from PIL import Image; from model.tiling import TilingConfig, preprocess_image\n"
        "import torch\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2_000_000_000 + int(open('/proc/self/statm').read().split()[0])"
        " * resource.getpagesize(),) * 2)\n"
        "for mode, size in (('crop', (1, 4000)), ('pad', (1, 40000))):\n"
        "    assert preprocess_image(Image.new('RGB', size), TilingConfig(mode=mode)).shape == (1, 3, 448, 448)\n"
        "print('ok')\n"
    )
    root = Path(tiling.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_an_eps_file_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    """Pillow decodes EPS by running Ghostscript on the file: an EPS upload to a demo ran an outside program."""
    from PIL import EpsImagePlugin

    from model.tiling import ImageLoadError, load_image, upright_size

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as where Ghostscript is installed
    path = tmp_path / "scan.png"  # the name does not matter: Pillow goes by the content
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="EPS")
    with pytest.raises(ImageLoadError, match=r"PostScript \(EPS\) is not read"):
        load_image(path)
    with pytest.raises(OSError, match=r"PostScript \(EPS\) is not read"):
        upright_size(path)
    assert ran == []
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").getpixel((0, 0)) == (200, 30, 30)  # other formats read as before


@pytest.mark.parametrize("field, value, said", [
    ("std", [float("nan")] * 3, "finite"),  # was accepted: every tile came out NaN
    ("mean", [0.5, float("inf"), 0.5], "finite"),
    ("mean", 0.5, "3 values"),  # was TypeError: 'float' object is not iterable
    ("std", ["a", 1, 1], "numbers"),  # was ValueError naming neither the field nor the setting
    ("mean", [123.675, 116.28, 103.53], "0-1 scale"),  # mmcv's 0-255 mean: every tile was normalised to ~-2
    ("mean", [0.5, -0.1, 0.5], "0-1 scale"),
])
def test_a_mean_or_std_not_three_finite_numbers_of_their_range_is_a_tiling_error_naming_it(field, value, said):
    with pytest.raises(tiling.TilingError, match=f"TilingConfig.{field}.*{said}"):
        TilingConfig(**{field: value})


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_opened_photo_is_turned_by_its_exif_orientation_as_its_path_is(tmp_path, orientation) -> None:
    """A phone photo stored sideways: given as a path, load_image turns it upright; given as the caller's own
    ``Image.open`` of the same file (the processor, the export runtimes' chat, llama.cpp's tiles), it was tiled
    sideways, on another grid."""
    stored = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (32, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    stored.save(path, exif=exif)
    config = TilingConfig(tile_size=16, max_tiles=12)
    expected = preprocess_image(load_image(path), config)
    with Image.open(path) as opened:
        assert torch.equal(preprocess_image(opened, config), expected)
        assert [np.asarray(t).tolist() for t in split_into_tiles(opened, config)] == \
            [np.asarray(t).tolist() for t in split_into_tiles(load_image(path), config)]
    assert torch.equal(preprocess_image(load_image(path), config), expected)  # turned once, never twice
    assert torch.equal(preprocess_image(stored, config), preprocess_image(stored.copy(), config))  # no tag: as given


def test_an_empty_file_is_refused_as_empty_by_the_shared_reader(tmp_path):
    """Only the demo said "empty file" for 0 bytes; training, eval and chat said Pillow's "not an image file"."""
    from model.tiling import ImageLoadError, load_image

    path = tmp_path / "blank.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"blank\.png: empty file$"):
        load_image(path)
    path.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(path)


def test_an_image_between_pils_warning_and_refusal_gives_our_refusal_without_pils_warning(tmp_path, monkeypatch):
    """Between Image.MAX_IMAGE_PIXELS and twice it, Pillow warned "could be decompression bomb DOS attack", and
    then the pixel cap refused the image anyway: the user saw both. PIL's limit is lowered to stand for its 89 M."""
    import warnings

    from model.tiling import ImageLoadError, load_image, upright_size

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,200 pixels: above it, below twice it
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(path).close()  # Pillow's own open does warn
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError, match=r"big\.png: 40x30 = 1,200 pixels, above the limit of 1,100"):
            load_image(path, max_pixels=1100)
        assert load_image(path, max_pixels=1200).size == (40, 30)
        assert upright_size(path) == ((40, 30), 1)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_an_unreadable_file_is_called_unreadable_not_damaged(tmp_path, monkeypatch):
    """A file the user may not read (PermissionError) was reported as "the image is damaged or truncated"."""
    from model.tiling import ImageLoadError, load_image

    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)

    def refuse(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", refuse)  # as chmod 000 does for a user other than root
    with pytest.raises(ImageLoadError, match=r"locked\.png: permission denied") as err:
        load_image(path)
    assert "damaged" not in str(err.value)


@pytest.mark.parametrize("bad", [None, 0, -5, 1.5, "1000", True])
def test_load_image_refuses_a_max_pixels_that_is_no_limit(tmp_path, bad):
    """max_pixels=None (a YAML ``max_pixels: null``) raised a raw TypeError from the comparison; it and every other
    value that is not a whole number >= 1 are a TilingError naming the setting (no "no limit": the PIL
    decompression-bomb check is bypassed in favour of this one)."""
    from model.tiling import TilingError, load_image

    path = tmp_path / "a.png"
    Image.new("RGB", (4, 3)).save(path)
    with pytest.raises(TilingError, match=r"max_pixels \(tiling\.max_pixels\) must be a whole number >= 1, got"):
        load_image(path, max_pixels=bad)
    assert load_image(path, max_pixels=np.int64(12)).size == (4, 3)
