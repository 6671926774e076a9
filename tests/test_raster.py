"""Raster reading with rasterio: band selection, stretch, nodata, chips with windowed reads, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
from affine import Affine
from rasterio.crs import CRS

from domains.base import ConvertReport, get_domain
from domains.boxes import Box
from domains.remote_sensing.raster import (
    EUROSAT_BANDS,
    RasterError,
    chip_box_to_map,
    iter_chips,
    map_box_to_chip,
    normalize_band_name,
    read_rgb,
    resolve_bands,
)
from tests.test_rs_convert import zero_size_tiff

CRS_UTM33 = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels, north up


def write_tif(path, data, nodata=None, descriptions=None, transform=TRANSFORM, **extra):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=CRS_UTM33, transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def eurosat_patch(rng, size=64):
    """13 bands of uint16 with a different range per band, so band mix-ups show."""
    return np.stack([rng.integers(100 * (i + 1), 100 * (i + 1) + 3000, (size, size)) for i in range(13)]
                    ).astype(np.uint16)


def test_band_names_normalised():
    assert normalize_band_name("B4") == "B04"
    assert normalize_band_name(" b04 ") == "B04"
    assert normalize_band_name("b8a") == "B8A"
    assert normalize_band_name("red") == "RED"
    assert EUROSAT_BANDS[-1] == "B8A" and EUROSAT_BANDS.index("B04") == 3


def test_eurosat_13_band_order(tmp_path):
    rng = np.random.default_rng(0)
    data = eurosat_patch(rng)
    path = write_tif(tmp_path / "AnnualCrop_1.tif", data)
    with rasterio.open(path) as src:
        assert resolve_bands(src) == [4, 3, 2]
        assert resolve_bands(src, ["B4", "B3", "B2"]) == [4, 3, 2]
        assert resolve_bands(src, ["B8A"]) == [13]  # B8A is last in the EuroSAT files
        assert resolve_bands(src, ["B08"]) == [8]
        assert resolve_bands(src, [1, 2, 3]) == [1, 2, 3]
    default, mask = read_rgb(path)
    by_name, _ = read_rgb(path, bands=["B04", "B03", "B02"])
    by_index, _ = read_rgb(path, bands=[4, 3, 2])
    assert default.mode == "RGB" and default.size == (64, 64) and mask.all()
    assert np.array_equal(np.asarray(default), np.asarray(by_name))
    assert np.array_equal(np.asarray(default), np.asarray(by_index))
    assert not np.array_equal(np.asarray(default), np.asarray(read_rgb(path, bands=[1, 2, 3])[0]))
    # the red channel is the stretched band 4
    b4 = data[3].astype(np.float64)
    lo, hi = np.percentile(b4, (2, 98))
    expected = np.rint(np.clip((b4 - lo) * 255 / (hi - lo), 0, 255))
    assert np.abs(np.asarray(default)[..., 0].astype(int) - expected).max() <= 1


def test_descriptions_used_when_present(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (4, 32, 32)).astype(np.uint16)
    path = write_tif(tmp_path / "s2.tif", data, descriptions=["B02", "B03", "B04", "B08"])
    with rasterio.open(path) as src:
        assert resolve_bands(src) == [3, 2, 1]
        assert resolve_bands(src, ["B8", "B4", "B3"]) == [4, 3, 2]
        with pytest.raises(RasterError, match=r"s2\.tif: no band named 'B11'; known band names: B02, B03, B04, B08"):
            resolve_bands(src, ["B11", "B4", "B3"])
        with pytest.raises(RasterError, match="1-based, 1..4"):
            resolve_bands(src, [0, 1, 2])
        with pytest.raises(RasterError, match="1 band .* or 3 bands"):
            resolve_bands(src, [1, 2])
        assert resolve_bands(src, ["nir", "red", "green"], band_names=["blue", "green", "red", "nir"]) == [4, 3, 2]


def test_colour_interpretation_picks_the_default_rgb(tmp_path):
    """A blue-green-red-NIR file (PlanetScope's order) tagged so reads red, green, blue from bands 3, 2, 1; it read
    bands 1, 2, 3 (red and blue swapped). Untagged files keep 1, 2, 3."""
    from rasterio.enums import ColorInterp

    data = np.random.default_rng(2).integers(0, 4000, (4, 16, 16)).astype(np.uint16)
    tagged = write_tif(tmp_path / "bgrn.tif", data)
    with rasterio.open(tagged, "r+") as dst:
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    with rasterio.open(tagged) as src:
        assert resolve_bands(src) == [3, 2, 1]
    with rasterio.open(write_tif(tmp_path / "plain.tif", data)) as src:
        assert resolve_bands(src) == [1, 2, 3]


def test_stretch_over_valid_pixels_only_and_nodata(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(1000, 2001, (3, 40, 40)).astype(np.uint16)
    data[:, :20, :] = 0  # top half nodata
    path = write_tif(tmp_path / "half.tif", data, nodata=0)
    img, mask = read_rgb(path)
    arr = np.asarray(img)
    assert mask[:20].sum() == 0 and mask[20:].all()
    assert (arr[:20] == 0).all()
    for b in range(3):
        valid = data[b, 20:].astype(np.float64)
        lo, hi = np.percentile(valid, (2, 98))  # zeros are not in the statistics
        expected = np.rint(np.clip((valid - lo) * 255 / (hi - lo), 0, 255))
        assert np.abs(arr[20:, :, b].astype(int) - expected).max() <= 1
    assert arr[20:].max() == 255 and arr[20:].min() == 0
    # nodata given overrides the file's
    _, mask2 = read_rgb(path, nodata=2000)
    assert (~mask2[20:]).sum() == ((data[:, 20:] == 2000).all(axis=0)).sum()  # nodata in every band (GDAL)


def test_single_band_float_and_uint8(tmp_path):
    x = np.linspace(0, 1, 30 * 30, dtype=np.float32).reshape(30, 30)
    x[0, 0] = np.nan
    grey, mask = read_rgb(write_tif(tmp_path / "dem.tif", x))
    arr = np.asarray(grey)
    assert arr.shape == (30, 30, 3) and (arr[..., 0] == arr[..., 2]).all()
    assert not mask[0, 0] and mask.sum() == 899
    rgb8 = np.random.default_rng(3).integers(0, 256, (3, 16, 16)).astype(np.uint8)
    plain, _ = read_rgb(write_tif(tmp_path / "rgb8.tif", rgb8), stretch=None)
    assert np.array_equal(np.asarray(plain), rgb8.transpose(1, 2, 0))
    with pytest.raises(ValueError, match="percentiles"):
        read_rgb(tmp_path / "rgb8.tif", stretch=(98, 2))


def test_plugin_reader(tmp_path):
    path = write_tif(tmp_path / "x.tif", eurosat_patch(np.random.default_rng(4), 16))
    img = get_domain("remote_sensing").read(path)
    assert img.mode == "RGB" and img.size == (16, 16)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(RasterError, match=r"missing\.tif: no such file"):
        read_rgb(tmp_path / "missing.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x13" * 200)
    with pytest.raises(RasterError, match=r"junk\.tif"):
        read_rgb(junk)
    # truncated: a valid strip-organised TIFF cut in the middle of its pixel data
    full = write_tif(tmp_path / "full.tif", np.random.default_rng(5).integers(0, 60000, (3, 256, 256)).astype(np.uint16))
    blob = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RasterError, match=r"cut\.tif"):
        read_rgb(cut)
    cpx = write_tif(tmp_path / "cpx.tif", np.ones((1, 8, 8), np.complex64))
    with pytest.raises(RasterError, match=r"cpx\.tif: band 1 has unsupported data type 'complex64'"):
        read_rgb(cpx)
    zero = zero_size_tiff(tmp_path / "zero.tif")
    with pytest.raises(RasterError, match=r"zero\.tif: zero-size raster"):
        read_rgb(zero)
    empty = write_tif(tmp_path / "empty.tif", np.zeros((3, 8, 8), np.uint16), nodata=0)
    with pytest.raises(RasterError, match=r"empty\.tif: every pixel is nodata"):
        read_rgb(empty)


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory):
    """4000 x 4000 uint16, 3 bands, tiled + deflate; the top-left 1000 x 1000 is nodata."""
    h = w = 4000
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint16", crs=CRS_UTM33, transform=TRANSFORM,
                   nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate", zlevel=1)
    xx = np.arange(w, dtype=np.uint32)[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, h, 500):  # written in strips to keep the fixture light
            yy = np.arange(row0, row0 + 500, dtype=np.uint32)[:, None]
            strip = np.stack(np.broadcast_arrays(xx * 4 + 1, yy * 4 + 1, ((xx + yy) % 4096) * 4 + 1)).astype(np.uint16)
            if row0 < 1000:
                strip[:, : min(500, 1000 - row0), :1000] = 0
            dst.write(strip, window=rasterio.windows.Window(0, row0, w, 500))
    return path


def test_iter_chips_windowed_reads_only(big_scene, monkeypatch):
    calls = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        window = kwargs.get("window")
        calls.append(None if window is None else (int(window.width), int(window.height)))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    report = ConvertReport(dataset="chips")
    chips = list(iter_chips(big_scene, size=448, overlap=64, report=report))
    assert calls and None not in calls, "a read without a window would load the whole scene"
    assert max(max(wh) for wh in calls) <= 448
    # 11 x 11 positions (step 384, the last aligned to the edge at 3552); 2 x 2 lie wholly in the nodata corner
    assert len(chips) == 121 - 4 and report.written == 0  # the iterator only counts skips
    assert report.skipped == {"all nodata": 4}
    assert report.examples["all nodata"][0].startswith(f"{big_scene} (col 0, row 0, 448x448)")
    assert all(c.image.size == (448, 448) for c in chips)
    last = chips[-1]
    assert (int(last.window.col_off), int(last.window.row_off)) == (3552, 3552)
    assert last.crs == CRS_UTM33
    # a partly-nodata chip: invalid pixels masked and black
    part = next(c for c in chips if c.row == 2 and c.col == 2)  # starts at 768: overlaps the corner up to 1000
    assert not part.mask[:232, :232].any() and part.mask[232:, :].all()
    assert (np.asarray(part.image)[:232, :232] == 0).all()
    # scene-wide stretch: the same scene value gives the same colour in two overlapping chips
    a = next(c for c in chips if c.row == 3 and c.col == 3)
    b = next(c for c in chips if c.row == 3 and c.col == 4)
    overlap = slice(int(b.window.col_off - a.window.col_off), 448)
    assert np.array_equal(np.asarray(a.image)[:, overlap], np.asarray(b.image)[:, : 448 - overlap.start])


def test_chip_transform_and_boxes(big_scene):
    chip = next(c for c in iter_chips(big_scene, size=448, overlap=64) if c.row == 4 and c.col == 5)
    col_off, row_off = int(chip.window.col_off), int(chip.window.row_off)
    assert (col_off, row_off) == (5 * 384, 4 * 384)
    assert chip.transform == TRANSFORM @ Affine.translation(col_off, row_off)
    box = Box(10, 20, 110, 220)
    left, bottom, right, top = chip.box_to_map(box)
    assert left == pytest.approx(500000 + (col_off + 10) * 10)
    assert right == pytest.approx(500000 + (col_off + 110) * 10)
    assert top == pytest.approx(5000000 - (row_off + 20) * 10)
    assert bottom == pytest.approx(5000000 - (row_off + 220) * 10)
    back = chip.box_from_map((left, bottom, right, top))
    assert back == pytest.approx(tuple(box))
    # the same map box in scene pixels
    assert map_box_to_chip((left, bottom, right, top), TRANSFORM) == pytest.approx(
        (col_off + 10, row_off + 20, col_off + 110, row_off + 220))
    with pytest.raises(ValueError, match="left <= right"):
        map_box_to_chip((10, 0, 0, 10), TRANSFORM)
    rotated = Affine.rotation(30) @ Affine.scale(2)
    l, b, r, t = chip_box_to_map(Box(0, 0, 10, 10), rotated)
    assert r - l > 20 and t - b > 20  # the bounding box of the rotated square


@pytest.mark.parametrize("box", [(1, 2, 3), (1, 2, 3, 4, 5), None])
def test_chip_box_to_map_refuses_a_box_without_four_values(box):
    """Box(*box) gave a raw TypeError ("missing 1 required positional argument") for a 3- or 5-value box."""
    with pytest.raises(ValueError, match=r"pixel box needs 4 values \(x1, y1, x2, y2\), got"):
        chip_box_to_map(box, TRANSFORM)


@pytest.mark.parametrize("bounds", [(1, 2, 3), (1, 2, 3, 4, 5)])
def test_map_box_to_chip_refuses_bounds_without_four_values(bounds):
    with pytest.raises(ValueError, match=r"map bounds need 4 values \(left, bottom, right, top\)"):
        map_box_to_chip(bounds, TRANSFORM)


def test_small_scene_one_chip_and_min_valid(tmp_path):
    data = np.full((3, 100, 150), 500, np.uint16)
    data[:, :, :100] = 0
    path = write_tif(tmp_path / "small.tif", data, nodata=0)
    chips = list(iter_chips(path, size=448, stretch_scope="chip"))
    assert len(chips) == 1 and chips[0].image.size == (150, 100)
    report = ConvertReport()
    assert list(iter_chips(path, size=448, min_valid=0.5, report=report)) == []
    assert report.skipped == {"valid fraction below 0.5": 1}
    assert "33.3% valid" in report.examples["valid fraction below 0.5"][0]
    with pytest.raises(ValueError, match="overlap"):
        list(iter_chips(path, size=64, overlap=64))


# --------------------------------------------------------------------------------------------- GDAL block cache
def test_chipping_holds_gdal_block_cache_during_reads(tmp_path, monkeypatch):
    """Issue 14 (16): every read iter_chips makes runs with GDAL_CACHEMAX = chip_cache_bytes, not GDAL's default
    (5 % of RAM, which kept ~1.3 GB of a 20000^2 scene); the default is back between chips."""
    from rasterio.env import get_gdal_config

    from domains.remote_sensing.raster import CHIP_CACHE_MIN, chip_cache_bytes

    path = tmp_path / "tiled.tif"
    write_tif(path, np.random.default_rng(0).integers(1, 255, (3, 700, 1000), dtype=np.uint8),
              tiled=True, blockxsize=256, blockysize=256)
    seen = []
    real = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        seen.append(get_gdal_config("GDAL_CACHEMAX"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    default = get_gdal_config("GDAL_CACHEMAX")
    between = [get_gdal_config("GDAL_CACHEMAX") for _ in iter_chips(path, size=448, overlap=64, stretch=(2, 98))]
    with rasterio.open(path) as src:
        want = chip_cache_bytes(src, 448)
    assert want == CHIP_CACHE_MIN < default
    assert len(seen) > len(between) == 6  # scene-wide stretch samples, then 3 x 2 chips
    assert set(seen) == {want} and set(between) == {default}


def test_chip_cache_bytes_spans_one_row_of_chips():
    from types import SimpleNamespace

    from domains.remote_sensing.raster import CHIP_CACHE_MAX, chip_cache_bytes

    def scene(width, block, count=3, dtype="uint8"):
        return SimpleNamespace(width=width, height=width, count=count, dtypes=[dtype] * count,
                               block_shapes=[block] * count)

    mb = 2**20
    assert chip_cache_bytes(scene(20_000, (512, 512)), 448) == int(2 * 512 * 20_000 * 3 * 1.25)  # ~73 MB
    assert chip_cache_bytes(scene(20_000, (1, 20_000)), 448) == int(449 * 20_000 * 3 * 1.25)  # strips: ~32 MB
    assert chip_cache_bytes(scene(200_000, (512, 512), 13, "uint16"), 448) == CHIP_CACHE_MAX == 256 * mb


@pytest.mark.slow
def test_chipping_peak_memory_stays_near_the_cache(tmp_path):
    """End to end, in a fresh process (tracemalloc does not see GDAL's memory): the peak RSS grows by about
    the cache while a 6000^2 striped scene is chipped; with GDAL's default cache it grew by the whole ~100 MB.
    The peak is the process's own high-water mark (VmHWM): on Linux a child's ru_maxrss starts at the size of
    the parent it was forked from (here pytest, with torch loaded), which would hide the growth."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "scene.tif"
    x = (np.arange(6000) % 251).astype(np.uint8)
    write_tif(path, np.stack([np.broadcast_to(x, (6000, 6000))] * 3))
    code = ("import resource, sys\n"
            "from pathlib import Path\n"
            "from domains.remote_sensing.raster import iter_chips\n"
            "status = Path('/proc/self/status')\n"
            "def rss():\n"
            "    if status.exists():\n"
            "        return next(int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith('VmHWM')) // 1024\n"
            "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
            "chips = iter_chips(sys.argv[1], size=448, overlap=64, stretch=None)\n"
            "first = next(chips); before = rss(); n = 1 + sum(1 for _ in chips)\n"
            "print(n, rss() - before)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    n, grew_mb = map(int, done.stdout.split())
    assert n == 16 * 16 and grew_mb < 50, done.stdout


def test_auto_stretch_keeps_uint8_and_stretches_wider_types(tmp_path):
    """read_rgb's default is the converters' rule: an 8-bit tile as stored (a 2-98 % stretch would change every
    pixel the model was trained on), a uint16 one stretched."""
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(60, 140, (3, 20, 24)).astype(np.uint8)
    image, _ = read_rgb(write_tif(tmp_path / "rgb8.tif", rgb8))
    assert np.array_equal(np.asarray(image), rgb8.transpose(1, 2, 0))
    wide = (rgb8.astype(np.uint16) * 40)
    stretched, _ = read_rgb(write_tif(tmp_path / "rgb16.tif", wide))
    assert np.array_equal(np.asarray(stretched), np.asarray(read_rgb(tmp_path / "rgb16.tif", stretch=(2, 98))[0]))


@pytest.mark.parametrize("how", ["alpha", "internal mask"])
def test_alpha_band_and_internal_mask_are_invalid_pixels(tmp_path, how):
    """The left half is masked (alpha 0 / an internal mask): invalid in the mask, black, left out of the stretch,
    and a chip wholly inside it is skipped like nodata."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(1000, 3000, (3, 32, 64)).astype(np.uint16)
    rgb[:, :, :32] = 0  # what lies under the mask
    path = tmp_path / f"{how.replace(' ', '_')}.tif"
    if how == "alpha":
        alpha = np.zeros((1, 32, 64), np.uint16)
        alpha[:, :, 32:] = 65535
        write_tif(path, np.concatenate([rgb, alpha]), photometric="RGB", alpha="YES")
    else:
        write_tif(path, rgb)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
            mask = np.zeros((32, 64), np.uint8)
            mask[:, 32:] = 255
            dst.write_mask(mask)
    image, valid = read_rgb(path, bands=[1, 2, 3])
    assert not valid[:, :32].any() and valid[:, 32:].all()
    pixels = np.asarray(image)
    assert (pixels[:, :32] == 0).all()
    assert abs(pixels[:, 32:].mean() - 127.5) < 20  # the masked zeros did not take the low percentile
    report = ConvertReport(dataset="t", source=path, out=tmp_path)
    chips = list(iter_chips(path, size=32, overlap=0, bands=[1, 2, 3], report=report))
    assert [c.col for c in chips] == [1] and report.skipped["all nodata"] == 1


def test_a_paletted_band_is_drawn_in_its_colour_map(tmp_path):
    classes = np.array([[0, 1], [2, 3]], np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    path = write_tif(tmp_path / "landcover.tif", classes, photometric="palette")
    colours = {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255), 3: (255, 255, 0, 255)}
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, colours)
    for stretch in ("auto", None, (2, 98)):
        pixels = np.asarray(read_rgb(path, stretch=stretch)[0])
        assert [tuple(pixels[y, x]) for y, x in ((0, 0), (0, 8), (8, 0), (8, 8))] == [c[:3] for c in colours.values()]
    [chip] = iter_chips(path, size=16, overlap=0)
    assert tuple(np.asarray(chip.image)[8, 8]) == (255, 255, 0)


def test_a_whole_read_is_capped_like_every_image_and_says_how_to_chip(tmp_path):
    path = write_tif(tmp_path / "scene.tif", np.zeros((1, 40, 50), np.uint8) + 9)
    with pytest.raises(RasterError, match=r"50x40 = 2,000 pixels, above the limit of 1,999 \(tiling.max_pixels\); "
                                          r"cut the scene into chips with `adapt convert remote_sensing scene_chips`"):
        read_rgb(path, max_pixels=1999)
    from domains.remote_sensing.raster import DEFAULT_MAX_PIXELS
    from model.tiling import DEFAULT_MAX_PIXELS as IMAGE_CAP

    assert DEFAULT_MAX_PIXELS == IMAGE_CAP and read_rgb(path, max_pixels=2000)[1].all()


def test_a_raster_without_crs_reads_without_rasterio_warning(tmp_path, recwarn):
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 8, 8), 7, np.uint8))
    recwarn.clear()  # writing it warns; reading it must not (adapt chat printed it on every question)
    read_rgb(path)
    list(iter_chips(path, size=8, overlap=0))
    assert [w.category.__name__ for w in recwarn] == []


def test_nodata_masks_a_pixel_only_where_every_band_is_nodata(tmp_path):
    """GDAL's dataset mask: with nodata 0 a pure red (200, 0, 0) pixel is data, not a hole; (0, 0, 0) is."""
    data = np.zeros((3, 4, 4), np.uint8)
    data[0, :2] = 200  # top half pure red, bottom half nodata in every band
    image, mask = read_rgb(write_tif(tmp_path / "red.tif", data, nodata=0))
    assert mask[:2].all() and not mask[2:].any()
    assert tuple(np.asarray(image)[0, 0]) == (200, 0, 0)
    # uint16: a band's nodata values of valid pixels stay out of its percentiles
    wide = np.zeros((3, 10, 10), np.uint16)
    wide[0] = np.arange(100, dtype=np.uint16).reshape(10, 10) + 1000
    wide[1, :, :5] = 3000
    wide[2] = 2000
    wide[2, 0, 0] = 2100
    image, mask = read_rgb(write_tif(tmp_path / "wide.tif", wide, nodata=0), stretch=(0, 100))
    assert mask.all()
    rgb = np.asarray(image)
    assert rgb[0, 0, 1] == 0 and rgb[0, 9, 1] == 0  # band 2: only 3000 is data (no spread): 0
    assert rgb[0, 0, 2] == 255 and rgb[1, 0, 2] == 0  # band 3: 2000..2100, not 0..2100


def test_digit_string_bands_are_indexes_unless_a_band_is_so_named(tmp_path, recwarn):
    """A band given as "1" (a command-line option) is band index 1, not an unknown band name; a file with a band
    literally named "1" gets that band, and a warning says the name was taken over the index."""
    data = np.random.default_rng(3).integers(0, 4000, (4, 8, 8)).astype(np.uint16)
    with rasterio.open(write_tif(tmp_path / "plain.tif", data)) as src:
        assert resolve_bands(src, "1") == [1]
        assert resolve_bands(src, ["3", " 2 ", "1"]) == [3, 2, 1]
        with pytest.raises(RasterError, match=r"band index 5 out of range; band indexes are 1-based, 1\.\.4"):
            resolve_bands(src, "5")
        with pytest.raises(RasterError, match="band index 0 out of range"):
            resolve_bands(src, ["0", "1", "2"])
    assert not recwarn.list
    named = write_tif(tmp_path / "named.tif", data, descriptions=["B02", "1", "B04", "B08"])
    with rasterio.open(named) as src:
        assert resolve_bands(src, ["3", "4", "B02"]) == [3, 4, 1]  # no band named "3" / "4": indexes
        with pytest.warns(UserWarning, match=r"named\.tif: band '1' taken as the band named '1' \(band 2\), "
                                             r"not band index 1"):
            assert resolve_bands(src, "1") == [2]


@pytest.mark.parametrize("name", ["scene.tif", "scene.vrt"])  # GDAL picks the driver by content, not by name
def test_a_raster_pointing_at_other_files_is_refused_unread(tmp_path, name):
    """A data set's .tif that is a VRT was opened as one: a raw band of any file on the machine (a key, say) was
    read into the converted images."""
    secret = tmp_path / "elsewhere" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"SECRET-KEY-BYTES" * 4)
    scene = tmp_path / "data" / name
    scene.parent.mkdir()
    scene.write_text(f'<VRTDataset rasterXSize="16" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1" '
                     f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">{secret}</SourceFilename>'
                     '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset>'
                     '</VRTRasterBand></VRTDataset>')
    with pytest.raises(RasterError, match=rf"{name}: cannot open as a raster .*a VRT or other file that points at"):
        read_rgb(scene, stretch=None)
