"""The TensorRT bundle (`adapt export --format tensorrt`, deploy/tensorrt.py) for Jetson Orin.

No engine is built here (no GPU): what is checked is everything the automotive team gets before they build one --
the bundle's files, that the graphs' fixed shapes are the profiles', that the driving profiles hold exactly the
tiles the processor cuts (2688x896 stitched; six 1600x900 views), the fp16 check's report, and verify.py's
comparison logic through its onnxruntime mode (PASS on the bundle as shipped, FAIL on an altered reference).

Two models: pocket-tiny through the CLI with the driving recipe's tiling, and a tiny random InternVL (Qwen2) through
`deploy.hf.export` with its own tiling. Each export takes about a minute on two shared cores, so they are made once
per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import model

from .deps import require

require("onnx", "the deploy extra: ONNX export")
require("onnxruntime", "the deploy extra: ONNX Runtime")
require("onnxscript", "the deploy extra: torch.onnx's dynamo exporter")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from adapt.cli import main  # noqa: E402
from adapt.recipe import load_recipe  # noqa: E402
from deploy.fp16_check import FP16_MAX, scan_magnitudes  # noqa: E402
from deploy.hf import export  # noqa: E402
from deploy.tensorrt import (  # noqa: E402
    TensorRTExportError,
    _check_graphs,
    layouts,
    range_layouts,
    tile_counts,
)
from model.limits import MAX_IMAGES  # noqa: E402
from model.tiling import TilingConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DRIVING = REPO / "templates" / "recipes" / "driving_pocket-tiny_full.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundles(native_dir, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (bundle folder, what the export printed)."""
    root = tmp_path_factory.mktemp("tensorrt")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "-f", "tensorrt", "--model", "pocket-tiny", "--recipe", str(DRIVING), "--max-images", "6",
                     "--out", str(root / "pocket-tiny")]) == 0
    vlm, processor = model.load(native_dir)
    export(vlm, processor, "tensorrt", root / "internvl")
    return {"pocket-tiny": (root / "pocket-tiny", printed.getvalue()), "internvl": (root / "internvl", "")}


def read(bundle: Path, name: str) -> dict:
    return json.loads((bundle / name).read_text())


def verify(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The bundle's own verify.py, as the automotive team runs it (a separate process, cwd the bundle)."""
    return subprocess.run([sys.executable, "verify.py", *args], cwd=bundle, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_bundle_holds_graphs_tokenizer_references_and_instructions(name, bundles):
    bundle, _ = bundles[name]
    for f in ("vision.onnx", "embed.onnx", "decoder.onnx", "tokenizer.json", "chat_template.json",
              "preprocessor_config.json", "profiles.json", "bundle.json", "fp16_check.json", "README.md", "verify.py",
              "SHA256SUMS"):
        assert (bundle / f).is_file(), f
    # the copy on the Orin is checked with coreutils before any engine is built
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert checked.returncode == 0 and "references/" in checked.stdout, checked.stdout + checked.stderr
    manifest, profiles = read(bundle, "bundle.json"), read(bundle, "profiles.json")
    files = [spec["file"] for check in manifest["checks"] for part in ("inputs", "outputs")
             for spec in check[part].values() if "file" in spec]
    assert len(files) >= 2 * len(profiles["vision"]["profiles"]) + 5
    for f in files:
        array = np.load(bundle / f, allow_pickle=False)
        assert array.size and array.dtype in (np.float32, np.int64), f
    readme = (bundle / "README.md").read_text()
    assert "no TensorRT engine was built" in readme
    for entry in profiles["vision"]["profiles"]:
        assert entry["trtexec"] in readme and "--fp16" in entry["trtexec"]
    assert profiles["decoder"]["trtexec"] in readme and "v0.12.0-jetson" in readme and "llm_build" in readme
    assert "python3 verify.py" in readme and "sha256sum -c SHA256SUMS" in readme
    # the example image, really tiled: not a constant, and with the tiling's normalisation
    pixels = np.load(bundle / manifest["checks"][0]["inputs"]["pixel_values"]["file"], allow_pickle=False)
    assert pixels.std(axis=(0, 2, 3)).min() > 0.1


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_fixed_graph_shapes_are_the_profiles(name, bundles):
    """The vision graph's fixed dims are every profile's; the tile axis is the only free one, and each profile fixes
    it (min = opt = max); the vision graph gives each profile's output shape; the decoder's fixed dims match."""
    import onnxruntime as ort

    bundle, _ = bundles[name]
    profiles = read(bundle, "profiles.json")
    graph = onnx.load(str(bundle / "vision.onnx"), load_external_data=False)
    dims = [d.dim_value or d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    size = profiles["tiling"]["tile_size"]
    assert isinstance(dims[0], str) and dims[1:] == [3, size, size]
    out_dims = [d.dim_value or d.dim_param for d in graph.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[1:] == profiles["vision"]["output_per_tile"]
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    checks = {c["name"]: c for c in read(bundle, "bundle.json")["checks"]}
    for entry in profiles["vision"]["profiles"]:
        assert entry["min"] == entry["opt"] == entry["max"]
        assert entry["min"][1:] == dims[1:] and entry["min"][0] == entry["tiles"]
        assert f"--minShapes=pixel_values:{'x'.join(map(str, entry['min']))}" in entry["trtexec"]
        pixels = np.load(bundle / checks[entry["engine"][:-5]]["inputs"]["pixel_values"]["file"], allow_pickle=False)
        assert list(pixels.shape) == entry["opt"]
        assert list(session.run(None, {"pixel_values": pixels})[0].shape) == entry["output_shape"]
    decoder = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    for value in decoder.graph.input:
        fixed = [(i, d.dim_value) for i, d in enumerate(value.type.tensor_type.shape.dim) if d.dim_value]
        shapes = profiles["decoder"]["shapes"][value.name]
        for i, size in fixed:
            assert shapes["min"][i] == shapes["opt"][i] == shapes["max"][i] == size, value.name


def test_driving_profiles_hold_the_tiles_the_processor_cuts(bundles):
    """pocket-tiny with the driving recipe's tiling: the stitched 2688x896 view and a six-view sample, through the
    processor, give exactly the tile counts of the profiles that serve them; the bundle carries the recipe's tiling."""
    bundle, _ = bundles["pocket-tiny"]
    profiles = read(bundle, "profiles.json")
    _, processor = model.load("pocket-tiny")
    tiling = load_recipe(DRIVING).tiling_for(processor.tiling)
    assert tiling != processor.tiling  # the recipe changes max_tiles, so the check below sees the recipe's
    assert profiles["tiling"] == tiling.to_dict() == read(bundle, "preprocessor_config.json")["tiling"]
    serving = {s["name"]: p["tiles"] for p in profiles["vision"]["profiles"] for s in p["serves"]}
    question = [{"role": "user", "content": "What is ahead?"}]
    stitched = processor(question, images=[Image.new("RGB", (2688, 896))], tiling=tiling)
    assert serving["driving_stitched"] == stitched.pixel_values.shape[0]
    views = processor(question, images=[Image.new("RGB", (1600, 900))] * 6, tiling=tiling)
    assert serving["driving_six_views"] == views.pixel_values.shape[0]
    assert serving["most_tiles"] == tiling.max_tiles + 1 and serving["fewest_tiles"] == 1
    # every tile count the tiling can produce for one image lies inside [fewest, most]
    assert profiles["decoder"]["max_multimodal_len"] == max(serving.values()) * profiles["image_tokens_per_tile"]
    # --max-images 6: no prompt of up to six images gives more tiles than six views (3 each with max_tiles 12)
    assert profiles["max_images"] == 6 and max(serving.values()) == 18
    assert "**At most 6 images per prompt**: the largest profile (18 tiles)" in (bundle / "README.md").read_text()
    internvl = read(bundles["internvl"][0], "profiles.json")
    assert internvl["max_images"] == MAX_IMAGES


def test_range_profile_covers_every_tile_count_of_any_image(bundles):
    """The single any-count engine's profile spans every count the processor gives images of many aspect ratios,
    and verify.py checks it on each fixed reference (TensorRT only)."""
    bundle, _ = bundles["pocket-tiny"]
    profiles = read(bundle, "profiles.json")
    _, processor = model.load("pocket-tiny")
    tiling = TilingConfig.from_dict(profiles["tiling"])
    seen = {sum(processor.tiles_for_sizes([(w, h)], tiling)) for w in range(40, 4000, 97) for h in range(40, 2000, 61)}
    counts = profiles["vision"]["range_profile"]["tile_counts"]
    assert seen <= set(counts) and seen == set(tile_counts(tiling))
    fixed = {p["tiles"] for p in profiles["vision"]["profiles"]}
    assert set(counts) == seen | fixed
    span = profiles["vision"]["range_profile"]
    assert (span["min"][0], span["max"][0]) == (min(counts), max(counts)) and span["min"][1:] == span["max"][1:]
    ranged = [c for c in read(bundle, "bundle.json")["checks"] if c["engine"] == "vision_range.plan"]
    on_fixed = [c for c in ranged if c.get("engine_only")]
    assert len(on_fixed) == len(fixed) and not any(c["required"] for c in ranged)


def test_range_profile_graph_is_checked_at_counts_no_fixed_engine_takes(bundles, tmp_path):
    """The range engine's graph runs batch sizes the fixed references never do (14 = two images of 7 tiles, 9 = one
    8x1 image + thumbnail with the driving tiling): verify.py checks them in onnxruntime too, so the export itself
    has run the graph there, and an altered reference fails the export."""
    shipped, _ = bundles["pocket-tiny"]
    profiles = read(shipped, "profiles.json")
    span, fixed = profiles["vision"]["range_profile"], {p["tiles"] for p in profiles["vision"]["profiles"]}
    between = [c for c in read(shipped, "bundle.json")["checks"]
               if c["engine"] == "vision_range.plan" and not c.get("engine_only")]
    assert sorted(c["name"] for c in between) == ["vision_range@14tiles", "vision_range@9tiles"]
    assert [x["tiles"] for x in span["checked_between"]] == [14, 9]
    assert all(span["min"][0] < x["tiles"] < span["max"][0] and x["tiles"] not in fixed
               for x in span["checked_between"])
    for check in between:
        tiles = int(check["name"].split("@")[1].removesuffix("tiles"))
        assert np.load(shipped / check["inputs"]["pixel_values"]["file"]).shape[0] == tiles
    text = " ".join((shipped / "README.md").read_text().split())
    assert "on 14 tiles (2 images of up to 7 tiles each) and 9 tiles (one 896x112 image)" in text
    bundle = Path(shutil.copytree(shipped, tmp_path / "bundle"))
    result = verify(bundle, "--runtime", "onnxruntime")
    assert "PASS vision_range@14tiles/image_features" in result.stdout, result.stdout
    path = bundle / between[0]["outputs"]["image_features"]["file"]
    features = np.load(path, allow_pickle=False)
    features[-1] += 0.01 * np.abs(features).max()
    np.save(path, features, allow_pickle=False)
    with pytest.raises(TensorRTExportError, match=r"FAIL vision_range@14tiles/image_features"):
        _check_graphs(bundle)
    assert "SKIP vision_range@14tiles: vision_range.plan not built" in verify(bundle).stdout


def test_range_layouts_pick_counts_between_the_fixed_ones():
    """Every tiling mode gets a range check between the fixed counts where one exists: pad mode (one tile an image)
    has only the multi-image example; the count of each is what the processor cuts."""
    _, processor = model.load("pocket-tiny")
    for tiling in (processor.tiling, TilingConfig(tile_size=processor.tiling.tile_size, mode="pad"),
                   TilingConfig(tile_size=processor.tiling.tile_size, max_tiles=12)):
        found = layouts(processor, tiling, MAX_IMAGES)
        fixed = {x.tiles for x in found}
        between = range_layouts(processor, tiling, found, MAX_IMAGES)
        assert between and all(min(fixed) < x.tiles < max(fixed) and x.tiles not in fixed for x in between)
        for x in between:
            assert sum(processor.tiles_for_sizes(x.images, tiling)) == x.tiles


def test_one_tile_modes_give_one_tile_per_image():
    """pad mode (MobileVLM): one tile per image whatever its size, so a six-view sample is six tiles."""
    _, processor = model.load("pocket-tiny")
    pad = TilingConfig(tile_size=processor.tiling.tile_size, mode="pad")
    assert {x.name: x.tiles for x in layouts(processor, pad)} == {"one_image": 1, "driving_stitched": 1,
                                                                   "driving_six_views": 6,
                                                                   "most_tiles_multi_image": MAX_IMAGES}
    assert {x.name: x.tiles for x in layouts(processor, pad, max_images=2)} == {"one_image": 1, "driving_stitched": 1,
                                                                                "most_tiles_multi_image": 2}


def test_multi_image_prompts_fit_the_largest_profile():
    """A prompt's images share max_tiles (two images: 3 + thumbnail each with max_tiles 6), so several images can
    give more tiles than one image's most: the largest profile (and so max_multimodal_len) holds the most tiles any
    prompt of up to max_images images gives, as the processor cuts them."""
    _, processor = model.load("pocket-tiny")
    tiling = processor.tiling
    assert tiling.max_tiles == 6
    question = [{"role": "user", "content": "Compare the scenes."}]
    for max_images in (3, MAX_IMAGES):
        found = layouts(processor, tiling, max_images)
        largest = max(x.tiles for x in found)
        for n in range(1, max_images + 1):
            for size in ((672, 112), (1600, 900), (112, 672), (2688, 896)):
                assert sum(processor.tiles_for_sizes([size] * n)) <= largest, (max_images, n, size)
        widest = next(x for x in found if x.name == "most_tiles_multi_image")
        encoded = processor(question, images=[Image.new("RGB", s) for s in widest.images])
        assert encoded.pixel_values.shape[0] == widest.tiles == largest
        assert all(len(x.images) <= max_images for x in found)
    assert largest == MAX_IMAGES  # up to 16 images: one tile each beats 3 images x (2 + thumbnail)
    two = processor(question, images=[Image.new("RGB", (672, 112))] * 2)  # the reviewer's case: 8 tiles
    assert two.pixel_values.shape[0] == 8 <= max(x.tiles for x in layouts(processor, tiling, 2)) == 8
    with pytest.raises(TensorRTExportError, match="max_images must be a whole number >= 1, got 0"):
        layouts(processor, tiling, 0)


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_fp16_check_report(name, bundles):
    bundle, printed = bundles[name]
    report = read(bundle, "fp16_check.json")
    graphs = report["graphs"]
    vision = [g for g in graphs if g.startswith("vision_")]
    assert len(vision) == len(read(bundle, "profiles.json")["vision"]["profiles"]) and "decoder" in graphs
    for g in vision:
        stats = graphs[g]["outputs"]["image_features"]
        assert 0 < stats["relative_error"] < 1e-2 and stats["nonfinite_fp16"] == 0  # fp16 ran, and differs a little
        assert stats["within_tolerance"]
    logits = graphs["decoder"]["outputs"]["logits"]
    assert 0 < logits["relative_error"] < 2e-2 and np.isfinite(logits["max_abs_error"])
    for entry in graphs.values():
        magnitudes = entry["magnitudes"]
        assert magnitudes["operators_watched"] > 5 and magnitudes["largest"]
        assert all(r["max_abs"] <= FP16_MAX for r in magnitudes["largest"]) == (not magnitudes["overflow"])
    assert any(r["op"] == "mm" or r["op"] == "addmm" or r["op"] == "bmm"
               for e in graphs.values() for r in e["magnitudes"]["largest"])
    assert report["summary"].startswith("fp16 check:")
    if printed:
        assert report["summary"] in printed


def test_overflow_prone_operators_are_named():
    """A Linear whose outputs pass 65504 and a LayerNorm whose rows' sum of squares does are named with their module
    and operator; a well-scaled twin reports nothing."""

    class Net(torch.nn.Module):
        def __init__(self, scale: float):
            super().__init__()
            self.proj = torch.nn.Linear(8, 64)
            self.norm = torch.nn.LayerNorm(64)
            torch.nn.init.constant_(self.proj.weight, scale)

        def forward(self, x):
            return self.norm(self.proj(x))

    x = torch.ones(2, 8)
    hot = scan_magnitudes(Net(1e4), (x,))
    assert [(r["module"], r["op"]) for r in hot["overflow"]] == [("proj (Linear)", "addmm")]
    assert [(r["module"], r["op"]) for r in hot["norm_sum_of_squares_over_fp16"]] == [("norm (LayerNorm)",
                                                                                      "native_layer_norm")]
    cool = scan_magnitudes(Net(1e-2), (x,))
    assert not cool["overflow"] and not cool["norm_sum_of_squares_over_fp16"]


def test_rmsnorm_modules_are_checked():
    """transformers' Qwen2RMSNorm (the decoder's norms) computes its norm from pow and mean, no norm operator: the
    module is found by its class and its input's row sum of squares is reported under its reduction; measuring it
    adds no operator of its own to the report."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    class Net(torch.nn.Module):
        def __init__(self, scale: float):
            super().__init__()
            self.proj = torch.nn.Linear(8, 64, bias=False)
            self.norm = Qwen2RMSNorm(64)
            torch.nn.init.constant_(self.proj.weight, scale)

        def forward(self, x):
            return self.norm(self.proj(x))

    x = torch.ones(2, 8)
    hot = scan_magnitudes(Net(10.0), (x,))  # rows of 64 x 80: sum of squares 409600 > 65504, every value < 65504
    assert [(r["module"], r["op"]) for r in hot["norm_sum_of_squares_over_fp16"]] == [("norm (Qwen2RMSNorm)", "mean")]
    assert hot["norm_sum_of_squares_over_fp16"][0]["max_row_sum_of_squares"] == pytest.approx(64 * 80.0 ** 2)
    assert not hot["overflow"]
    cool = scan_magnitudes(Net(1e-2), (x,))
    assert not cool["overflow"] and not cool["norm_sum_of_squares_over_fp16"]


def test_readme_names_the_export_route_the_model_has(bundles, tiny_tokenizer, tmp_path, monkeypatch):
    """Routes B and C of the bundle README name the layout `adapt export` writes for the model: hf for InternVL-style
    models; for MobileVLM (ldpv2), which hf and internvl refuse, the mobilevlm layout (it named hf / internvl); for a
    model no such layout takes, that the routes are closed."""
    import deploy.tensorrt_readme as readme

    from .test_checkpoints import write_mobilevlm_v2

    bundle, _ = bundles["pocket-tiny"]
    profiles, fp16 = read(bundle, "profiles.json"), read(bundle, "fp16_check.json")
    assert "(`adapt export --format hf --model MODEL --out hf`, on x86)" in (bundle / "README.md").read_text()
    vlm, processor = model.load(write_mobilevlm_v2(tmp_path / "mvlm", tiny_tokenizer, tie=False).directory)
    text = readme.bundle_readme(vlm, processor, profiles, fp16)
    assert "export it with `adapt export --format mobilevlm` first" in text
    assert "`adapt export --format mobilevlm --model MODEL --out mvlm`" in text
    assert "--format hf --model" not in text and "export it with `adapt export --format hf`" not in text
    monkeypatch.setattr(readme, "exportable_layouts", lambda vlm: [])
    text = readme.bundle_readme(vlm, processor, profiles, fp16)
    assert "**This route is not open to this model**" in text and "there is no such export" in text


def test_verify_passes_as_shipped_and_fails_on_an_altered_reference(bundles, tmp_path):
    shipped, _ = bundles["pocket-tiny"]
    bundle = Path(shutil.copytree(shipped, tmp_path / "bundle"))
    result = verify(bundle, "--runtime", "onnxruntime")
    assert result.returncode == 0, result.stdout + result.stderr
    passes = [line for line in result.stdout.splitlines() if line.startswith("PASS ")]
    checks = read(bundle, "bundle.json")["checks"]
    assert len(passes) == len([c for c in checks if not c.get("engine_only")])
    # one value of the expected logits moved by 1 % of their range: outside the fp32 tolerance
    path = bundle / "references" / "decoder.logits.npy"
    logits = np.load(path, allow_pickle=False)
    logits.flat[7] += 0.01 * np.abs(logits).max()
    np.save(path, logits, allow_pickle=False)
    result = verify(bundle, "--runtime", "onnxruntime")
    assert result.returncode == 1
    assert "FAIL decoder/logits" in result.stdout and "PASS vision_" in result.stdout
    with pytest.raises(TensorRTExportError, match=r"do not reproduce PyTorch.*FAIL decoder/logits"):
        _check_graphs(bundle)  # the same comparison at export time fails the export
    # TensorRT mode without engines: the required vision engines are missing
    result = verify(bundle)
    assert result.returncode == 1 and "vision_1tiles.plan not found" in result.stdout


def test_verify_fails_a_wrong_tile_count(bundles, tmp_path):
    """A vision reference with another tile count than its profile's fails on shape, not silently."""
    bundle = Path(shutil.copytree(bundles["internvl"][0], tmp_path / "bundle"))
    check = [c for c in read(bundle, "bundle.json")["checks"] if c["required"]][-1]  # the last fixed vision profile
    path = bundle / check["outputs"]["image_features"]["file"]
    np.save(path, np.load(path, allow_pickle=False)[:-1], allow_pickle=False)
    result = verify(bundle, "--runtime", "onnxruntime")
    assert result.returncode == 1 and f"FAIL {check['name']}/image_features: shape" in result.stdout


def test_refusals(tmp_path, capsys):
    assert main(["export", "-f", "onnx", "--model", "pocket-tiny", "--recipe", str(DRIVING),
                 "--out", str(tmp_path / "a")]) == 1
    assert "--recipe applies to --format tensorrt only" in capsys.readouterr().err
    assert main(["export", "-f", "onnx", "--model", "pocket-tiny", "--max-images", "2", "--out", str(tmp_path / "a")]) == 1
    assert "--max-images applies to --format tensorrt only" in capsys.readouterr().err
    recipe = tmp_path / "wrong_tiles.yaml"
    recipe.write_text(DRIVING.read_text().replace("tile_size: null", "tile_size: 224"))
    assert main(["export", "-f", "tensorrt", "--model", "pocket-tiny", "--recipe", str(recipe),
                 "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}: recipe 'driving_pocket-tiny_full': tiling.tile_size 224 differs from the model's image size 112" in err
    assert not (tmp_path / "b").exists()


def test_readme_build_commands_run_as_written(bundles):
    """The vision commands find trtexec on a stock JetPack (it is not on PATH there), and the README names the
    graphs' real opset and the TensorRT that parses it."""
    bundle, _ = bundles["pocket-tiny"]
    readme = (bundle / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0] == 'export PATH="$PATH:/usr/src/tensorrt/bin"' and block[1].startswith("trtexec ")
    profiles = read(bundle, "profiles.json")
    assert profiles["onnx_opset"] == 17 and "vision.onnx" in profiles["layer_normalization"]
    flat = " ".join(readme.split())
    assert "The graphs are ONNX opset 17, which TensorRT 8.6 (JetPack 6.0) and 10.3 (JetPack 6.1) parse." in flat
    assert "TensorRT 8.5 (JetPack 5) cannot build this bundle: `vision.onnx`" in flat


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_graphs_are_written_at_opset_17_and_match_pytorch(name, bundles):
    """TensorRT 8.6 (JetPack 6.0) parses opset 17 and torch.onnx writes 18: every graph is converted,
    and still reproduces PyTorch's references (verify.py in onnxruntime)."""
    bundle, _ = bundles[name]
    for graph in ("vision.onnx", "embed.onnx", "decoder.onnx"):
        model = onnx.load(str(bundle / graph), load_external_data=False)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17], graph
        onnx.checker.check_model(str(bundle / graph))
    result = verify(bundle, "--runtime", "onnxruntime")
    assert result.returncode == 0 and "FAIL" not in result.stdout, result.stdout


def test_opset_16_bundle_has_no_layer_normalization_and_matches_opset_17(bundles, tmp_path):
    """TensorRT 8.5 (JetPack 5) has no LayerNormalization importer: `--opset 16` writes pocket-tiny's graphs at opset
    16 with none (the export's own check against PyTorch passed, as verify.py's does), computing what the opset-17
    graphs do on every reference input, and the README and profiles.json say so."""
    from deploy.tensorrt import TOLERANCE
    from deploy.tensorrt_verify import feeds_for

    shipped, _ = bundles["pocket-tiny"]
    out = tmp_path / "jetpack5"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", "-f", "tensorrt", "--model", "pocket-tiny", "--recipe", str(DRIVING),
                     "--max-images", "6", "--opset", "16", "--out", str(out)]) == 0
    for graph in ("vision.onnx", "embed.onnx", "decoder.onnx"):
        model = onnx.load(str(out / graph), load_external_data=False)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [16], graph
        assert "LayerNormalization" not in {n.op_type for n in model.graph.node}, graph
    profiles = read(out, "profiles.json")
    assert profiles["onnx_opset"] == 16 and profiles["layer_normalization"] == []
    assert profiles["layer_normalization_decomposed"] == ["vision.onnx"]
    flat = " ".join((out / "README.md").read_text().split())
    assert "The graphs are ONNX opset 16, for TensorRT 8.5 (JetPack 5): every LayerNormalization" in flat
    result = verify(out, "--runtime", "onnxruntime")
    assert result.returncode == 0 and "FAIL" not in result.stdout, result.stdout
    tol = TOLERANCE["onnxruntime"]
    sessions = {}
    for check in read(shipped, "bundle.json")["checks"]:
        if check.get("engine_only"):
            continue
        feeds = feeds_for(check, shipped)
        got = [sessions.setdefault((b, check["onnx"]), ort.InferenceSession(str(b / check["onnx"]))).run(None, feeds)[0]
               for b in (shipped, out)]
        assert got[0].shape == got[1].shape, check["name"]
        assert np.abs(got[1] - got[0]).max() <= tol["atol"] + tol["rtol"] * np.abs(got[0]).max(), check["name"]


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_no_graph_constant_overflows_fp16(name, bundles):
    """The decoder's attention-mask fill (torch.finfo(float32).min: -inf in fp16, NaN on a fully masked row) is
    written as a value fp16 holds; the fp16 report names the constant that was changed."""
    bundle, _ = bundles[name]
    for graph in ("vision.onnx", "embed.onnx", "decoder.onnx"):
        model = onnx.load(str(bundle / graph), load_external_data=False)
        tensors = [i for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL]
        tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.t.ByteSize()]
        for tensor in tensors:
            array = onnx.numpy_helper.to_array(tensor)
            if array.dtype.kind == "f":
                assert np.isfinite(array).all() and np.abs(array).max(initial=0) <= FP16_MAX, (graph, tensor.name)
    report = read(bundle, "fp16_check.json")
    clamped = report["clamped_constants"]
    assert clamped and all(c["graph"] == "decoder.onnx" and c["was"] < -FP16_MAX and c["now"] == -32768.0
                           for c in clamped)
    assert any(u.startswith("Where ") for c in clamped for u in c["used_by"])
    summary = f"{len(clamped)} constant(s) below fp16's range set to -32768 (attention-mask fills: decoder.onnx:"
    assert summary in report["summary"]


def test_trtllm_max_input_len_leaves_room_to_decode(bundles):
    bundle, _ = bundles["pocket-tiny"]
    decoder = read(bundle, "profiles.json")["decoder"]
    assert decoder["max_input_len"] == decoder["max_sequence"] - 256 > decoder["max_multimodal_len"]
    # the six camera views as six images (18 tiles, each image framed) are the longest prompt, and fit
    prompts = decoder["prompt_tokens"]
    assert prompts["longest"] == "driving_six_views" and prompts["by_layout"]["driving_stitched"] == 250
    assert decoder["max_multimodal_len"] < prompts["by_layout"]["driving_six_views"] <= decoder["max_input_len"]
    assert "`driving_six_views` with the question" in " ".join((bundle / "README.md").read_text().split())
    assert decoder["max_sequence_cut"] is None
    readme = (bundle / "README.md").read_text()
    assert (f"--max_input_len {decoder['max_input_len']} --max_seq_len {decoder['max_sequence']} "
            f"--max_multimodal_len {decoder['max_multimodal_len']}") in readme


def test_verify_checks_a_decode_step_on_a_filled_cache(bundles, tmp_path):
    """The decoder is also checked on one token with a filled KV cache (every generated token's path), inside its
    profile; an engine that ignores the cache passes the prompt check but fails this one."""
    bundle = Path(shutil.copytree(bundles["pocket-tiny"][0], tmp_path / "bundle"))
    checks = {c["name"]: c for c in read(bundle, "bundle.json")["checks"]}
    step, shapes = checks["decoder_step"], read(bundle, "profiles.json")["decoder"]["shapes"]
    assert step["engine"] == "decoder.plan" and step["onnx"] == "decoder.onnx"
    for name, spec in step["inputs"].items():
        shape = np.load(bundle / spec["file"], allow_pickle=False).shape
        assert all(lo <= d <= hi for lo, d, hi in zip(shapes[name]["min"], shape, shapes[name]["max"])), name
        if name.startswith("past_key_values."):
            assert shape[2] > 0, name
    assert np.load(bundle / step["inputs"]["inputs_embeds"]["file"]).shape[1] == 1
    for name, spec in step["inputs"].items():  # what an engine that drops the cache computes
        if name.startswith("past_key_values."):
            path = bundle / spec["file"]
            np.save(path, np.zeros_like(np.load(path, allow_pickle=False)), allow_pickle=False)
    result = verify(bundle, "--runtime", "onnxruntime")
    assert result.returncode == 1, result.stdout
    assert "PASS decoder/logits" in result.stdout and "FAIL decoder_step/logits" in result.stdout


def test_readme_says_how_a_prompt_without_a_fixed_engine_runs(bundles):
    """The fixed engines take one count each (1, 13, 18 with the driving tiling and six images); two images give up
    to 7 + 7 = 14 tiles: the README and profiles.json say it runs on the range engine (any count 1-18) or as 13 + 1
    on the fixed ones, which are per-tile, so the pieces' features concatenate to the whole batch's."""
    bundle, _ = bundles["pocket-tiny"]
    profiles = read(bundle, "profiles.json")
    vision = profiles["vision"]
    assert vision["other_counts"]["example"] == {"images": 2, "tiles": 14, "each": 7, "split": [13, 1]}
    assert vision["range_profile"]["takes"] == "any tile count from 1 to 18"
    text = " ".join((bundle / "README.md").read_text().split())
    assert "takes a prompt whose tiles add up to exactly its count and no other" in text
    assert "E.g. 2 images of up to 7 tiles each give 14, which no fixed engine takes: 13 + 1" in text
    assert "it takes any tile count from 1 to 18 in one call" in text
    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((14, *vision["range_profile"]["min"][1:])).astype(np.float32)
    whole = session.run(None, {"pixel_values": pixels})[0]
    pieces = np.concatenate([session.run(None, {"pixel_values": pixels[:13]})[0],
                             session.run(None, {"pixel_values": pixels[13:]})[0]])
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_readme_files_table_names_every_file_in_the_bundle(name, bundles):
    """An automotive team copies the folder and reads its Files table: every file in it is named there (the
    tokenizer's by name, onnxruntime-genai's config included), and nothing named there is missing."""
    bundle, _ = bundles[name]
    text = (bundle / "README.md").read_text()
    table = text.split("## Files", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in table.strip().splitlines()[2:]:  # below the header and its rule
        for cell in row.split("|")[1].split(","):
            cell = cell.strip()
            if cell.endswith(" (+ `.data`)"):
                cell = cell[:-len(" (+ `.data`)")]
                named.add(cell.strip("`") + ".data")
            if cell.startswith("`") and "*" not in cell:
                named.add(cell.strip("`"))
    shipped = {p.name for p in bundle.iterdir() if p.is_file()}
    assert shipped - named == set() and named - shipped == set()
