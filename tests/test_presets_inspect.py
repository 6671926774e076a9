"""`adapt inspect --model PRESET` against the public models' numbers (internvl.md §3, §5; mobilevlm.md §2, §7), and
a preset described as its released checkpoint loads."""

from __future__ import annotations

import re

import pytest

from adapt.cli import main
from tests.test_checkpoints import write_mobilevlm_v2


def _rows(out: str) -> dict[str, str]:
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())


# name: (projector params from the reference tables, image-token row)
PUBLIC = {
    "internvl2-1b": (4_482_816, "256 per 448 px tile (1-12 tiles an image, and a thumbnail tile where more than one), "
                                "id 151648 (<IMG_CONTEXT>)"),
    "mini-internvl-2b": (12_595_200, "256 per 448 px tile (1-12 tiles an image, and a thumbnail tile where more than "
                                     "one), id 92546 (<IMG_CONTEXT>)"),
    "mini-internvl-4b": (22_034_432, "256 per 448 px tile (1-12 tiles an image, and a thumbnail tile where more than "
                                     "one), id 32013 (<IMG_CONTEXT>)"),
    # MobileVLM pads each image to one 336 px square; its `<image>` placeholder is the image token, id 32000 once
    # added after LLaMA's 32000 words
    "mobilevlm-v2-1.7b": (6_316_032, "144 per image (one 336 px tile, pad mode), id 32000 (<image>)"),
    "mobilevlm-v2-3b": (9_205_760, "144 per image (one 336 px tile, pad mode), id 32000 (<image>)"),
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_inspect_gives_the_public_projector_size_and_image_tokens(name, capsys) -> None:
    projector, tokens = PUBLIC[name]
    assert main(["inspect", "--model", name]) == 0
    rows = _rows(capsys.readouterr().out)
    assert f"({projector:,} params)" in rows["projector"]
    assert rows["image tokens"] == tokens


def test_a_mobilevlm_preset_names_the_image_token_its_checkpoint_loads_with(tmp_path, tiny_tokenizer, capsys) -> None:
    checkpoint = write_mobilevlm_v2(tmp_path / "mobilevlm", tiny_tokenizer, tie=False).directory
    assert main(["inspect", "--model", str(checkpoint)]) == 0
    loaded = _rows(capsys.readouterr().out)["image tokens"]
    assert main(["inspect", "--model", "mobilevlm-v2-1.7b"]) == 0
    preset = _rows(capsys.readouterr().out)["image tokens"]
    assert loaded.endswith("(<image>)") and preset.endswith("(<image>)")
    assert loaded.split(", id")[0] == preset.split(", id")[0]


@pytest.fixture
def hub_copy(monkeypatch, tmp_path, tiny_tokenizer):
    """`snapshot_download` answering from a tiny MobileVLM V2 folder whose weights are pickle only, as the released
    repos ship them: what a download with the given patterns would leave (no network)."""
    import shutil

    import huggingface_hub
    import torch
    from safetensors.torch import load_file

    release = write_mobilevlm_v2(tmp_path / "release", tiny_tokenizer, tie=False).directory
    torch.save(load_file(str(release / "model.safetensors")), release / "pytorch_model.bin")
    (release / "model.safetensors").unlink()
    calls: list[list[str]] = []

    def snapshot_download(repo_id, allow_patterns):
        calls.append(allow_patterns)
        folder = tmp_path / f"snapshot{len(calls)}"
        shutil.copytree(release, folder, ignore=lambda _, names: [n for n in names if n.endswith(".bin")
                                                                   and "*.bin" not in allow_patterns])
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_pickle_only_hub_preset_says_to_pass_allow_pickle(hub_copy, capsys) -> None:
    """Without --allow-pickle the .bin weights are not fetched; the load said only '<hub cache path>: no weights found
    (expected model.safetensors or a sharded index)'."""
    assert main(["chat", "--model", "mobilevlm-v2-1.7b", "hello"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adapt chat: error: preset mobilevlm-v2-1.7b: mtgv/MobileVLM_V2-1.7B on the Hugging Face "
                          "hub has no safetensors weights") and "--allow-pickle" in err and "\n" not in err
    assert "*.bin" not in hub_copy[0]


def test_a_pickle_only_hub_preset_loads_with_allow_pickle(hub_copy) -> None:
    import model

    vlm, processor = model.load("mobilevlm-v2-1.7b", allow_pickle=True)
    assert "*.bin" in hub_copy[0]
    assert vlm.config.projector_type == "ldpv2" and processor.image_context_token == "<image>"


def test_a_pickle_only_hub_tower_is_fetched_with_allow_pickle(hub_copy) -> None:
    """load_vision dropped allow_pickle on the way to the hub, so a hub: tower never had its .bin weights fetched."""
    from model.checkpoints.tower import load_vision

    tower, tiling = load_vision("hub:mtgv/MobileVLM_V2-1.7B", allow_pickle=True)
    assert "*.bin" in hub_copy[0]
    assert type(tower).__name__ == "CLIPVisionModel" and tiling.mode == "pad"


@pytest.mark.parametrize("verb", [["inspect"], ["chat", "hello"]])
def test_a_preset_hub_id_as_model_points_at_its_preset(verb, capsys) -> None:
    """`adapt inspect --model internvl2-1b` shows 'weights: OpenGVLab/InternVL2-1B on the hub'; given that id as
    --model, the answer was only 'not a checkpoint directory nor a preset'."""
    assert main([verb[0], "--model", "OpenGVLab/InternVL2-1B", *verb[1:]]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"adapt {verb[0]}: error: OpenGVLab/InternVL2-1B: is the hub id of the preset internvl2-1b, not a "
                   "checkpoint folder; give the preset name (--model internvl2-1b), which fetches it, or a local copy: "
                   "fetch them where there is network (`hf download OpenGVLab/InternVL2-1B --local-dir DIR`) and pass "
                   "the folder instead of OpenGVLab/InternVL2-1B (--model DIR; in a recipe, model.source: DIR)")


@pytest.fixture
def pocket_dir(tmp_path):
    import model

    vlm, processor = model.load("pocket-tiny-scratch")
    return model.save(vlm, processor, tmp_path / "pocket")


@pytest.mark.parametrize("which, layout", [
    ("native_dir", "transformers-native InternVL (model_type: internvl)"),
    ("original_dir", "original OpenGVLab InternVL chat (model_type: internvl_chat)"),
    ("mobilevlm", "MobileVLM / MobileVLM V2 (model_type: mobilevlm)"),
    ("pocket_dir", "pocket-adapt's own (model_type: pocket_vlm)"),
    ("internvl2-1b", "original OpenGVLab InternVL chat (model_type: internvl_chat) on the hub"),
    ("mobilevlm-v2-1.7b", "MobileVLM / MobileVLM V2 (model_type: mobilevlm) on the hub"),
    ("pocket-tiny", "pocket-adapt's own (model_type: pocket_vlm), built in"),
])
def test_inspect_names_the_layout_it_promises(which, layout, request, tmp_path, tiny_tokenizer, capsys) -> None:
    """`adapt inspect --help` and the README promise the layout; no row said it."""
    if which == "mobilevlm":
        source = str(write_mobilevlm_v2(tmp_path / "mobilevlm", tiny_tokenizer, tie=False).directory)
    elif which.endswith("_dir"):
        source = str(request.getfixturevalue(which))
    else:
        source = which
    assert main(["inspect", "--model", source]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["layout"] == layout
    parts = [int(rows[part].split("(")[1].split(" params")[0].replace(",", ""))
             for part in ("vision tower", "projector", "language model")]
    assert int(rows["parameters"].replace(",", "")) == sum(parts)


def test_pocket_tiny_without_its_bundled_weights_is_an_error_not_random_weights(tmp_path, monkeypatch) -> None:
    """The preset loaded seeded random weights (pocket-tiny-scratch's) without a word when its weights file was
    missing: every answer and score from an untrained model."""
    import shutil

    import model
    from model import loading
    from model.checkpoints.io import CheckpointError
    from model.resources import assets_dir

    assets = tmp_path / "assets"
    shutil.copytree(assets_dir() / "pocket-tiny", assets / "pocket-tiny",
                    ignore=lambda _, names: [n for n in names if n == "model.safetensors"])
    monkeypatch.setattr(loading, "assets_dir", lambda: assets)
    with pytest.raises(CheckpointError) as caught:
        model.load("pocket-tiny")
    message = str(caught.value)
    assert message.startswith(f"preset pocket-tiny: its bundled weights {assets / 'pocket-tiny' / 'model.safetensors'} "
                              "are missing") and "use the preset pocket-tiny-scratch" in message
    vlm, _ = model.load("pocket-tiny-scratch")  # the scratch preset has no weights to miss
    assert vlm.config.chat_template == "pocket-tiny"


@pytest.mark.parametrize("given, meant", [("InternVL2-1B", "internvl2-1b"), ("Mini-InternVL-4B", "mini-internvl-4b"),
                                          ("mobilevlm-v2-1.7", "mobilevlm-v2-1.7b")])
def test_a_preset_name_as_the_model_card_spells_it_is_pointed_at_the_preset(given, meant, capsys) -> None:
    assert main(["inspect", "--model", given]) == 1
    assert f"{given}: not a checkpoint directory nor a preset (did you mean {meant}?); presets: pocket-tiny" in \
        capsys.readouterr().err



def test_inspect_states_the_rope_a_preset_has_and_what_its_release_has(tmp_path, tiny_tokenizer, capsys) -> None:
    """mini-internvl-4b's config has plain RoPE where the released Phi-3-mini-128k LLM has longrope scaling; inspect
    said nothing of RoPE, so the preset read as the released model. A checkpoint's row gives its own scaling."""
    from tests.conftest import write_preprocessor
    from tests.test_checkpoint_inputs import _phi3_internvl

    assert main(["inspect", "--model", "mini-internvl-4b"]) == 0
    rope = _rows(capsys.readouterr().out)["rope"]
    assert rope.startswith("plain (no scaling), theta 10000.0, max_position_embeddings 131,072; ")
    assert "the released checkpoint uses longrope scaling, which this preset's config leaves out" in rope
    assert main(["inspect", "--model", "internvl2-1b"]) == 0  # its release has no scaling this config leaves out
    plain = "plain (no scaling), theta 1000000.0, max_position_embeddings 32,768"
    assert _rows(capsys.readouterr().out)["rope"] == plain

    checkpoint = tmp_path / "phi3-longrope"
    _phi3_internvl(tiny_tokenizer).save_pretrained(str(checkpoint))
    tiny_tokenizer.save_pretrained(str(checkpoint))
    write_preprocessor(checkpoint)
    assert main(["inspect", "--model", str(checkpoint)]) == 0
    assert _rows(capsys.readouterr().out)["rope"] == ("longrope (6 short and long factors, over 1,024 original "
                                                      "positions), theta 10000.0, max_position_embeddings 4,096")
