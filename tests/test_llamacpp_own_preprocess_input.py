"""`--preprocess llamacpp` hands llama.cpp raw RGB bytes of each image. An image given already opened went through a
plain convert("RGB"): a phone photo lay on its side (its EXIF orientation not applied) and a 16-bit scan came out white
from sample 255 up, while pocket's preprocessing (and load_image for a path) sees it upright and stretched."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from deploy.llamacpp.runtime import LlamaCppVLM
from model.tiling import TilingConfig, as_rgb


def _runtime(scratch):
    runtime = LlamaCppVLM.__new__(LlamaCppVLM)  # no llama.cpp process: image_entries only writes the bytes
    runtime.export = SimpleNamespace(mmproj="mmproj.gguf", tiling=TilingConfig(), model=scratch / "m.gguf")
    runtime.llama = SimpleNamespace(scratch=scratch)
    return runtime


def test_an_opened_image_reaches_llamacpp_as_the_tiling_reads_it(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: stored 24 wide, shown 10 wide
    Image.fromarray(np.arange(24 * 10 * 3, dtype=np.uint8).reshape(10, 24, 3)).save(tmp_path / "photo.jpg", exif=exif)
    photo = Image.open(tmp_path / "photo.jpg")
    wide = Image.fromarray(np.arange(64 * 16, dtype=np.uint16).reshape(16, 64) * 4, mode="I;16")
    entries = _runtime(tmp_path).image_entries([photo, wide], preprocess="llamacpp")
    for entry, image in zip(entries, (photo, wide)):
        expected = as_rgb(image)
        assert (entry["width"], entry["height"]) == expected.size
        assert open(entry["rgb"], "rb").read() == expected.tobytes()
    assert (entries[0]["width"], entries[0]["height"]) == (10, 24)
