"""Issue 14 in model/ and deploy/: one pickle gate, one image reader, bounded tiling and pixels, safe exports,
files that honour the umask, and one-line checkpoint errors."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file

import model
from model.checkpoints import CheckpointError
from model.errors import PocketAdaptError
from model.tiling import ImageLoadError, TilingConfig, candidate_grids, load_image, tile_grid, upright_size
from tests import internvl_tiling_rule as rule
from tests.deps import require


@pytest.fixture(scope="module")
def tiny():
    return model.load("pocket-tiny")


@pytest.fixture(scope="module")
def pocket_dir(tmp_path_factory, tiny) -> Path:
    """pocket-tiny saved in its own layout once; tests copy it before changing anything."""
    return model.save(*tiny, tmp_path_factory.mktemp("pocket") / "ckpt")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(directory: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mode & 0o777 for f in directory.iterdir() if f.is_file()}


# ------------------------------------------------------------------ 3: one pickle gate for every layout


@pytest.mark.parametrize("layout", ["pocket", "native"])
def test_every_layout_refuses_pickle_weights_unless_allowed(tmp_path, pocket_dir, native_dir, layout):
    source = pocket_dir if layout == "pocket" else native_dir
    directory = _copy(source, tmp_path / "bin")
    torch.save(load_file(str(directory / "model.safetensors")), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"pickle.*--allow-pickle"):
        model.load(directory)
    vlm, _ = model.load(directory, allow_pickle=True)  # the same flag opens the same gate in every layout
    assert _same_weights(vlm, model.load(source)[0])


def test_allow_pickle_reads_only_the_model_weights(tmp_path, pocket_dir):
    # a Trainer / MobileVLM output folder: training_args.bin is no tensor file, mm_projector.bin a side copy
    directory = _copy(pocket_dir, tmp_path / "bin")
    state = load_file(str(directory / "model.safetensors"))
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    (directory / "training_args.bin").write_bytes(b"not a tensor pickle")
    torch.save({"model.mm_projector.extra": torch.zeros(2)}, directory / "mm_projector.bin")
    with pytest.warns(UserWarning, match=r"left unread \(not model weights\): mm_projector.bin, training_args.bin"):
        vlm, _ = model.load(directory, allow_pickle=True)
    assert _same_weights(vlm, model.load(pocket_dir)[0])
    # sharded: the files the index lists, and only those
    (directory / "pytorch_model.bin").rename(directory / "pytorch_model-00001-of-00001.bin")
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {k: "pytorch_model-00001-of-00001.bin" for k in state}}))
    with pytest.warns(UserWarning, match="left unread"):
        assert _same_weights(model.load(directory, allow_pickle=True)[0], vlm)
    (directory / "pytorch_model-00001-of-00001.bin").rename(directory / "weights.pt")
    with pytest.raises(CheckpointError, match="pytorch_model-00001-of-00001.bin: shard listed in pytorch_model.bin.index.json is missing"):
        model.load(directory, allow_pickle=True)


def test_an_adapter_of_pickle_weights_is_refused_unless_allowed(tmp_path, capsys):
    """adapt export --adapter: peft would torch.load adapter_model.bin; the same gate as for the model's weights."""
    from adapt.cli import main

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    rc = main(["export", "--format", "pocket", "--model", "pocket-tiny-scratch", "--adapter", str(adapter),
               "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and "adapter_model.bin" in err and "--allow-pickle" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_pocket_layout_keeps_its_dtype_and_tying(tmp_path, tiny):
    vlm, processor = tiny
    half = model.save(vlm.to(torch.bfloat16), processor, tmp_path / "bf16")
    vlm.to(torch.float32)
    again, _ = model.load(half)
    assert again.dtype == torch.bfloat16
    assert _same_weights(again.float(), vlm)


# ------------------------------------------------------------------ 5: one image reader (16-bit, float, EXIF)


def _gradient16(path: Path) -> np.ndarray:
    values = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 2).astype(np.uint16)  # 0..4094: 12 bits
    Image.fromarray(values).save(path)
    return values


def _stretched(values: np.ndarray) -> np.ndarray:
    """The domain readers' rule: 2-98 percentile over finite pixels, linear to 0..255, clipped, rounded."""
    x = values.astype(np.float64)
    lo, hi = np.percentile(x[np.isfinite(x)], (2, 98))
    return np.rint(np.clip((x - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def test_16_bit_png_is_stretched_not_saturated(tmp_path):
    values = _gradient16(tmp_path / "ct16.png")
    image = load_image(tmp_path / "ct16.png")
    px = np.asarray(image)
    assert image.mode == "RGB" and image.size == (64, 32)
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    assert np.array_equal(px[..., 0], _stretched(values))
    assert (px == 255).mean() < 0.1  # before: 94 % white


def test_float_tiff_is_stretched_and_non_finite_pixels_are_black(tmp_path):
    values = np.linspace(0.0, 1.0, 40 * 20, dtype=np.float32).reshape(20, 40)
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "reflectance.tif")
    px = np.asarray(load_image(tmp_path / "reflectance.tif"))[..., 0]
    expected = _stretched(values)
    expected[0, 0] = 0
    assert np.array_equal(px, expected)
    assert px.max() == 255 and len(np.unique(px)) > 200  # before: every pixel 0 or 1


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_colour_is_read_as_its_high_byte_and_refused_when_that_is_near_black(tmp_path, suffix):
    """Pillow reads 16-bit colour (PNG, TIFF) as its high byte: right for full-range samples, near-black for a
    12-bit scan (samples < 4096 -> 0..15), which is refused with the reason instead of trained on."""
    cv2 = require("cv2")  # Pillow cannot write 16-bit colour; OpenCV can
    full = (np.arange(40 * 20 * 3, dtype=np.uint32).reshape(20, 40, 3) * 27 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"full.{suffix}"), full[..., ::-1])  # OpenCV writes BGR
    px = np.asarray(load_image(tmp_path / f"full.{suffix}"))
    assert np.array_equal(px, (full >> 8).astype(np.uint8))
    cv2.imwrite(str(tmp_path / f"scan.{suffix}"), full % 4096)
    with pytest.raises(ImageLoadError, match=r"scan\.%s: 16-bit colour samples that all stay below 8192" % suffix):
        load_image(tmp_path / f"scan.{suffix}")


def _rotated_phone_jpeg(path: Path) -> Image.Image:
    """A 60x30 JPEG stored sideways with EXIF orientation 6 (show rotated 90° clockwise), as phones write."""
    upright = Image.new("RGB", (30, 60), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 30, 20))  # red on top when shown upright
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the inverse of what orientation 6 undoes
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)
    return upright


def test_exif_orientation_is_applied_by_the_one_reader(tmp_path):
    _rotated_phone_jpeg(tmp_path / "phone.jpg")
    image = load_image(tmp_path / "phone.jpg")
    assert image.size == (30, 60)
    r, g, b = image.getpixel((15, 5))
    assert r > 200 and b < 60  # the top is red: upright
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert np.array_equal(np.asarray(image), np.asarray(ImageOps.exif_transpose(raw).convert("RGB")))


def test_processor_reads_paths_with_the_one_reader(tmp_path, tiny):
    _, processor = tiny
    upright = _rotated_phone_jpeg(tmp_path / "phone.jpg")
    from_path = processor.prepare_images([tmp_path / "phone.jpg"])[0]
    from_image = processor.prepare_images([load_image(tmp_path / "phone.jpg")])[0]
    assert torch.equal(from_path, from_image)
    assert load_image(tmp_path / "phone.jpg").size == upright.size


def test_demo_reads_images_with_the_one_reader(tmp_path):
    from deploy.demo.hooks import read_image

    _gradient16(tmp_path / "ct16.png")
    _rotated_phone_jpeg(tmp_path / "phone.jpg")
    for name in ("ct16.png", "phone.jpg"):
        assert np.array_equal(np.asarray(read_image(tmp_path / name)), np.asarray(load_image(tmp_path / name))), name
    (tmp_path / "upload-1.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"^upload-1.png: not an image file"):
        read_image(tmp_path / "upload-1.png")


@pytest.mark.parametrize("reader", ["domains.medical:read_image_rgb", "domains.driving:read_image_rgb",
                                    "domains.driving.demo:_read_image"])
def test_domain_readers_are_the_one_reader(tmp_path, reader):
    import importlib

    module, name = reader.split(":")
    read = getattr(importlib.import_module(module), name)
    _gradient16(tmp_path / "ct16.png")
    _rotated_phone_jpeg(tmp_path / "phone.jpg")
    for file in ("ct16.png", "phone.jpg"):
        assert np.array_equal(np.asarray(read(tmp_path / file)), np.asarray(load_image(tmp_path / file))), file


# ------------------------------------------------------------------ 6: bounded max_tiles, non-cubic candidates


@pytest.mark.parametrize("field", ["max_tiles", "min_tiles"])
def test_tile_counts_are_bounded_with_a_clear_error(field):
    TilingConfig(max_tiles=40, min_tiles=40 if field == "min_tiles" else 1)
    with pytest.raises(PocketAdaptError, match=rf"{field}.*at most 40.*InternVL uses up to 12"):
        TilingConfig(**{field: 5000, "max_tiles": 5000})


def test_every_path_to_max_tiles_is_bounded(tiny):
    import dataclasses

    _, processor = tiny
    with pytest.raises(ValueError, match="max_tiles"):  # `adapt chat --max-tiles`, recipes, meta JSON caps
        dataclasses.replace(processor.tiling, max_tiles=5000)
    with pytest.raises(ValueError, match="max_tiles"):
        TilingConfig.from_dict({"max_tiles": 41})


def test_candidate_search_is_not_cubic():
    start = time.perf_counter()
    grids = candidate_grids(1, 1000)  # the cubic search walked 1000³ steps here (about 20 s)
    assert time.perf_counter() - start < 1.0
    assert len(grids) == sum(1000 // c for c in range(1, 1001))
    assert tile_grid(2688, 896, 1, 1000) == (6, 2)  # exact 3:1 ties: larger grids only while the image fills half


@pytest.mark.parametrize(("min_tiles", "max_tiles"), [(1, 60), (7, 64), (13, 50), (40, 40)])
def test_fast_candidate_order_is_still_internvls_beyond_40(min_tiles, max_tiles):
    assert candidate_grids(min_tiles, max_tiles) == rule.candidates(min_tiles, max_tiles)


def test_original_checkpoint_with_a_huge_max_dynamic_patch_names_its_config(tmp_path, original_dir):
    directory = _copy(original_dir, tmp_path / "orig")
    raw = json.loads((directory / "config.json").read_text())
    raw["max_dynamic_patch"] = 5000
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"config\.json.*max_tiles"):
        model.load(directory)


def test_pocket_checkpoint_with_out_of_range_tiling_names_its_config(tmp_path, pocket_dir):
    directory = _copy(pocket_dir, tmp_path / "ckpt")
    raw = json.loads((directory / "config.json").read_text())
    raw["tiling"]["max_tiles"] = 5000
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"config\.json.*max_tiles is 5000"):
        model.load(directory)


# ------------------------------------------------------------------ 11: export refuses non-empty targets


def test_export_refuses_a_non_empty_folder_and_force_replaces_what_it_owns(tmp_path, tiny):
    from deploy.hf import export

    out = tmp_path / "out"
    out.mkdir()
    # a stale sharded export and a file of the user's
    stale_index = {"weight_map": {"x": "model-00001-of-00002.safetensors"}}
    (out / "model.safetensors.index.json").write_text(json.dumps(stale_index))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PocketAdaptError, match=r"out.*not empty.*--force"):
        export(*tiny, "pocket", out)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors.index.json", "notes.txt"]  # untouched
    export(*tiny, "pocket", out, force=True)
    assert not (out / "model.safetensors.index.json").exists() and (out / "notes.txt").read_text() == "mine"
    again, _ = model.load(out)
    assert _same_weights(again, tiny[0])


def test_force_removes_the_earlier_exports_edge_files_but_never_the_users(tmp_path, tiny, capsys):
    """--force deleted every .gguf / .onnx in the folder, a hand-quantised model of the user's included. Edge files
    go only where the earlier export's SHA256SUMS lists them (its own), and what was removed is named."""
    from deploy.hf import export
    from model.checkpoints.checksums import write_checksums

    out = tmp_path / "out"
    out.mkdir()
    (out / "old-f16.gguf").write_bytes(b"the earlier export's model")
    (out / "mmproj-old-f16.gguf").write_bytes(b"and its projector")
    write_checksums(out)  # as every export writes it
    (out / "mine-q3_k.gguf").write_bytes(b"quantised by hand")
    (out / "custom.onnx").write_bytes(b"another tool's")
    export(*tiny, "pocket", out, force=True)
    names = {p.name for p in out.iterdir()}
    assert {"mine-q3_k.gguf", "custom.onnx"} <= names and not {"old-f16.gguf", "mmproj-old-f16.gguf"} & names
    assert ("note: removed the earlier export's files this one did not write: mmproj-old-f16.gguf, old-f16.gguf"
            in capsys.readouterr().err)


def test_force_removes_a_runs_adapter_folder(tmp_path, tiny, capsys):
    """An export --force into a run's final/ written with output.merge_lora: false kept its adapter/, which loading
    the folder merges: the export silently loaded as another model."""
    from deploy.hf import export

    out = tmp_path / "final"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text("{}")
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"an earlier run's LoRA")
    export(*tiny, "pocket", out, force=True)
    assert not (out / "adapter").exists()
    assert "adapter/" in capsys.readouterr().err
    assert _same_weights(model.load(out)[0], tiny[0])


def test_force_never_removes_files_a_foreign_sha256sums_lists(tmp_path, tiny, capsys):
    """`SHA256SUMS` is a common name (release and ISO folders): --force deleted every file one listed. Only edge
    files (.gguf, .onnx, .pte) still holding the listed digest go, as an earlier export's own."""
    from deploy.hf import export
    from model.checkpoints.checksums import write_checksums

    out = tmp_path / "isos"
    out.mkdir()
    (out / "ubuntu-24.04.iso").write_bytes(b"iso")
    (out / "notes.txt").write_text("notes")
    (out / "edited-f16.gguf").write_bytes(b"as exported")
    write_checksums(out)
    (out / "edited-f16.gguf").write_bytes(b"re-quantised by hand since")  # same name, other bytes: the user's now
    export(*tiny, "pocket", out, force=True)
    names = {p.name for p in out.iterdir()}
    assert {"ubuntu-24.04.iso", "notes.txt", "edited-f16.gguf"} <= names
    assert "ubuntu" not in capsys.readouterr().err


def _fake_bundle_writer(monkeypatch, text: str) -> None:
    """Export format 'tensorrt' writes a config and a README.md (the bundle's), without the minute of a real one."""
    import deploy.hf

    def write(vlm, processor, out):
        (out / "bundle.json").write_text("{}")
        (out / "README.md").write_text(text)
        return out

    real = deploy.hf._writer
    monkeypatch.setattr(deploy.hf, "_writer", lambda fmt, target, **o: write if fmt == "tensorrt" else real(fmt, target, **o))


def test_force_keeps_a_users_readme_and_removes_a_stale_bundle_readme(tmp_path, tiny, monkeypatch, capsys):
    """--force replaced a README.md of the user's with the TensorRT bundle's without a word, and a later export of
    another format left the bundle's README.md (naming verify.py, removed) behind. A README.md is the earlier
    export's only where its SHA256SUMS lists it with the digest it still has: then it is replaced, or removed and
    named; the user's own is kept and the export refused before anything moves."""
    from deploy.hf import ExportError, export

    _fake_bundle_writer(monkeypatch, "# TensorRT bundle\n\npython3 verify.py\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes on this folder")
    (out / "config.json").write_text("{}")
    with pytest.raises(ExportError, match=r"out/README.md: not written by an earlier export .*--force keeps it"):
        export(*tiny, "tensorrt", out, force=True)
    assert (out / "README.md").read_text() == "my notes on this folder"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"]  # nothing moved in
    (out / "README.md").unlink()
    export(*tiny, "tensorrt", out, force=True)
    _fake_bundle_writer(monkeypatch, "# TensorRT bundle, again\n")
    export(*tiny, "tensorrt", out, force=True)  # the earlier bundle's README.md: replaced
    assert (out / "README.md").read_text() == "# TensorRT bundle, again\n"
    capsys.readouterr()
    export(*tiny, "pocket", out, force=True)  # writes no README.md: the bundle's goes, named
    assert not (out / "README.md").exists()
    assert "README.md" in capsys.readouterr().err.split("did not write: ")[1]


def test_an_unwritable_target_is_named_not_the_staging_folder(tmp_path, tiny, monkeypatch):
    """A folder the user may not write in was reported as `.../.x.export-<pid>-<hex>: permission denied`."""
    import errno
    import os

    from adapt.cli import user_error_message
    from deploy.hf import export

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(PermissionError) as info:
        export(*tiny, "pocket", tmp_path / "x")
    assert user_error_message(info.value) == f"{tmp_path / 'x'}: permission denied; make it writable (readable for " \
                                             "inputs) or choose another path"


def test_a_failed_forced_export_leaves_the_folder_as_it_was(tmp_path, tiny, monkeypatch):
    import deploy.hf

    out = model.save(*tiny, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(vlm, processor, out_dir):
        (Path(out_dir) / "config.json").write_text("{half")
        raise CheckpointError("cannot export this model")

    monkeypatch.setattr(deploy.hf, "export_native", broken)
    with pytest.raises(CheckpointError):
        deploy.hf.export(*tiny, "hf", out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no staging folder left behind


def test_export_into_an_empty_or_new_folder_needs_no_force(tmp_path, tiny):
    from deploy.hf import export

    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        export(*tiny, "pocket", out)
        assert (out / "model.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PocketAdaptError, match="not a folder"):
        export(*tiny, "pocket", tmp_path / "file", force=True)


def test_cli_export_force_flag(tmp_path, capsys, monkeypatch):
    from adapt.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    loads = []
    monkeypatch.setattr("adapt.cli._load", lambda args: loads.append(args) or model.load("pocket-tiny"))
    assert main(["export", "--format", "pocket", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert not loads, "a refused target fails before the model is loaded"
    assert main(["export", "--format", "pocket", "--out", str(out), "--force"]) == 0
    assert model.load(out)[0].config.model_type == "pocket_vlm"


# ------------------------------------------------------------------ 14: written files honour the umask


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_checkpoint_files_honour_the_umask(tmp_path, mask):
    from model.checkpoints.io import atomic_write_bytes, write_state_dict

    with _umask(mask):
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        write_state_dict(tmp_path, {"w": torch.zeros(2)})
    assert _modes(tmp_path) == {"a.json": 0o666 & ~mask, "model.safetensors": 0o666 & ~mask}


def test_model_save_honours_the_umask(tmp_path, tiny):
    with _umask(0o002):
        out = model.save(*tiny, tmp_path / "final")  # what training writes as final/
    assert set(_modes(out).values()) == {0o664}, _modes(out)


@pytest.mark.parametrize("fmt", ["pocket", "hf", "internvl"])
def test_saved_and_exported_files_honour_the_umask(tmp_path, tiny, original_dir, fmt):
    from deploy.hf import export

    source = model.load(original_dir) if fmt == "internvl" else tiny  # pocket-tiny's template is not InternVL's
    with _umask(0o022):
        out = export(*source, fmt, tmp_path / "out")
    modes = _modes(out)
    assert "config.json" in modes and any(name.endswith(".safetensors") for name in modes)
    assert set(modes.values()) == {0o644}, modes
    assert out.stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------ 16: decoded pixels are capped


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims `width` x `height` (8-bit grey) and holds one compressed row: reading its header is
    cheap, decoding it would allocate the whole image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))


def test_tiling_has_a_pixel_cap_setting():
    config = TilingConfig()
    assert 20_000_000 <= config.max_pixels <= 100_000_000
    assert TilingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PocketAdaptError, match="max_pixels"):
        TilingConfig(max_pixels=0)


def test_an_image_above_the_pixel_cap_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    _png_header_only(path, 13000, 13000)
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"huge\.png: 13000x13000 .*169,000,000 pixels.*max_pixels") as err:
        load_image(path)
    assert time.perf_counter() - start < 0.5
    assert isinstance(err.value, PocketAdaptError) and err.value.path == path


def test_an_image_above_pils_own_limit_gets_the_pixel_cap_message(tmp_path):
    """Above ~179 M pixels PIL refused the file first, in its words ('could be decompression bomb DOS attack');
    the tiling.max_pixels message names the file and its size."""
    path = tmp_path / "huge.png"
    _png_header_only(path, 20000, 20000)
    with pytest.raises(ImageLoadError, match=r"huge\.png: 20000x20000 = 400,000,000 pixels, above the limit of "
                                             r"50,000,000 \(tiling\.max_pixels\)") as err:
        load_image(path)
    assert "bomb" not in str(err.value)
    assert upright_size(path) == ((20000, 20000), 1)  # the header is read at any size


def test_a_pixel_cap_above_pils_own_limit_takes_effect(tmp_path, monkeypatch):
    """tiling.max_pixels above PIL's limit (Image.MAX_IMAGE_PIXELS, twice it refused) could never take effect:
    PIL refused the file before the cap was looked at. Here PIL's limit is lowered to stand for its 179 M."""
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,200 pixels: above twice that, PIL refuses
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "small.png")
    image = load_image(tmp_path / "small.png", max_pixels=1200)
    assert image.size == (40, 30) and image.getpixel((5, 5)) == (200, 30, 30)
    with pytest.raises(ImageLoadError, match=r"small\.png: 40x30 = 1,200 pixels, above the limit of 1,199"):
        load_image(tmp_path / "small.png", max_pixels=1199)


def test_the_pixel_cap_follows_the_tiling(tmp_path, tiny):
    import dataclasses

    _, processor = tiny
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png", max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageLoadError, match=r"small\.png: 40x30 .*1,199"):
        load_image(tmp_path / "small.png", max_pixels=1199)
    capped = dataclasses.replace(processor.tiling, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="small.png"):
        processor([{"role": "user", "content": "hi"}], images=[tmp_path / "small.png"], tiling=capped)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's note on reading the header
def test_training_data_skips_an_image_above_the_cap_and_counts_it(tmp_path, tiny):
    from adapt.data import SkipLog, SourceSpec, SupervisedDataset, measure, read_source

    _, processor = tiny
    Image.new("RGB", (112, 112), (200, 30, 30)).save(tmp_path / "ok.png")
    _png_header_only(tmp_path / "huge.png", 13000, 13000)
    conv = [{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "A square."}]
    ann = tmp_path / "t.jsonl"
    lines = (json.dumps({"image": name, "conversations": conv}) + "\n" for name in ("ok.png", "huge.png"))
    ann.write_text("".join(lines))
    skips = SkipLog()
    records = measure(read_source(SourceSpec("d", ann), skips), processor, 512, skips)
    dataset = SupervisedDataset({"d": records}, [("d", k) for k in range(len(records))], processor, 512, skips)
    kept = [item for item in (dataset[k] for k in range(len(dataset))) if item is not None]
    assert len(kept) == 1 and skips.count("d") == 1  # counted once, wherever the data code catches it
    (example,) = [e for entry in skips.to_dict() for e in entry["examples"]]  # whatever the reason is called
    assert example["where"] == f"{ann}:2" and "13000x13000" in example["detail"]


def test_the_recipes_pixel_cap_reaches_training_and_evaluation(tmp_path, tiny):
    """`tiling.max_pixels` (recipe -> tiling) is the cap the training dataset and `predict` decode with."""
    import dataclasses

    from adapt.data import SkipLog, SourceSpec, SupervisedDataset, measure, read_source
    from adapt.evaluate import predict

    vlm, processor = tiny
    Image.new("RGB", (112, 112), (200, 30, 30)).save(tmp_path / "ok.png")
    conv = [{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "A square."}]
    ann = tmp_path / "t.jsonl"
    ann.write_text(json.dumps({"image": "ok.png", "conversations": conv}) + "\n")
    skips = SkipLog()
    records = measure(read_source(SourceSpec("d", ann), skips), processor, 512, skips)
    capped = dataclasses.replace(processor.tiling, max_pixels=112 * 112 - 1)
    dataset = SupervisedDataset({"d": records}, [("d", 0)], processor, 512, skips, tiling=capped)
    assert dataset[0] is None and skips.count("d") == 1
    processor.tiling, original = capped, processor.tiling
    try:
        preds = predict(vlm, processor, records, max_new_tokens=1, progress=False)
    finally:
        processor.tiling = original
    assert len(preds.skipped) == 1 and "above the limit" in preds.skipped[0].reason


def test_the_demo_reader_reports_the_pixel_cap(tmp_path):
    from deploy.demo.hooks import read_image

    _png_header_only(tmp_path / "upload-1.png", 13000, 13000)
    with pytest.raises(ValueError, match=r"^upload-1.png: 13000x13000"):
        read_image(tmp_path / "upload-1.png")


# ------------------------------------------------------------------ 13 / 15: one-line checkpoint errors


def test_model_errors_are_pocket_adapt_errors_and_value_errors():
    from deploy.hf import ExportError
    from model.processor import SampleTooLongError
    from model.tiling import TilingError
    from model.vlm import ImageTokenMismatchError

    for error in (CheckpointError, ImageLoadError, TilingError, SampleTooLongError, ImageTokenMismatchError, ExportError):
        assert issubclass(error, PocketAdaptError) and issubclass(error, ValueError), error


@pytest.mark.parametrize("layout", ["pocket", "native"])
def test_corrupt_safetensors_names_the_file(tmp_path, layout, pocket_dir, native_dir):
    directory = _copy(pocket_dir if layout == "pocket" else native_dir, tmp_path / layout)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=rf"{weights}: .*safetensors"):
        model.load(directory)


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "null"])
def test_a_config_that_is_not_an_object_names_the_file(tmp_path, pocket_dir, content):
    directory = _copy(pocket_dir, tmp_path / "ckpt")
    (directory / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=rf"{directory / 'config.json'}: .*JSON object"):
        model.load(directory)


def test_a_checkpoint_path_that_is_a_file_names_it(tmp_path, pocket_dir):
    with pytest.raises(CheckpointError, match=rf"{pocket_dir / 'model.safetensors'}: .*file.*folder"):
        model.load(pocket_dir / "model.safetensors")


@pytest.mark.parametrize("layout", ["pocket", "native"])
def test_a_missing_tokenizer_is_named_not_blamed_on_sentencepiece(tmp_path, layout, pocket_dir, native_dir):
    directory = _copy(pocket_dir if layout == "pocket" else native_dir, tmp_path / layout)
    for f in directory.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "chat_template")):
            f.unlink()
    with pytest.raises(CheckpointError, match=r"no tokenizer files.*tokenizer\.json") as err:
        model.load(directory)
    assert "sentencepiece" not in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoints_own_adapter_is_not_merged_twice(tmp_path, capsys):
    """A run's final/ with merge_lora off holds adapter/, which loading final/ merges; `export --adapter
    final/adapter` (or a copy of it) merged it a second time, doubling the update without a word. Refused now;
    another adapter over the base model still merges."""
    import shutil

    from peft import LoraConfig, get_peft_model

    from adapt.cli import main
    from model.loading import peft_quietly

    vlm, processor = model.load("pocket-tiny")
    final = model.save(vlm, processor, tmp_path / "final")
    torch.manual_seed(3)
    with peft_quietly():
        lora = get_peft_model(vlm, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(str(final / "adapter"))
    shutil.copytree(final / "adapter", tmp_path / "copy")
    for adapter in (final / "adapter", tmp_path / "copy"):
        rc = main(["export", "--format", "pocket", "--model", str(final), "--adapter", str(adapter),
                   "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert rc == 1 and "loading" in err and "merges already" in err and "Drop --adapter" in err, err
        assert not (tmp_path / "x").exists()
    assert main(["export", "--format", "pocket", "--model", "pocket-tiny", "--adapter", str(tmp_path / "copy"),
                 "--out", str(tmp_path / "y")]) == 0
    assert _same_weights(model.load(tmp_path / "y")[0], model.load(final)[0])  # merged once, as loading final/ does


def _sentencepiece_folder(path: Path, tokenizer_class: str) -> Path:
    """A tokenizer.model-only folder as MobileVLM V2 (LlamaTokenizer) and InternVL2-2B (InternLM2Tokenizer, remote
    code) ship it: a small sentencepiece BPE model trained here, and its tokenizer_config.json."""
    import io

    spm = require("sentencepiece", "tokenizer.model-only checkpoints (a core dependency)")
    words = "the a red blue green car truck road lane sign left right ahead stop two three cars image what is in"
    lines = [" ".join(np.random.default_rng(k).choice(words.split(), 12)) for k in range(300)]
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model_bytes, vocab_size=400,
                                   model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2, unk_id=0,
                                   minloglevel=2)
    path.mkdir(parents=True)
    (path / "tokenizer.model").write_bytes(model_bytes.getvalue())
    config = {"tokenizer_class": tokenizer_class, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if tokenizer_class == "InternLM2Tokenizer":
        config["auto_map"] = {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizer", "InternLM2Tokenizer"])
def test_a_tokenizer_model_only_checkpoint_reads_its_vocabulary(tmp_path, tokenizer_class):
    """InternLM2's remote-code tokenizer was read as LlamaTokenizer(vocab_file=...), which transformers 5 ignores:
    a tokenizer of 3 special tokens that encoded every word as nothing, trained on without a word."""
    from model.loading import load_tokenizer

    tokenizer = load_tokenizer(_sentencepiece_folder(tmp_path / "tok", tokenizer_class))
    ids = tokenizer.encode("two red cars", add_special_tokens=False)
    assert len(tokenizer) >= 100 and ids and not set(ids) & set(tokenizer.all_special_ids)
    assert tokenizer.decode(ids).strip() == "two red cars"


def test_a_tokenizer_without_a_vocabulary_is_refused_naming_the_fix(tmp_path):
    """Without sentencepiece, transformers turns tokenizer.model into a tokenizer of its special tokens only;
    a damaged tokenizer.model likewise: refused, naming the package or the file."""
    import subprocess
    import sys

    folder = _sentencepiece_folder(tmp_path / "tok", "LlamaTokenizer")
    script = ("import sys; sys.modules['sentencepiece'] = None\nfrom pathlib import Path\n"
              "from model.loading import load_tokenizer\nload_tokenizer(Path(sys.argv[1]))\n")
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "CheckpointError" in run.stderr and "pip install sentencepiece" in run.stderr
    from transformers import LlamaTokenizer

    from model.loading import _check_vocabulary

    empty = LlamaTokenizer(vocab_file=str(folder / "tokenizer.model"))  # what the old fallback returned: 3 tokens
    with pytest.raises(CheckpointError, match=r"has no vocabulary \(3 tokens, every word encodes to nothing\)"):
        _check_vocabulary(empty, folder)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "tokenizer.model").write_bytes(os.urandom(5000))
    (damaged / "tokenizer_config.json").write_text((folder / "tokenizer_config.json").read_text())
    from model.loading import load_tokenizer

    with pytest.raises(CheckpointError, match="tokenizer.model"):
        load_tokenizer(damaged)
