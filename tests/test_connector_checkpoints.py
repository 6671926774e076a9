"""The query connectors (issue 13 item 2: `qformer`, `resampler`) through every export: the pocket layout saves and
reloads them with identical logits, ONNX (which exports any projector through `get_image_features`) runs them as
PyTorch does, and the layouts that have no such connector (hf, internvl, gguf, mobilevlm) refuse them by name."""

from __future__ import annotations

import pytest
import torch

import model
from deploy.hf import export
from model.errors import PocketAdaptError

CONNECTORS = {"qformer": {"num_queries": 8, "num_heads": 4}, "resampler": {"num_queries": 9}}
CONVERSATION = [{"from": "human", "value": "<image>\nWhat shapes are in the picture?"}, {"from": "gpt", "value": "red"}]
REFUSALS = {
    "hf": r"native InternVL layout has no '{name}' projector",
    "internvl": r"original InternVL layout needs .* pixel-shuffle MLP projector",
    "gguf": r"projector '{name}' has no llama.cpp counterpart",
    "mobilevlm": r"LDPv2 .* projector is '{name}'",
}


@pytest.fixture(scope="module")
def connector_models() -> dict:
    """pocket-tiny with each connector in place of its pixel-shuffle MLP, the connector's weights moved off their
    initial values (so a reload that re-initialises it instead of reading it would show)."""
    made = {}
    for i, (name, options) in enumerate(CONNECTORS.items()):
        vlm, processor = model.load("pocket-tiny", projector=name, projector_options=options, seed=1)
        gen = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for p in vlm.multi_modal_projector.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        made[name] = vlm, processor
    return made


def encoded(processor, image):
    return processor(CONVERSATION, images=[image], add_generation_prompt=False, with_labels=True).to_model_inputs()


@pytest.mark.parametrize("name", CONNECTORS)
def test_pocket_layout_saves_and_reloads_the_connector_with_identical_logits(name, connector_models, tmp_path,
                                                                             example_image):
    vlm, processor = connector_models[name]
    out = export(vlm, processor, "pocket", tmp_path / "pocket")
    again, proc2 = model.load(out)
    assert again.config.projector_type == name and again.config.projector_options == CONNECTORS[name]
    assert type(again.multi_modal_projector) is type(vlm.multi_modal_projector)
    a, b = encoded(processor, example_image), encoded(proc2, example_image)
    tiles = a["pixel_values"].shape[0]
    assert tiles > 1 and int((b["input_ids"] == proc2.image_token_id).sum()) == CONNECTORS[name]["num_queries"] * tiles
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with torch.no_grad():
        assert torch.equal(again(**b).logits, vlm(**a).logits)
        assert torch.equal(again(**b).loss, vlm(**a).loss)


@pytest.mark.parametrize("fmt", REFUSALS)
@pytest.mark.parametrize("name", CONNECTORS)
def test_layouts_without_query_connectors_refuse_them_by_name(name, fmt, connector_models, tmp_path):
    vlm, processor = connector_models[name]
    with pytest.raises(PocketAdaptError, match=REFUSALS[fmt].format(name=name)):
        export(vlm, processor, fmt, tmp_path / fmt)
    assert not list(tmp_path.iterdir())  # nothing written, no staging folder left


@pytest.mark.slow
@pytest.mark.parametrize("name", CONNECTORS)
def test_onnx_export_runs_the_connector_as_pytorch(name, connector_models, tmp_path, example_image):
    from .test_onnx import OnnxVLM, onnx_greedy, relative_error, torch_greedy

    vlm, processor = connector_models[name]
    out = export(vlm, processor, "onnx", tmp_path / "onnx")
    enc = processor([{"role": "user", "content": "What shapes are in the picture?"}], images=[example_image])
    with OnnxVLM(out) as runtime:
        features = runtime.encode_images(enc.pixel_values.numpy())
        tokens, logits = onnx_greedy(runtime, enc, 4)
    with torch.no_grad():
        expected = vlm.get_image_features(enc.pixel_values).numpy()
    assert features.shape == expected.shape == (enc.pixel_values.shape[0], CONNECTORS[name]["num_queries"], 128)
    assert relative_error(features, expected) < 1e-4
    expected_tokens, expected_logits = torch_greedy(vlm, enc, 4)
    assert tokens == expected_tokens
    assert max(relative_error(a, b) for a, b in zip(logits, expected_logits)) < 1e-4
