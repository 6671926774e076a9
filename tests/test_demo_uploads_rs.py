"""Remote-sensing demo uploads: what an upload may make the server read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import require

rasterio = require("rasterio")
require("gradio")

from deploy.demo.hooks import hooks_for, normalize_upload  # noqa: E402
from deploy.demo.panels.generic import read_files  # noqa: E402
from deploy.demo.uploads import UploadError  # noqa: E402
from domains.base import DomainError, get_domain  # noqa: E402

MB = 2**20


def write_tif(path: Path, value: int = 77) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 8, 8), value, "uint8"))
    return path


def vrt_of(target: Path) -> str:
    return (f'<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{target}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
            '</VRTRasterBand></VRTDataset>')


@pytest.mark.parametrize("name", ["site.vrt", "site.tif"])  # GDAL picks the driver by content, not by name
def test_an_upload_pointing_at_a_server_file_is_refused(tmp_path, monkeypatch, name):
    """A VRT upload used to be opened as such: its pixels came from any raster on the server it named."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    (tmp_path / "elsewhere").mkdir()
    secret = write_tif(tmp_path / "elsewhere" / "private.tif")
    upload = tmp_path / "browser" / name
    upload.parent.mkdir()
    upload.write_text(vrt_of(secret))
    read = hooks_for(get_domain("remote_sensing"))[0]
    with pytest.raises(UploadError) as err:
        read_files([upload], read, max_bytes=MB)
    msg = str(err.value)
    assert msg.startswith("upload 1: ") and "not in a format this demo reads" in msg and "VRT" in msg
    assert str(tmp_path) not in msg


def test_a_self_contained_geotiff_and_a_jpeg_named_tif_still_read(tmp_path):
    from PIL import Image

    read = hooks_for(get_domain("remote_sensing"))[0]
    tif = write_tif(tmp_path / "a.tif", 90)
    assert normalize_upload(read([tif]), 1).images[0].getpixel((3, 3)) == (90, 90, 90)
    jpeg = tmp_path / "b.tif"
    Image.new("RGB", (16, 8), (10, 200, 30)).save(jpeg, format="JPEG", quality=100)
    out = normalize_upload(read([jpeg]), 1)
    assert out.images[0].size == (16, 8)
    assert all(abs(a - b) <= 3 for a, b in zip(out.images[0].getpixel((4, 4)), (10, 200, 30)))


def test_a_few_nodata_pixels_are_not_reported_as_0_percent(tmp_path):
    """3 nodata pixels of 10,000 used to be reported as '0% of the pixels are nodata'."""
    data = np.full((1, 100, 100), 50, "uint16")
    data[0, 0, :3] = 0
    path = tmp_path / "few.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint16", nodata=0) as dst:
        dst.write(data)
    read = hooks_for(get_domain("remote_sensing"))[0]
    assert normalize_upload(read([path]), 1).warnings == [
        "image 1: under 1% of the pixels are nodata or masked (drawn black)"]


def test_a_16_bit_png_says_it_was_stretched_not_kept_as_stored(tmp_path):
    """The one image reader stretches a 16-bit grey PNG (2–98 %); the page said 'none (an 8-bit image)' and
    'red, green, blue as stored'."""
    from PIL import Image

    read = hooks_for(get_domain("remote_sensing"))[0]
    wide = tmp_path / "dem.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 10).astype(np.uint16)).save(wide)
    info = normalize_upload(read([wide]), 1).info
    assert info["image 1 bands"] == "one band as grey" and info["image 1 stretch"].startswith("2–98 percentiles")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(photo)
    info = normalize_upload(read([photo]), 1).info
    assert info["image 1 bands"] == "red, green, blue as stored" and info["image 1 stretch"] == "none (an 8-bit image)"


def test_the_demo_opens_uploads_with_the_readers_drivers_only(tmp_path, monkeypatch):
    """The demo kept its own copy of raster.READ_DRIVERS (to load without rasterio): two lists to keep in step. It
    now reads the reader's list when it opens an upload; importing the demo still imports no rasterio."""
    import subprocess
    import sys

    from domains.remote_sensing import demo, raster

    monkeypatch.setattr(raster, "READ_DRIVERS", ("PNG",))  # a GeoTIFF is then no format the demo opens
    with pytest.raises(DomainError, match="not in a format this demo reads"):
        demo._self_contained_driver(write_tif(tmp_path / "a.tif"))
    probe = "import sys, domains.remote_sensing.demo; print('rasterio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
