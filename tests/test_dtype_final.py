"""A checkpoint keeps the dtype it is stored in, and `adapt train`'s `final/` is written in the dtype of the
checkpoint the run started from, complete enough for `model.load` and outside tools (issue 16 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

import model
from adapt.recipe import load_recipe
from adapt.train import train
from domains.general.world import generate_general
from model.checkpoints.native import export_native
from model.checkpoints.original import export_original
from model.loading import image_processor_config
from model.tiling import TilingConfig

RECIPE = """
name: bf16
model: {{source: {source}, chat_template: Hermes-2}}
parts:
  vision: {{mode: frozen}}
  projector: {{mode: full, lr: 1.0e-3}}
  llm: {{mode: lora, lr: 1.0e-3, lora: {{r: 4, alpha: 8}}}}
data:
  sources:
    - {{name: general, path: {data}/train.jsonl, kind: domain}}
mixing: {{general_ratio: 0}}
training: {{max_steps: 2, batch_size: 2, max_seq_length: 512}}
output: {{dir: {out}, save_every: 100}}
"""


def _stored_dtypes(folder: Path, pattern: str = "*.safetensors") -> set[str]:
    dtypes = set()
    for path in folder.glob(pattern):
        with safe_open(str(path), "pt") as weights:
            dtypes |= {weights.get_slice(k).get_dtype() for k in weights.keys()}
    return dtypes


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory) -> Path:
    vlm, processor = model.load("pocket-tiny")
    return model.save(vlm.to(torch.bfloat16), processor, tmp_path_factory.mktemp("bf16") / "pocket")


@pytest.mark.parametrize("layout", ["native", "original"])
def test_every_layout_loads_in_the_dtype_it_is_stored_in(layout, bf16_dir, tmp_path) -> None:
    vlm, processor = model.load(bf16_dir, chat_template="Hermes-2")  # a template the original layout knows
    folder = {"native": export_native, "original": export_original}[layout](vlm, processor, tmp_path / layout)
    assert _stored_dtypes(folder) == {"BF16"}
    assert model.load(folder)[0].dtype == torch.bfloat16
    assert model.load(folder, dtype="float32")[0].dtype == torch.float32  # unless asked otherwise


@pytest.mark.parametrize("asked, final", [(None, torch.bfloat16), ("float32", torch.float32)])
def test_the_model_is_built_in_the_dtype_it_is_stored_in(asked, final, bf16_dir, monkeypatch) -> None:
    """Weights are copied into parameters of their stored dtype: a bfloat16 checkpoint never passes through a
    float32 copy of the whole model (twice its size in memory while loading); another dtype is a cast after."""
    import model.checkpoints.io as io

    seen: list[set[torch.dtype]] = []
    load_strict = io.load_strict

    def spy(module, state, *args, **kwargs):
        seen.append({p.dtype for p in module.parameters()})
        return load_strict(module, state, *args, **kwargs)

    monkeypatch.setattr(io, "load_strict", spy)
    vlm, _ = model.load(bf16_dir, dtype=asked)
    assert seen == [{torch.bfloat16}] and vlm.dtype == final
    assert torch.get_default_dtype() == torch.float32  # restored


def test_loading_holds_the_weights_once(bf16_dir, monkeypatch) -> None:
    """The parameters are the tensors read from the file (assigned, not copied into a second allocation), each
    its own: a tensor read once but named twice is cloned, so untied parameters never share values."""
    import model.checkpoints.io as io

    states: list[dict] = []
    load_strict = io.load_strict

    def spy(module, state, *args, **kwargs):
        states.append(state)
        return load_strict(module, state, *args, **kwargs)

    monkeypatch.setattr(io, "load_strict", spy)
    vlm, _ = model.load(bf16_dir)
    params = dict(vlm.named_parameters())
    (state,) = states
    assert state.keys() >= params.keys() and len(params) > 10
    assert all(params[k].data_ptr() == state[k].data_ptr() for k in params)
    # the parameters map the file copy-on-write: training them in place never writes to the checkpoint
    files = {f: f.read_bytes() for f in Path(bf16_dir).glob("*.safetensors")}
    with torch.no_grad():
        for param in vlm.parameters():
            param.add_(1.0)
    assert all(f.read_bytes() == data for f, data in files.items())
    shared = torch.ones(4)
    owned = io._own_tensors({"a": shared, "b": shared, "c": shared[:2], "d": shared.view(2, 2).t()})
    assert owned["a"] is shared and owned["b"].data_ptr() != shared.data_ptr() and torch.equal(owned["b"], shared)
    assert owned["c"].data_ptr() == shared.data_ptr() and owned["d"].is_contiguous()


def test_a_swapped_in_projector_follows_the_stored_dtype(bf16_dir) -> None:
    vlm, _ = model.load(bf16_dir, projector="mlp2x_gelu")
    assert {p.dtype for p in vlm.parameters()} == {torch.bfloat16}


def test_train_writes_a_complete_final_in_the_dtype_of_its_start(bf16_dir, tmp_path, capsys) -> None:
    generate_general(tmp_path / "data", n_train=8, n_test=2)
    recipe_path = tmp_path / "bf16.yaml"
    recipe_path.write_text(RECIPE.format(source=bf16_dir, data=tmp_path / "data", out=tmp_path / "out"))
    final = train(load_recipe(recipe_path), progress=False)
    assert _stored_dtypes(final) == {"BF16"}  # not float32 blown up
    assert _stored_dtypes(tmp_path / "out" / "checkpoint-2", "trainable.*") == {"F32"}  # trained on float32 master weights
    assert json.loads((final / "preprocessor_config.json").read_text()) == image_processor_config(
        TilingConfig.from_dict(json.loads((final / "config.json").read_text())["tiling"]))
    vlm, processor = model.load(final)
    assert vlm.dtype == torch.bfloat16
    # the tokenizer renders the run's template (Hermes-2), not the one it was read with (pocket-tiny's)
    chat = [{"role": "user", "content": "Shapes?"}]
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert processor.chat_template.name == "Hermes-2" and rendered == processor.chat_template.render(chat)
    start, _ = model.load(bf16_dir)
    changed = [k for k, v in vlm.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed and all(k.startswith(("multi_modal_projector", "language_model")) for k in changed)  # it trained


def test_preprocessor_config_reproduces_the_tiling_with_transformers(tmp_path) -> None:
    from transformers import GotOcr2ImageProcessorPil

    from tests.test_tiling import _noise

    for tiling in (TilingConfig(tile_size=28, max_tiles=6), TilingConfig(tile_size=28, mode="resize")):
        config = image_processor_config(tiling)
        config.pop("image_processor_type")
        expected = GotOcr2ImageProcessorPil(**config)(_noise(90, 50), return_tensors="pt")["pixel_values"]
        assert torch.equal(model.tiling.preprocess_image(_noise(90, 50), tiling), expected)
    assert image_processor_config(TilingConfig(thumbnail=False)) is None
    assert image_processor_config(TilingConfig(mode="pad")) is None
