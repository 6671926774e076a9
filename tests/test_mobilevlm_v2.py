"""MobileVLM V2 end to end (issue 13 item 4): the recipe template trains a tiny V2 on CPU, and
`adapt export --format mobilevlm` writes the V2 layout back (mobilevlm.md §3, §6), CLIP tower folder included."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel

import model
from adapt.cli import main
from deploy.hf import export
from model.checkpoints.io import head_is_tied
from model.errors import PocketAdaptError
from model.resources import templates_dir

from .test_checkpoints import CLIP_HIDDEN, LLM_HIDDEN, MOBILEVLM_TILE, write_mobilevlm_v2

TEMPLATE = "remote-sensing_mobilevlm-v2_full"
QUESTION = [{"role": "user", "content": "What is in this image?"}]


def perturbed(vlm, seed: int):
    """`vlm` with every weight moved, as an adaptation of all three parts would leave it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return vlm


def logits_of(vlm, enc) -> torch.Tensor:
    with torch.no_grad():
        return vlm(**enc.to_model_inputs()).logits


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_tokenizer) -> dict:
    root = tmp_path_factory.mktemp("mobilevlm-v2")
    return {tie: write_mobilevlm_v2(root / ("tied" if tie else "untied"), tiny_tokenizer, tie=tie) for tie in (False, True)}


@pytest.fixture(scope="module")
def exported(sources, tmp_path_factory):
    """The untied tiny V2, adapted (all weights moved), exported as mobilevlm."""
    vlm, processor = model.load(sources[False].directory)
    perturbed(vlm, 11)
    out = export(vlm, processor, "mobilevlm", tmp_path_factory.mktemp("export") / "v2")
    return vlm, processor, out


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_export_round_trips_through_the_mobilevlm_loader_with_identical_logits(tie, sources, tmp_path, example_image):
    vlm, processor = model.load(sources[tie].directory)
    perturbed(vlm, 3)
    out = export(vlm, processor, "mobilevlm", tmp_path / "v2")
    again, proc2 = model.load(out)
    assert again.config.projector_type == "ldpv2" and proc2.chat_template.name == "vicuna_v1"
    assert head_is_tied(again) is tie
    a, b = processor(QUESTION, images=[example_image]), proc2(QUESTION, images=[example_image])
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)
    assert torch.equal(logits_of(again, b), logits_of(vlm, a))
    state = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in state) is not tie  # a tied head is left out, as save_pretrained does


def reference_v2_keys(vocab: int, c: int, mm: int, llm_layers: int, inter: int, clip_layers: int, clip_inter: int,
                      patch: int, positions: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a MobileVLM V2 checkpoint and its shape, as mobilevlm.md §3 lists them: LDPv2 under
    `model.mm_projector.`, the transformers-4.x CLIPVisionModel under `model.vision_tower.vision_tower.vision_model.`,
    the LLM in the LlamaForCausalLM layout (no biases, KV heads = heads as in MobileLLaMA)."""
    keys = {
        "model.mm_projector.mlp.mlp.0.weight": (c, mm), "model.mm_projector.mlp.mlp.0.bias": (c,),
        "model.mm_projector.mlp.mlp.2.weight": (c, c), "model.mm_projector.mlp.mlp.2.bias": (c,),
        "model.mm_projector.peg.peg.0.weight": (c, 1, 3, 3), "model.mm_projector.peg.peg.0.bias": (c,),
        "model.embed_tokens.weight": (vocab, c), "model.norm.weight": (c,), "lm_head.weight": (vocab, c),
    }
    for i in range(llm_layers):
        layer = f"model.layers.{i}."
        keys.update({layer + f"self_attn.{p}_proj.weight": (c, c) for p in "qkvo"})
        keys.update({layer + "mlp.gate_proj.weight": (inter, c), layer + "mlp.up_proj.weight": (inter, c),
                     layer + "mlp.down_proj.weight": (c, inter),
                     layer + "input_layernorm.weight": (c,), layer + "post_attention_layernorm.weight": (c,)})
    v = "model.vision_tower.vision_tower.vision_model."
    keys.update({
        v + "embeddings.class_embedding": (mm,), v + "embeddings.patch_embedding.weight": (mm, 3, patch, patch),
        v + "embeddings.position_embedding.weight": (positions, mm), v + "embeddings.position_ids": (1, positions),
        v + "pre_layrnorm.weight": (mm,), v + "pre_layrnorm.bias": (mm,),
        v + "post_layernorm.weight": (mm,), v + "post_layernorm.bias": (mm,),
    })
    for i in range(clip_layers):
        layer = f"{v}encoder.layers.{i}."
        for p in ("q", "k", "v", "out"):
            keys.update({layer + f"self_attn.{p}_proj.weight": (mm, mm), layer + f"self_attn.{p}_proj.bias": (mm,)})
        keys.update({layer + "mlp.fc1.weight": (clip_inter, mm), layer + "mlp.fc1.bias": (clip_inter,),
                     layer + "mlp.fc2.weight": (mm, clip_inter), layer + "mlp.fc2.bias": (mm,)})
        for n in ("layer_norm1", "layer_norm2"):
            keys.update({layer + f"{n}.weight": (mm,), layer + f"{n}.bias": (mm,)})
    return keys


def test_export_has_the_reference_v2_keys_shapes_config_and_tokenizer(exported, sources, tiny_tokenizer):
    vlm, processor, out = exported
    vocab = vlm.config.text_config.vocab_size
    expected = reference_v2_keys(vocab, LLM_HIDDEN, CLIP_HIDDEN, llm_layers=2, inter=96, clip_layers=3, clip_inter=64,
                                 patch=14, positions=(MOBILEVLM_TILE // 14) ** 2 + 1)
    state = load_file(str(out / "model.safetensors"))
    assert {k: tuple(t.shape) for k, t in state.items()} == expected
    # the same names and shapes as the checkpoint written from the published layout without our code
    source = load_file(str(sources[False].directory / "model.safetensors"))
    assert {k: tuple(t.shape) for k, t in source.items()} == expected

    config = json.loads((out / "config.json").read_text())
    text = vlm.config.text_config
    assert {k: config[k] for k in ("architectures", "model_type", "mm_projector_type", "mm_hidden_size")} == {
        "architectures": ["MobileLlamaForCausalLM"], "model_type": "mobilevlm", "mm_projector_type": "ldpnetv2",
        "mm_hidden_size": CLIP_HIDDEN}
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "rms_norm_eps", "vocab_size", "max_position_embeddings")} == {
        "hidden_size": LLM_HIDDEN, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "rms_norm_eps": text.rms_norm_eps, "vocab_size": vocab,
        "max_position_embeddings": text.max_position_embeddings}
    assert {k: config[k] for k in (
        "mm_vision_select_layer", "mm_vision_select_feature", "vision_tower_type", "image_aspect_ratio",
        "mm_use_im_start_end", "mm_use_im_patch_token", "use_mm_proj", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
        "mm_projector_lr", "torch_dtype", "max_sequence_length", "tie_word_embeddings", "rope_theta")} == {
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "vision_tower_type": "clip",
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "mm_projector_lr": None, "torch_dtype": "float32",
        "max_sequence_length": text.max_position_embeddings, "tie_word_embeddings": False, "rope_theta": 10000.0}
    assert "rope_parameters" not in config and "dtype" not in config  # transformers 5 spellings 4.33 does not read

    # the tokenizer is the base one: our `<image>` entry (beyond the LLM's vocabulary) is not in it, since MobileVLM
    # splices images in by id -200 and resizes the embeddings to len(tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert "<image>" in processor.tokenizer.get_vocab() and "<image>" not in tokenizer.get_vocab()
    assert len(tokenizer) == len(tiny_tokenizer) == vocab
    text_in = "A chat between a curious user and an artificial intelligence assistant. USER: red roofs? ASSISTANT:"
    assert tokenizer(text_in).input_ids == tiny_tokenizer(text_in).input_ids


def expand2square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA / MobileVLM's pad: the image centred on a square of the background colour."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def test_export_writes_the_adapted_clip_tower_where_mobilevlm_reads_it(exported, sources, tmp_path, example_image):
    vlm, processor, out = exported
    config = json.loads((out / "config.json").read_text())
    tower = Path(config["mm_vision_tower"])
    assert tower.is_absolute() and tower == (out / "vision_tower").resolve()  # MobileVLM resolves it from the cwd
    # MobileVLM builds its tower with CLIPVisionModel.from_pretrained(mm_vision_tower): it holds the adapted weights
    clip = CLIPVisionModel.from_pretrained(str(tower))
    assert all(k.startswith("vision_model.") for k in load_file(str(tower / "model.safetensors")))  # 4.x names
    ours, original = vlm.vision_tower.state_dict(), sources[False].clip.state_dict()
    for key, tensor in clip.state_dict().items():
        assert torch.equal(tensor, ours[key]), key
        assert not torch.equal(tensor, original[key]), key
    # ... and its image processor from the same folder: expand2square with the mean colour, then CLIPImageProcessor
    image_processor = CLIPImageProcessorPil.from_pretrained(str(tower))
    background = tuple(int(m * 255) for m in image_processor.image_mean)
    pixels = image_processor(expand2square(example_image, background), return_tensors="pt").pixel_values
    ours_pixels = processor(QUESTION, images=[example_image]).pixel_values
    assert pixels.shape == ours_pixels.shape == (1, 3, MOBILEVLM_TILE, MOBILEVLM_TILE)
    assert torch.allclose(pixels, ours_pixels, atol=1e-5)
    with torch.no_grad():
        hidden = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        assert torch.allclose(vlm.multi_modal_projector(hidden), vlm.get_image_features(ours_pixels), atol=1e-5)
    # a moved export still loads here: the tower folder is found beside the config
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    again, proc2 = model.load(moved)
    enc = proc2(QUESTION, images=[example_image])
    assert torch.equal(logits_of(again, enc), logits_of(vlm, processor(QUESTION, images=[example_image])))


def test_force_replaces_the_tower_folder_and_keeps_other_files(sources, tmp_path):
    vlm, processor = model.load(sources[False].directory)
    out = export(vlm, processor, "mobilevlm", tmp_path / "v2")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PocketAdaptError, match="not empty"):
        export(vlm, processor, "mobilevlm", out)
    perturbed(vlm, 5)
    export(vlm, processor, "mobilevlm", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["vision_tower"]  # no set-aside folder left
    clip = load_file(str(out / "vision_tower" / "model.safetensors"))
    assert torch.equal(clip["vision_model.post_layernorm.weight"], vlm.vision_tower.post_layernorm.weight)
    export(vlm, processor, "pocket", out, force=True)  # another format: the tower folder is an export's, removed
    assert not (out / "vision_tower").exists() and (out / "notes.txt").is_file()


def test_models_without_the_v2_layout_are_refused_clearly(tmp_path, sources, capsys):
    tiny = model.load("pocket-tiny")  # InternVL-shaped: InternViT + pixel shuffle + Qwen2
    with pytest.raises(PocketAdaptError, match=r"LDPv2.*'pixel_shuffle_mlp'"):
        export(*tiny, "mobilevlm", tmp_path / "a")
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
    assert main(["export", "--format", "mobilevlm", "--model", "pocket-tiny", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "LDPv2" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    vlm, processor = model.load(sources[False].directory, chat_template="Hermes-2")
    with pytest.raises(PocketAdaptError, match="vicuna_v1"):
        export(vlm, processor, "mobilevlm", tmp_path / "c")
    vlm, processor = model.load(sources[False].directory, projector="ldpv2", projector_options={"pooled_grid": 6})
    with pytest.raises(PocketAdaptError, match="12x12"):
        export(vlm, processor, "mobilevlm", tmp_path / "d")


def test_template_follows_the_v2_fine_tune_stage():
    from adapt.recipe import load_recipe

    recipe = load_recipe(templates_dir() / "recipes" / f"{TEMPLATE}.yaml")
    t, parts = recipe.training, recipe.parts
    assert recipe.model.source == "mobilevlm-v2-1.7b" and recipe.model.allow_pickle  # released as pytorch_model.bin
    assert recipe.model.projector is None and recipe.model.chat_template is None  # LDPv2 and vicuna_v1 kept
    assert (parts.vision.mode, parts.projector.mode, parts.llm.mode) == ("frozen", "full", "full")
    assert parts.projector.lr == parts.llm.lr == 4e-5 and t.weight_decay == 0.0 and t.warmup_ratio == 0.03
    assert t.schedule == "cosine" and t.epochs == 1 and t.max_seq_length == 2048 and t.precision == "bf16"
    assert t.gradient_checkpointing and t.batch_size * t.grad_accum * 2 == 128  # V2: 8 GPUs x 16
    assert recipe.distributed.strategy == "deepspeed" and recipe.distributed.deepspeed == "zero3"


@pytest.mark.slow
def test_template_trains_a_tiny_v2_and_exports_it_back(tmp_path, sources, example_image):
    raw = tmp_path / "raw"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", "n=6"]) == 0
    for dataset in ("ucmerced", "rsvqa_lr", "dior_rsvg"):
        assert main(["convert", "remote_sensing", dataset, "--src", str(raw / dataset), "--out", str(tmp_path / "data" / "rs")]) == 0
    assert main(["synthesize", "general", "--out", str(tmp_path / "data" / "general"),
                 "--option", "n_train=24", "--option", "n_test=6", "--option", "answer_style=label"]) == 0
    recipe = tmp_path / f"{TEMPLATE}.yaml"
    shutil.copyfile(templates_dir() / "recipes" / f"{TEMPLATE}.yaml", recipe)
    source = sources[False]
    tiny = [f"model.source={source.directory}", "model.allow_pickle=false", "distributed.strategy=none",
            "training.precision=fp32", "training.gradient_checkpointing=false", "training.max_steps=8",
            "training.batch_size=4", "training.grad_accum=1", "training.num_workers=0", "training.warmup_ratio=0",
            "parts.llm.lr=2e-3", "parts.projector.lr=2e-3", "logging.every=1", "logging.tensorboard=false"]
    assert main(["train", str(recipe), "--no-progress", *tiny]) == 0
    run = tmp_path / "runs" / TEMPLATE
    losses = [e["loss"] for e in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses

    base, _ = model.load(source.directory)
    trained, processor = model.load(run / "final")
    assert trained.config.projector_type == "ldpv2" and processor.chat_template.name == "vicuna_v1"
    before, after = base.state_dict(), trained.state_dict()
    changed = {part: any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part))
               for part in ("vision_tower.", "multi_modal_projector.", "language_model.")}
    assert changed == {"vision_tower.": False, "multi_modal_projector.": True, "language_model.": True}  # V2: jointly

    # adapt eval scores base and adapted V2 through the same recipe
    assert main(["eval", str(recipe), *tiny, "eval.max_samples=2", "eval.max_new_tokens=4"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert set(report["runs"]["adapted"]["sources"]) == {"ucmerced", "rsvqa_lr", "dior_rsvg", "general"}

    out = tmp_path / "export"
    assert main(["export", "--format", "mobilevlm", "--model", str(run / "final"), "--out", str(out)]) == 0
    again, proc2 = model.load(out)
    enc = processor(QUESTION, images=[example_image])
    assert torch.equal(logits_of(again, proc2(QUESTION, images=[example_image])), logits_of(trained, enc))


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_the_v2_preset_fetches_pickle_weights_only_when_allowed(allow_pickle, sources, monkeypatch):
    """The template's source, mobilevlm-v2-1.7b, is released as pytorch_model.bin: allow_pickle must fetch it."""
    import huggingface_hub

    asked = []

    def snapshot_download(hub_id, allow_patterns):
        asked.append((hub_id, allow_patterns))
        return str(sources[False].directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    vlm, _ = model.load("mobilevlm-v2-1.7b", allow_pickle=allow_pickle)
    assert vlm.config.projector_type == "ldpv2"
    assert [(hub_id, "*.bin" in patterns) for hub_id, patterns in asked] == [("mtgv/MobileVLM_V2-1.7B", allow_pickle)]


@pytest.mark.parametrize("value", ["square", None], ids=["square", "missing"])
def test_a_config_without_pad_is_centre_cropped_as_mobilevlm_does_and_exported_so(value, sources, tmp_path, example_image):
    """MobileVLM's process_images pads only for image_aspect_ratio 'pad'; any other value, or none (its getattr
    default), is CLIPImageProcessor's shortest-edge resize and centre crop (mobilevlm.md §5). It was squashed
    (mode resize) for a value other than pad, and padded when the key was missing."""
    source = tmp_path / "source"
    shutil.copytree(sources[False].directory, source)
    config = json.loads((source / "config.json").read_text())
    config.pop("image_aspect_ratio")
    if value is not None:
        config["image_aspect_ratio"] = value
    (source / "config.json").write_text(json.dumps(config))
    vlm, processor = model.load(source)
    assert processor.tiling.mode == "crop"
    tile = MOBILEVLM_TILE
    official = CLIPImageProcessorPil(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile},
                                     resample=3, do_center_crop=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
                                     image_std=[0.26862954, 0.26130258, 0.27577711])
    wide = example_image.resize((640, 480))
    assert torch.equal(processor(QUESTION, images=[wide]).pixel_values,
                       official(images=[wide], return_tensors="pt").pixel_values)
    out = export(vlm, processor, "mobilevlm", tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["image_aspect_ratio"] == "square"  # not padded on reload
    tower = CLIPImageProcessorPil.from_pretrained(str(out / "vision_tower"))  # what MobileVLM reads: no expand2square
    _, again = model.load(out)
    assert again.tiling.mode == "crop"
    assert torch.equal(again(QUESTION, images=[wide]).pixel_values, tower(images=[wide], return_tensors="pt").pixel_values)


def test_other_tile_sizes_are_refused_in_the_shared_check_s_words(tmp_path, sources):
    """The layout's tile-size refusal is `model.vision.check_tile_size`'s, as every other format's is."""
    vlm, processor = model.load(sources[False].directory)
    tiling = dataclasses.replace(processor.tiling, tile_size=2 * MOBILEVLM_TILE)
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling
    said = (f"cannot export to mobilevlm: the MobileVLM V2 layout: the tiling cuts {2 * MOBILEVLM_TILE} px tiles, but "
            f"the vision tower takes {MOBILEVLM_TILE} px images (vision_config.image_size); set tiling.tile_size to "
            f"{MOBILEVLM_TILE}, the tower's size")
    with pytest.raises(PocketAdaptError, match=re.escape(said)):
        export(vlm, processor, "mobilevlm", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    tiling = dataclasses.replace(tiling, tile_size=MOBILEVLM_TILE, mode="dynamic")  # the right size, tiles cut
    vlm.config.tiling = tiling.to_dict()
    processor.tiling = tiling
    with pytest.raises(PocketAdaptError, match=r"padded square .* tiles in mode 'dynamic'"):
        export(vlm, processor, "mobilevlm", tmp_path / "out")
