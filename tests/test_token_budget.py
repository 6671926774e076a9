"""Image-token budgets for the stitched and six-view driving samples (issue 13 item 3): fewer tiles, pooled pixel
shuffle (the pre-trained MLP kept), a Q-Former with fewer queries; counts through the processor on real images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import model
from adapt.recipe import RecipeError, load_recipe, parse_recipe
from model.checkpoints.io import CheckpointError
from model.errors import ModelConfigError
from model.projectors import build_projector, projector_tokens
from model.resources import templates_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_token_budget import VARIANTS, budget_overrides, mini_internvl_tokens  # noqa: E402

STITCHED = Image.new("RGB", (2688, 896), (90, 120, 150))
CAMERA = Image.new("RGB", (1600, 900), (90, 120, 150))
DRIVING = templates_dir() / "recipes" / "driving_pocket-tiny_full.yaml"
GRID = 112 // 14  # pocket-tiny: 112 px tiles of 14 px patches


def _image_tokens(processor, images) -> tuple[int, int]:
    text = "".join("<image>\n" for _ in images) + "What is ahead?"
    enc = processor([{"from": "human", "value": text}], images=images)
    return sum(enc.num_tiles), int((enc.input_ids == processor.image_token_id).sum())


def _driving(tmp_path, *overrides: str):
    return load_recipe(DRIVING, [f"output.dir={tmp_path}", *overrides])


@pytest.mark.parametrize("overrides,load,tiles,per_tile", [
    ((), {}, 6 * 2 + 1, (GRID // 2) ** 2),  # the template: 6x2 grid + thumbnail, 16 tokens a tile
    (("tiling.max_tiles=2",), {}, 2 * 1 + 1, (GRID // 2) ** 2),
    (("tiling.max_tiles=3", "tiling.thumbnail=false"), {}, 3, (GRID // 2) ** 2),  # one tile a column of cameras
    (("model.projector_options.pool=2",), {"projector_options": {"pool": 2}}, 6 * 2 + 1, (GRID // 4) ** 2),
    (("model.projector_options.downsample_ratio=0.25",), {"projector_options": {"downsample_ratio": 0.25}},
     6 * 2 + 1, (GRID // 4) ** 2),
    (("model.projector=qformer", "model.projector_options.num_queries=4"),
     {"projector": "qformer", "projector_options": {"num_queries": 4}}, 6 * 2 + 1, 4),
])
def test_stitched_view_tokens_per_option(tmp_path, overrides, load, tiles, per_tile):
    recipe = _driving(tmp_path, *overrides)
    assert (recipe.model.projector, recipe.model.projector_options) == (load.get("projector"),
                                                                         load.get("projector_options", {}))
    _, processor = model.load("pocket-tiny", **load)
    processor.tiling = recipe.tiling_for(processor.tiling)
    assert _image_tokens(processor, [STITCHED]) == (tiles, tiles * per_tile)


def test_six_view_sample_shares_the_tile_cap(tmp_path):
    _, processor = model.load("pocket-tiny")
    processor.tiling = _driving(tmp_path).tiling_for(processor.tiling)
    per_tile = (GRID // 2) ** 2
    assert _image_tokens(processor, [CAMERA] * 6) == (6 * 3, 6 * 3 * per_tile)  # 12 // 6 = 2 tiles + thumbnail each
    processor.tiling = _driving(tmp_path, "tiling.max_tiles=6").tiling_for(processor.tiling)
    assert _image_tokens(processor, [CAMERA] * 6) == (6, 6 * per_tile)  # one tile a camera, no thumbnail


def test_mini_internvl_budgets():
    budget = budget_overrides(10, 2, 5, 8)
    tokens = {key: mini_internvl_tokens(DRIVING, budget, variant) for key, variant in VARIANTS.items()}
    assert tokens["baseline"] == 13 * 256 == 3328  # the figure: 6x2 + thumbnail at 256 a tile
    assert all(tokens[key] <= 3328 // 4 for key in tokens if key != "baseline")
    assert tokens["pooled"] == tokens["qformer"] == tokens["shuffle4"] == 13 * 64
    assert (tokens["tiles2"], tokens["tiles3"]) == (3 * 256, 3 * 256)


def test_pooled_projector_counts_shapes_and_gradients():
    assert projector_tokens("pixel_shuffle_mlp", 32, 32, pool=2) == 64
    assert projector_tokens("pixel_shuffle_mlp", 32, 32, pool=4) == 16
    torch.manual_seed(0)
    plain = build_projector("pixel_shuffle_mlp", 96, 128)
    pooled = build_projector("pixel_shuffle_mlp", 96, 128, pool=2)
    pooled.load_state_dict(plain.state_dict(), strict=True)  # the same weights fit
    x = torch.randn(3, GRID * GRID, 96, requires_grad=True)
    out = pooled(x)
    assert out.shape == (3, pooled.num_tokens(GRID, GRID), 128) == (3, 4, 128)
    averaged = F.avg_pool2d(x.detach().transpose(1, 2).reshape(3, 96, GRID, GRID), 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, plain(averaged))  # 2x2 patches averaged, then InternVL's shuffle and MLP
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().min() > 0  # every patch reaches the output
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pooled.parameters())
    with pytest.raises(ModelConfigError, match="divisible by 6"):
        projector_tokens("pixel_shuffle_mlp", GRID, GRID, pool=3)
    with pytest.raises(ModelConfigError, match="pool must be a positive int"):
        build_projector("pixel_shuffle_mlp", 96, 128, pool=0)


def test_pooled_pixel_shuffle_keeps_pretrained_weights_and_trains():
    base, _ = model.load("pocket-tiny")
    vlm, processor = model.load("pocket-tiny", projector_options={"pool": 2})
    assert vlm.config.projector_options == {"downsample_ratio": 0.5, "ps_version": "v2", "pool": 2}
    assert vlm.config.image_seq_length == (GRID // 4) ** 2
    for key, value in base.multi_modal_projector.state_dict().items():
        assert torch.equal(vlm.multi_modal_projector.state_dict()[key], value), key
    conversation = [{"from": "human", "value": "<image>\nWhat is ahead?"}, {"from": "gpt", "value": "a car"}]
    inputs = processor(conversation, images=[STITCHED], add_generation_prompt=False, with_labels=True).to_model_inputs()
    vlm.train()
    out = vlm(**inputs)
    out.loss.backward()
    assert torch.isfinite(out.loss) and vlm.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    with pytest.raises(ModelConfigError, match="whole factor"):  # 3x3 patches a token: no trained column fits
        model.load("pocket-tiny", projector_options={"downsample_ratio": 1 / 3})
    with pytest.raises(ModelConfigError, match="num_queries"):
        model.load("pocket-tiny", projector_options={"num_queries": 4})


def test_coarser_pixel_shuffle_starts_from_the_trained_mlp():
    """downsample_ratio 0.5 -> 0.25 widens the trained MLP: on patch maps that are constant over each 2x2 block (where
    the LayerNorm sees the same statistics either way) it is exactly the pooled projector; every patch has its own
    columns, so unlike pooling it can learn what differs inside a block."""
    torch.manual_seed(0)
    trained = build_projector("pixel_shuffle_mlp", 24, 32)
    for p in trained.parameters():
        torch.nn.init.normal_(p)
    pooled = build_projector("pixel_shuffle_mlp", 24, 32, pool=2)
    pooled.load_state_dict(trained.state_dict())
    wide = build_projector("pixel_shuffle_mlp", 24, 32, downsample_ratio=0.25)
    wide.load_widened(trained)
    assert projector_tokens("pixel_shuffle_mlp", GRID, GRID, downsample_ratio=0.25) == wide.num_tokens(GRID, GRID) == 4
    blocks = torch.randn(3, GRID // 2, GRID // 2, 24)
    x = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2).reshape(3, GRID * GRID, 24)
    torch.testing.assert_close(wide(x), pooled(x), rtol=1e-5, atol=1e-4)
    y = torch.randn(3, GRID * GRID, 24, requires_grad=True)
    wide(y).square().mean().backward()
    grads = wide.linear_1.weight.grad.reshape(32, 16, 24).abs().sum(dim=(0, 2))
    assert y.grad.abs().min() > 0 and grads.min() > 0  # every patch, every one of the 4x4 positions' columns
    with pytest.raises(ModelConfigError, match="multiple"):
        build_projector("pixel_shuffle_mlp", 24, 32).load_widened(wide)


def test_coarser_pixel_shuffle_loads_trains_and_round_trips(tmp_path):
    from deploy.hf import export

    vlm, processor = model.load("pocket-tiny", projector_options={"downsample_ratio": 0.25})
    assert vlm.config.projector_options["downsample_ratio"] == 0.25 and vlm.config.image_seq_length == 4
    conversation = [{"from": "human", "value": "<image>\nWhat is ahead?"}, {"from": "gpt", "value": "a car"}]
    inputs = processor(conversation, images=[STITCHED], add_generation_prompt=False, with_labels=True).to_model_inputs()
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 4 * len(inputs["pixel_values"])
    with torch.no_grad():
        logits = vlm(**inputs).logits
    for layout in ("pocket", "hf"):  # transformers' InternVLConfig names the ratio, so its layout keeps it
        again, _ = model.load(export(vlm, processor, layout, tmp_path / layout))
        assert again.config.image_seq_length == 4, layout
        with torch.no_grad():
            torch.testing.assert_close(again(**inputs).logits, logits, msg=layout)
    from model.checkpoints.original import original_config

    config = vlm.config.__class__.from_dict(vlm.config.to_dict())
    config.chat_template = "Hermes-2"  # the original layout needs one of InternVL's templates
    assert original_config(config)["downsample_ratio"] == 0.25  # and so does the original InternVL config


def test_recipe_errors(tmp_path):
    sources = {"sources": [{"name": "a", "path": "a.jsonl"}]}

    def parse(spec: dict):
        return parse_recipe({"model": spec, "data": sources, "mixing": {"general_ratio": 0}}, tmp_path, "budget")

    with pytest.raises(RecipeError, match="fit no projector"):
        parse({"projector_options": {"pol": 2}})
    with pytest.raises(RecipeError, match="pool"):
        parse({"projector": "pixel_shuffle_mlp", "projector_options": {"pool": 0}})
    assert parse({"projector_options": {"pool": 2}}).model.projector_options == {"pool": 2}
    with pytest.raises(RecipeError, match="max_tiles"):
        _driving(tmp_path, "tiling.max_tiles=0")


def test_exports_refuse_pooled_pixel_shuffle():
    from deploy.gguf import GGUFExportError, _projector_facts
    from model.checkpoints.native import native_config
    from model.checkpoints.original import original_config

    vlm, _ = model.load("pocket-tiny", projector_options={"pool": 2})
    for write in (native_config, original_config):
        with pytest.raises(CheckpointError, match="pooled pixel shuffle"):
            write(vlm.config)
    with pytest.raises(GGUFExportError, match="pooled pixel shuffle"):  # llama.cpp would emit 4x the tokens
        _projector_facts(vlm)


@pytest.mark.parametrize("argv,expected", [
    (["2688x896"], "13 tiles incl. thumbnail, 3328 image tokens"),  # Mini-InternVL's stitched view
    (["2688x896", "--pool", "2"], "13 tiles incl. thumbnail, 832 image tokens"),
    (["2688x896", "--max-tiles", "2"], "3 tiles incl. thumbnail, 768 image tokens"),
    (["1600x900", "--images", "6", "--max-tiles", "6"], "6 images: 6 tiles, 1536 image tokens"),
])
def test_adapt_tiles_reports_the_budget(capsys, argv, expected):
    from adapt.cli import main

    assert main(["tiles", *argv]) == 0
    assert expected in capsys.readouterr().out


@pytest.fixture(scope="module")
def pooled():
    return model.load("pocket-tiny", projector_options={"pool": 2})


def test_pocket_layout_keeps_the_pooled_projector(pooled, tmp_path):
    from deploy.hf import export

    vlm, processor = pooled
    again, proc2 = model.load(export(vlm, processor, "pocket", tmp_path / "pocket"))
    assert again.config.projector_options["pool"] == 2 and again.multi_modal_projector.pool == 2
    conversation = [{"from": "human", "value": "<image>\nWhat is ahead?"}, {"from": "gpt", "value": "a car"}]
    a = processor(conversation, images=[STITCHED], add_generation_prompt=False, with_labels=True).to_model_inputs()
    b = proc2(conversation, images=[STITCHED], add_generation_prompt=False, with_labels=True).to_model_inputs()
    assert torch.equal(a["input_ids"], b["input_ids"]) and int((b["input_ids"] == proc2.image_token_id).sum()) == 4 * len(b["pixel_values"])
    with torch.no_grad():
        assert torch.equal(again(**b).logits, vlm(**a).logits)


@pytest.mark.slow
def test_onnx_export_runs_the_pooled_projector_as_pytorch(pooled, tmp_path):
    from deploy.hf import export

    from .test_onnx import OnnxVLM, relative_error

    vlm, processor = pooled
    out = export(vlm, processor, "onnx", tmp_path / "onnx")
    enc = processor([{"role": "user", "content": "What is ahead?"}], images=[STITCHED])
    with OnnxVLM(out) as runtime:
        features = runtime.encode_images(enc.pixel_values.numpy())
    with torch.no_grad():
        expected = vlm.get_image_features(enc.pixel_values).numpy()
    assert features.shape == expected.shape == (len(enc.pixel_values), 4, 128)
    assert relative_error(features, expected) < 1e-4


def test_detail_probe_shows_each_scene_in_its_named_camera_only(tmp_path):
    """The probe of bench/bench_token_budget.py --set probe: each held-out general-world record becomes one stitched
    view whose named camera holds the scene (centred, at the cell's height) and whose other cells are empty; the
    question, options and answer are the record's own, and adapt's reader takes every record."""
    import json

    import numpy as np

    from adapt.data.samples import SkipLog, SourceSpec, read_source
    from bench.bench_token_budget import write_probe_split
    from domains.driving.layout import CELL_SIZE, LABEL_SIZE, STITCH_ORDER, cell_of
    from domains.general.world import generate_general

    generate_general(tmp_path / "general", n_train=4, n_test=12, answer_style="label")
    assert write_probe_split(tmp_path / "general", "test", tmp_path / "probe", 12, seed=1) == 12
    originals = [json.loads(line) for line in (tmp_path / "general" / "test.jsonl").open()]
    probe = [json.loads(line) for line in (tmp_path / "probe" / "test.jsonl").open()]
    assert len({p["meta"]["camera"] for p in probe}) > 1  # cameras drawn, not fixed
    side = CELL_SIZE[1]
    for original, sample in zip(originals, probe, strict=True):
        for key in ("conversations", "answer", "label", "options", "task"):
            assert sample[key] == original[key]
        assert sample["meta"]["family"] == original["family"]
        view = np.asarray(Image.open(tmp_path / "probe" / sample["image"]).convert("RGB"), dtype=np.int16)
        assert view.shape == (896, 2688, 3)
        scene = np.asarray(Image.open(tmp_path / "general" / original["image"]).convert("RGB")
                           .resize((side, side), Image.Resampling.NEAREST), dtype=np.int16)
        for camera in STITCH_ORDER:
            col, row = cell_of(camera)
            cell = view[row * 448 + LABEL_SIZE + 20:(row + 1) * 448, col * 896:(col + 1) * 896]  # below the label
            if camera == sample["meta"]["camera"]:
                x0 = (CELL_SIZE[0] - side) // 2
                shown = cell[:, x0:x0 + side]
                assert np.abs(shown - scene[LABEL_SIZE + 20:]).mean() < 6  # JPEG, not the pixels exactly
            else:
                assert np.abs(cell - 128).max() < 8, camera  # an empty grey frame
    records = read_source(SourceSpec("probe", tmp_path / "probe" / "test.jsonl"), skips := SkipLog())
    assert len(records) == 12 and len(skips) == 0


def test_probe_difference_is_paired_over_the_same_questions(tmp_path):
    """The probe table's Δ compares two budgets question by question (lines present in both), with two standard
    errors of the mean difference; answers of other sources do not count."""
    import json
    import statistics

    from bench.bench_token_budget import _paired_delta

    def report(name, right):
        folder = tmp_path / name
        folder.mkdir()
        text = {"task": "mc", "prompt": "q", "prediction": "a", "reference": "a"}  # a Prediction's other fields
        rows = [{"source": "probe", "line": line, **text, "meta": {"family": "color"},
                 "scores": {"accuracy": float(ok)}} for line, ok in right.items()]
        rows.append({"source": "general", "line": 1, **text, "meta": {}, "scores": {"accuracy": 1.0}})
        (folder / "predictions_adapted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"report": str(folder)}

    base = report("base", {1: 1, 2: 1, 3: 0, 4: 0, 5: 1})
    cut = report("cut", {1: 1, 2: 0, 3: 0, 4: 0})  # line 5 missing: not compared
    mean, se2 = _paired_delta(cut, base)
    diffs = [0, -1, 0, 0]
    assert mean == pytest.approx(statistics.fmean(diffs))
    assert se2 == pytest.approx(2 * statistics.stdev(diffs) / 2)


def test_driving_table_pairs_nuscenes_answers_and_names_the_budget(tmp_path):
    """The driving table's Δ nuscenes compares a budget with the baseline sample by sample (each nuScenes sample's
    own score, grounding or region), with two standard errors; the caption says whether the budget is the
    template's or a reduced one."""
    import argparse
    import json

    from bench.bench_token_budget import table

    def run(name, nuscenes):
        folder = tmp_path / name
        folder.mkdir()
        text = {"task": "grounding", "prompt": "q", "prediction": "a", "reference": "a"}  # a Prediction's other fields
        rows = [{"source": "nuscenes", "line": line, **text,
                 "scores": {"acc@0.5" if line % 2 else "accuracy": float(ok)}} for line, ok in nuscenes.items()]
        rows.append({"source": "drivelm", "line": 1, **text, "scores": {}})  # corpus-level: no score of its own
        (folder / "predictions_adapted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        mean = sum(nuscenes.values()) / len(nuscenes)
        sources = {"drivelm": {"kind": "domain", "main": 0.0, "n": 1, "metrics": {"language": 0.0}},
                   "nuscenes": {"kind": "domain", "main": mean, "n": len(nuscenes), "metrics": {}},
                   "general": {"kind": "general", "main": 0.5, "n": 2, "metrics": {}}}
        return {"label": name, "report": str(folder), "tokens": 48, "tiles": 3, "tokens_per_tile": 16,
                "mini_internvl_tokens": 768, "train_s": 60.0, "eval_s": 1.0, "eval_samples": 1, "prefill_ms": 1.0,
                "summary": {"sources": sources, "groups": {"domain": {"main": mean / 2}, "general": {"main": 0.5}}}}

    results = {"variants": {"baseline": run("baseline", {1: 0, 2: 0, 3: 1, 4: 0}),
                            "cut": run("cut", {1: 1, 2: 1, 3: 1, 4: 0})}, "minutes": 1.0, "command": "python x"}
    args = argparse.Namespace(steps=300, batch_size=16, eval_samples=4, max_new_tokens=200)
    text = table(results, args)
    cut_row = next(line for line in text.splitlines() if line.startswith("| cut |"))
    # differences 1, 1, 0, 0: mean 0.5, stdev 0.577, 2 SE = 0.577
    assert "| +50.0 ± 57.7 |" in cut_row
    assert "The template's budget, the same for every row" in text
    reduced = table(results, argparse.Namespace(steps=16, batch_size=4, eval_samples=4, max_new_tokens=48))
    assert "Reduced budget, the same for every row" in reduced
