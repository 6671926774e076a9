"""A distilled student in its teacher's VLM (issue 13): `adapt distill` writes the projection of the pair the VLM's
projector reads into final/, and `model.vision` puts it in front of the VLM's trained projector
(`model.vision_adapter: auto`), which then trains, saves, reloads and exports (folded, or refused with the reason)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import model
from adapt.distill import adapter_pair, distill, no_adapter_reason
from adapt.recipe import RecipeError, load_recipe
from adapt.train import train
from deploy.hf import ExportError, export
from domains.general.world import generate_general, generate_landcover
from model.checkpoints.tower import load_vision, load_vision_adapter, save_tower, save_vision_adapter
from model.errors import ModelConfigError
from model.projectors import AdaptedProjector
from model.vision import layer_features, select_features
from tests.deps import require
from tests.test_distill import write_recipe

STEPS = 4
NARROW = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
          "image_size": 112}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_general(root / "data" / "general", n_train=16, n_test=4)
    generate_landcover(root / "data" / "landcover", n_train=16, n_test=4)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir) -> Path:
    """A 4-step distillation of pocket-tiny (96 wide, 4 layers) into a 48-wide 3-layer student: its output folder."""
    recipe = load_recipe(write_recipe(tmp_path_factory.mktemp("run"), data_dir, steps=STEPS, save_every=STEPS))
    distill(recipe, progress=False)
    return Path(recipe.output.dir)


@pytest.fixture(scope="module")
def base() -> model.PocketVLM:
    return model.load("pocket-tiny")[0]


def image_inputs(processor, image) -> dict:
    return processor([{"role": "user", "content": "Which class?"}], images=[image]).to_model_inputs()


def test_the_paired_feature_is_the_one_the_projector_reads():
    # a tower with a final norm (use_mean_pooling false): its last block's features are the normed output
    tower, _ = load_vision("internvit-300m", {**NARROW, "use_mean_pooling": False})
    nn.init.normal_(tower.layernorm.weight)
    pixels = torch.randn(2, 3, 112, 112)
    last = layer_features(tower, pixels, [2])[0]
    assert torch.allclose(last, select_features(tower, pixels, -1))
    assert not torch.allclose(last, tower(pixel_values=pixels, output_hidden_states=True).hidden_states[2][:, 1:])
    assert torch.allclose(layer_features(tower, pixels, [1])[0], select_features(tower, pixels, -2))
    # the pair of the projector's feature: the last blocks for vision_feature_layer -1, the ones before for -2
    assert adapter_pair([(3, 2), (4, 3)], -1, 4, 3) == 1
    assert adapter_pair([(3, 2), (4, 3)], -2, 4, 3) == 0
    assert adapter_pair([(2, 2), (4, 3)], -2, 4, 3) is None


def test_a_layer_index_naming_the_last_block_pairs_nothing():
    # vision_feature_layer 2 on a 2-block tower reads hidden_states[2], before the final norm; the distilled last
    # block is the normed output, so no pair gives what that VLM's projector reads
    tower, _ = load_vision("internvit-300m", {**NARROW, "use_mean_pooling": False})
    nn.init.normal_(tower.layernorm.weight)
    pixels = torch.randn(2, 3, 112, 112)
    assert not torch.allclose(layer_features(tower, pixels, [2])[0], select_features(tower, pixels, 2))
    assert torch.allclose(layer_features(tower, pixels, [1])[0], select_features(tower, pixels, 1))
    assert adapter_pair([(3, 2), (4, 3)], 4, 4, 3) is None  # the teacher's last block, and beyond the student's
    assert adapter_pair([(3, 3), (4, 3)], 3, 4, 3) is None  # the student's last block
    assert adapter_pair([(2, 2), (4, 3)], 2, 4, 3) == 0
    assert adapter_pair([(2, 1), (4, 3)], -3, 4, 3) == 0
    assert adapter_pair([(2, 1), (4, 3)], -4, 4, 3) is None  # blocks 1 and 0: not a pair here
    # the report says which of these it was
    assert "names the teacher's last block by its index" in no_adapter_reason(4, 4, 3)
    assert "names the student's last block by its index" in no_adapter_reason(3, 4, 3)
    assert no_adapter_reason(5, 6, 3) == "vision_feature_layer 5 is not a layer of the student's 3 blocks"
    assert no_adapter_reason(-4, 4, 3).startswith("no pair joins the teacher block")


def test_distill_writes_the_projection_of_that_pair(run):
    final = run / "final"
    info = json.loads((final / "vision_adapter.json").read_text())
    assert info == {"student_width": 48, "teacher_width": 96, "vision_feature_layer": -1, "pair": [4, 3],
                    "teacher": "pocket-tiny"}
    trained = load_file(run / f"checkpoint-{STEPS}" / "trainable.safetensors")  # pairs [(3, 2), (4, 3)]: the 2nd
    stored = load_file(final / "vision_adapter.safetensors")
    assert torch.equal(stored["weight"], trained["projections.1.weight"])
    assert torch.equal(stored["bias"], trained["projections.1.bias"])
    report = json.loads((run / "report.json").read_text())
    assert report["vision_adapter"] == {"pair": [4, 3], "vision_feature_layer": -1}
    assert "Vision adapter: the projection of pair [4, 3]" in (run / "report.md").read_text()


def test_the_vlm_keeps_its_projector_behind_the_adapter(run, base, example_image):
    final = run / "final"
    vlm, processor = model.load("pocket-tiny", vision=final)
    assert isinstance(vlm.multi_modal_projector, AdaptedProjector) and vlm.config.vision_adapter_width == 96
    kept, own = base.multi_modal_projector.state_dict(), vlm.own_projector.state_dict()
    assert kept.keys() == own.keys() and all(torch.equal(kept[k], own[k]) for k in kept)
    adapter, _ = load_vision_adapter(final)
    assert torch.equal(vlm.multi_modal_projector.adapter.weight, adapter.weight)
    pixels = torch.randn(3, 3, 112, 112)
    features = vlm.get_image_features(pixels)
    assert features.shape == base.get_image_features(pixels).shape == (3, 16, 128)
    student, _ = load_vision(final)
    expected = base.multi_modal_projector(adapter(select_features(student, pixels, -1)))
    assert torch.allclose(features, expected, atol=1e-6)
    inputs = image_inputs(processor, example_image)
    out = vlm(**inputs)
    assert out.logits.shape == (*inputs["input_ids"].shape, base.config.text_config.vocab_size)
    # fresh: the adapter is ignored and a 48-wide tower gets a fresh projector
    fresh, _ = model.load("pocket-tiny", vision=final, vision_adapter="fresh")
    assert not isinstance(fresh.multi_modal_projector, AdaptedProjector)
    assert fresh.multi_modal_projector.layer_norm.normalized_shape == (192,)


def test_a_student_equal_to_the_teacher_gives_the_teacher_vlm(tmp_path, base, example_image):
    base_with_processor, processor = model.load("pocket-tiny")
    save_tower(base.vision_tower, processor.tiling, tmp_path / "same")
    identity = nn.Linear(96, 96)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(96))
        identity.bias.zero_()
    save_vision_adapter(identity, tmp_path / "same", {"vision_feature_layer": -1, "pair": [4, 4], "teacher": "pocket-tiny"})
    vlm, _ = model.load("pocket-tiny", vision=tmp_path / "same")
    assert isinstance(vlm.multi_modal_projector, AdaptedProjector)
    inputs = image_inputs(processor, example_image)
    assert torch.allclose(vlm(**inputs).logits, base_with_processor(**inputs).logits, atol=1e-5)


def test_an_adapter_that_does_not_fit_is_not_used(tmp_path, base):
    tower, tiling = load_vision("internvit-300m", NARROW)
    save_tower(tower, tiling, tmp_path / "t")
    save_vision_adapter(nn.Linear(48, 64), tmp_path / "t", {"vision_feature_layer": -1, "pair": [2, 2], "teacher": "x"})
    with pytest.warns(UserWarning, match="projector reads 96-wide ones: not used"):
        vlm, _ = model.load("pocket-tiny", vision=tmp_path / "t")
    assert not isinstance(vlm.multi_modal_projector, AdaptedProjector) and vlm.config.vision_adapter_width is None
    with pytest.raises(ModelConfigError, match="does not fit"):
        base.replace_vision_tower(tower, adapter=nn.Linear(48, 64))


def test_an_adapter_for_another_feature_layer_is_not_used(tmp_path):
    # distilled for the teacher's vision_feature_layer -1; a model reading -2 would get it on the wrong features
    vlm, processor = model.load("pocket-tiny")
    save_tower(vlm.vision_tower, processor.tiling, tmp_path / "t")
    save_vision_adapter(nn.Linear(96, 96), tmp_path / "t", {"vision_feature_layer": -1, "pair": [4, 4], "teacher": "x"})
    vlm.config.vision_feature_layer = -2
    model.save(vlm, processor, tmp_path / "layer-2")
    with pytest.warns(UserWarning, match="vision_feature_layer -1 .* reads vision_feature_layer -2: not used"):
        again, _ = model.load(tmp_path / "layer-2", vision=tmp_path / "t")
    assert not isinstance(again.multi_modal_projector, AdaptedProjector) and again.config.vision_adapter_width is None
    assert isinstance(model.load("pocket-tiny", vision=tmp_path / "t")[0].multi_modal_projector, AdaptedProjector)


def test_the_adapted_vlm_trains_saves_reloads_and_exports(tmp_path, data_dir, run, base, example_image):
    final = run / "final"
    text = f"""
model: {{source: pocket-tiny, vision: {final}}}
parts: {{vision: {{mode: frozen, lr: 1.0e-3}}, projector: {{mode: full, lr: 1.0e-2}}, llm: {{mode: frozen, lr: 1.0e-4}}}}
data:
  sources: [{{name: landcover, path: data/landcover/train.jsonl}}]
mixing: {{general_ratio: 0}}
training: {{max_steps: 2, batch_size: 2, max_seq_length: 512}}
output: {{dir: out, save_every: 10}}
logging: {{tensorboard: false}}
"""
    recipe = load_recipe(write_recipe(tmp_path / "train", data_dir, text=text))
    assert recipe.model.vision_adapter == "auto"
    trained, processor = model.load(train(recipe, progress=False))
    assert isinstance(trained.multi_modal_projector, AdaptedProjector) and trained.config.vision_adapter_width == 96
    adapter, _ = load_vision_adapter(final)
    student, _ = load_vision(final)
    assert not torch.equal(trained.multi_modal_projector.adapter.weight, adapter.weight)  # trained with the projector
    assert not torch.equal(trained.own_projector.linear_1.weight, base.multi_modal_projector.linear_1.weight)
    assert all(torch.equal(a, b) for a, b in zip(trained.vision_tower.state_dict().values(),
                                                 student.state_dict().values()))  # frozen
    # save / reload round trip in our layout, and the pocket export
    inputs = image_inputs(processor, example_image)
    logits = trained(**inputs).logits
    for folder in (model.save(trained, processor, tmp_path / "saved"), export(trained, processor, "pocket", tmp_path / "pocket")):
        again, _ = model.load(folder)
        assert isinstance(again.multi_modal_projector, AdaptedProjector)
        assert torch.equal(again(**inputs).logits, logits)
    pooled, _ = model.load(tmp_path / "saved", projector_options={"pool": 2})  # the own projector's options
    assert isinstance(pooled.multi_modal_projector, AdaptedProjector) and pooled.config.image_seq_length == 4
    # InternVL's layouts have no slot for it and pixel_shuffle_mlp cannot absorb it: refused, saying why
    for fmt, why in (("hf", "LayerNorm"), ("internvl", "no 'pocket-tiny' template"), ("gguf", "LayerNorm"),
                     ("mobilevlm", "has an LDPv2 connector")):
        with pytest.raises(ExportError, match=f"cannot export to {fmt}: .*{why}"):  # the layout's own refusal first
            export(trained, processor, fmt, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()
    with pytest.raises(RecipeError, match="vision_adapter"):
        load_recipe(write_recipe(tmp_path / "bad", data_dir, text=text.replace("vision: ", "vision_adapter: keep, vision: ")))


def test_an_adapter_folds_into_a_projector_that_starts_with_a_linear(tmp_path):
    for projector in ("mlp2x_gelu", "linear", "ldp"):  # ldp: its token MLP runs before the reshape
        vlm, processor = model.load("pocket-tiny", projector=projector)
        tower, _ = load_vision("internvit-300m", NARROW)
        vlm.replace_vision_tower(tower, adapter=nn.Linear(48, 96))
        pixels = torch.randn(2, 3, 112, 112)
        before = vlm.get_image_features(pixels)
        vlm.fold_vision_adapter()
        assert not isinstance(vlm.multi_modal_projector, AdaptedProjector) and vlm.config.vision_adapter_width is None
        assert torch.allclose(vlm.get_image_features(pixels), before, atol=1e-5)
        again, _ = model.load(model.save(vlm, processor, tmp_path / projector))
        assert torch.allclose(again.get_image_features(pixels), before, atol=1e-5)


def test_the_onnx_vision_graph_carries_the_adapter(run, tmp_path):
    require("onnxruntime", "the deploy extra: ONNX Runtime")
    require("onnxscript", "the deploy extra: torch.onnx's dynamo exporter")
    from deploy.onnx.graphs import export_vision
    from deploy.onnx.runtime import session

    vlm, _ = model.load("pocket-tiny", vision=run / "final")
    pixels = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vlm.get_image_features(pixels).numpy()
    got = session(export_vision(vlm, tmp_path / "vision.onnx")).run(None, {"pixel_values": pixels.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_a_tower_whose_grid_the_projector_cannot_shuffle_is_named(tmp_path):
    """A 9x9-grid tower behind pocket-tiny's pixel-shuffle projector: the error said only 'grid 9x9 is not divisible
    by 2', leaving the user to find out that the grid is the model.vision tower's."""
    tower, tiling = load_vision("internvit-300m", {**NARROW, "image_size": 126})
    save_tower(tower, tiling, tmp_path / "t9")
    with pytest.raises(ModelConfigError, match=r"grid 9x9 is not divisible by 2.* the vision tower .*t9 gives a 9x9 "
                                               r"patch grid per tile"):
        model.load("pocket-tiny", vision=tmp_path / "t9")
