"""GGUF export (deploy/gguf.py) checked by a real llama.cpp (`make llama-cpp`; deploy/llamacpp).

Three models, same image and prompt: pocket-tiny (trained weights), a tiny random InternVL (Qwen2) in the
transformers-native layout and a tiny random MobileVLM V2 (LDPv2 on a 3-layer CLIP, feature layer -2). For each,
at f32 and f16: the mmproj's image embeddings against PyTorch's, the prompt llama.cpp renders and tokenises from
the embedded chat template against our processor's, and 32 greedy tokens against PyTorch's.

llama.cpp's CPU GELU and quick-GELU read a float16 lookup table (ggml-cpu/vec.h: GGML_GELU_FP16,
GGML_GELU_QUICK_FP16): every activation is rounded to float16 on the way in and out. That alone puts f32
embeddings about 1e-3 (relative) from PyTorch's exact GELU. The tests therefore also compare against PyTorch with
that GELU emulated (`llamacpp_gelu`): there the f32 embeddings agree within 1e-4, which shows the export itself
(tensors, layer count, position order, pixel shuffle, LDP) is exact and the rest is llama.cpp's activation table.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import model
from model.chat import get_chat_template, list_chat_templates
from model.tiling import normalize

from .deps import in_ci, require

require("gguf", "the deploy extra: GGUF export")

from deploy.gguf import GGUFExportError, check_supported, file_names  # noqa: E402
from deploy.hf import ExportError, export  # noqa: E402
from deploy.llamacpp import LlamaCppError, PocketLlama, binary, tiles_of  # noqa: E402
from deploy.llamacpp.runtime import LlamaCppVLM  # noqa: E402

from .test_checkpoints import write_mobilevlm_v2  # noqa: E402

MODELS = ("pocket-tiny", "internvl", "mobilevlm", "mobilevlm-ldp", "mobilevlm-spm")
QUESTION = "What shapes are in the picture?"


@pytest.fixture(scope="module")
def llama_cpp() -> Path:
    """The built llama.cpp; missing is a skip here and a failure under CI (`make test` builds it first)."""
    try:
        return binary()
    except LlamaCppError as err:
        if in_ci():
            pytest.fail(f"{err} — CI is set, so llama.cpp must be built (make llama-cpp)", pytrace=False)
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def models(native_dir, tiny_tokenizer, tmp_path_factory) -> dict:
    mobilevlm = write_mobilevlm_v2(tmp_path_factory.mktemp("gguf-mobilevlm") / "src", tiny_tokenizer, tie=False)
    made = {
        "pocket-tiny": model.load("pocket-tiny"),
        "internvl": model.load(native_dir),
        "mobilevlm": model.load(mobilevlm.directory),
        "mobilevlm-ldp": tiny_ldp_model(tiny_tokenizer),
        "mobilevlm-spm": tiny_ldp_model(spm_tokenizer(), projector="ldpv2"),
    }
    for name in ("internvl", "mobilevlm", "mobilevlm-ldp", "mobilevlm-spm"):
        sharpen_attention(made[name][0])
    return made


def sharpen_attention(vlm, factor: float = 6.0) -> None:
    """Random tiny LMs attend almost uniformly, so positions (RoPE) hardly change their answers; larger q/k weights
    make attention position-sensitive, so a RoPE layout slip in the export changes the greedy tokens."""
    with torch.no_grad():
        for name, param in vlm.language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(factor)


def spm_tokenizer():
    """A tiny LLaMA-style tokenizer as MobileLLaMA's reads in transformers: sentencepiece-style BPE with byte fallback
    (ids 0-2 <unk> <s> </s>, then the 256 byte pieces), "▁" prepended and spaces replaced, no pre-tokeniser."""
    import json
    import random

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    rng = random.Random(0)
    words = ("what shapes are in the picture red green blue circle square triangle two three left right top bottom "
             "a chat between curious user and an artificial intelligence assistant USER ASSISTANT").split()
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(3000)]
    base = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    trainer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=700, special_tokens=base, show_progress=False))
    spec = json.loads(trainer.to_str())["model"]
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in spec["merges"]]
    tok = Tokenizer(models.BPE(vocab=spec["vocab"], merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    return LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", legacy=True)


def tiny_ldp_model(tokenizer, projector: str = "ldp"):
    """MobileVLM shaped: LDP (v1) or LDPv2 on a 3-layer CLIP at 336 px (llama.cpp's 24x24 grid), a Llama, random
    weights, the vicuna_v1 template."""
    from transformers import LlamaConfig

    from model.processor import VLMProcessor
    from model.tiling import CLIP_MEAN, CLIP_STD, TilingConfig
    from model.vision import clip_vit_l14_336_config
    from model.vlm import PocketVLM, PocketVLMConfig

    from .conftest import randomize_

    vocab_size = len(tokenizer)
    tokenizer.add_tokens(["<IMG_CONTEXT>"], special_tokens=True)  # where it lacks it: beyond the vocabulary (MobileVLM)
    config = PocketVLMConfig(
        vision_config=clip_vit_l14_336_config(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=4),
        text_config=LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
                                bos_token_id=tokenizer.bos_token_id, pad_token_id=None),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), vision_feature_layer=-2,
        projector_type=projector,
        chat_template="vicuna_v1", image_start_token=None, image_end_token=None,
        tiling=TilingConfig(tile_size=336, mode="pad", max_tiles=1, thumbnail=False, mean=CLIP_MEAN, std=CLIP_STD).to_dict(),
    )
    processor = VLMProcessor.from_config(config, tokenizer)
    torch.manual_seed(7)
    vlm = PocketVLM(config)
    randomize_(vlm, seed=7)
    return vlm.eval(), processor


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """exports(name, qtype) -> the export folder (written once per module)."""
    made: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("gguf")

    def get(name: str, qtype: str) -> Path:
        if (name, qtype) not in made:
            vlm, processor = models[name]
            made[name, qtype] = export(vlm, processor, "gguf", root / f"{name}-{qtype}", qtype=qtype, name=name)
        return made[name, qtype]

    return get


def _files(folder: Path, name: str, qtype: str) -> tuple[Path, Path]:
    model_file, mmproj_file = file_names(name, qtype)
    return folder / model_file, folder / mmproj_file


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _tiles(processor, image) -> list[np.ndarray]:
    return tiles_of(image, processor.tiling.for_images(1))


def torch_embeddings(vlm, processor, image) -> np.ndarray:
    tiles = _tiles(processor, image)
    pixels = normalize([Image.fromarray(t) for t in tiles], processor.tiling.mean, processor.tiling.std)
    with torch.no_grad():
        features = vlm.get_image_features(pixels)
    return features.reshape(-1, features.shape[-1]).numpy()


LDP_MODELS = ("mobilevlm", "mobilevlm-ldp", "mobilevlm-spm")


@contextlib.contextmanager
def llamacpp_ldp_rows(vlm):
    """PyTorch feeding the LDP projector the rows llama.cpp 0.3.36 feeds it.

    Its llava graph (tools/mtmd/models/llava.cpp) appends the CLS token after the patches, then picks rows
    1..576 as if CLS came first: the projector gets patches 1..575 and CLS, not patches 0..575. The export cannot
    undo that (the rows are fixed by the graph); everything else is exact (test_image_embeddings_match_pytorch).
    """
    from model.vision import select_features

    real = vlm.get_image_features

    def shifted(pixel_values):
        pixel_values = pixel_values.to(dtype=vlm.vision_tower.dtype)
        hidden = vlm.vision_tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        rows = hidden[vlm.config.vision_feature_layer]  # (tiles, 1 + 576, C): CLS first
        assert select_features is not None and rows.shape[1] == 577
        return vlm.multi_modal_projector(torch.cat([rows[:, 2:], rows[:, :1]], dim=1))

    vlm.get_image_features = shifted
    try:
        yield vlm
    finally:
        vlm.get_image_features = real


def reference(name, vlm):
    """The PyTorch model as llama.cpp 0.3.36 runs it (LDP row selection, see `llamacpp_ldp_rows`)."""
    return llamacpp_ldp_rows(vlm) if name in LDP_MODELS else contextlib.nullcontext(vlm)


def _gelu_table(x: torch.Tensor) -> torch.Tensor:
    """ggml's CPU GELU: input rounded to float16, tanh-approximate GELU, output rounded to float16."""
    y = F.gelu(x.half().float(), approximate="tanh").half().float()
    return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


def _gelu_quick_table(x: torch.Tensor) -> torch.Tensor:
    h = x.half().float()
    return (h * torch.sigmoid(1.702 * h)).half().float()


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Im2colConv(torch.nn.Module):
    """A Conv2d as ggml_conv_2d / ggml_conv_2d_dw compute it on the CPU: a float16 im2col of the input times a
    float16 kernel (the patch embedding's kernel is converted for the product; depthwise kernels are stored so),
    accumulated in float32."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.weight = conv.weight  # callers read the dtype from it

    def forward(self, x):
        weight = self.conv.weight.half().float()
        return F.conv2d(x.half().float(), weight, self.conv.bias, self.conv.stride, self.conv.padding,
                        self.conv.dilation, self.conv.groups)


@contextlib.contextmanager
def llamacpp_numerics(vlm):
    """PyTorch computing the vision side as llama.cpp's CPU kernels do: GELU / quick-GELU from ggml's float16
    tables, convolutions through float16 im2col. Everything else stays float32."""
    from transformers.activations import GELUActivation, QuickGELUActivation

    swapped = []
    for module in [*vlm.vision_tower.modules(), *vlm.multi_modal_projector.modules()]:
        for name, child in module.named_children():
            if isinstance(child, (torch.nn.GELU, GELUActivation)):
                replacement = _Fn(_gelu_table)
            elif isinstance(child, QuickGELUActivation):
                replacement = _Fn(_gelu_quick_table)
            elif isinstance(child, torch.nn.Conv2d) and (child.groups > 1 or child.kernel_size[0] > 1):
                replacement = _Im2colConv(child)
            else:
                continue
            setattr(module, name, replacement)
            swapped.append((module, name, child))
    assert swapped, "nothing to swap"
    try:
        yield vlm
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("qtype", ["f32", "f16"])
def test_image_embeddings_match_pytorch(name, qtype, models, exports, example_image, llama_cpp):
    vlm, processor = models[name]
    model_file, mmproj = _files(exports(name, qtype), name, qtype)
    with PocketLlama(model_file, mmproj, kv_f32=qtype == "f32") as llama:
        got = llama.embed(llama.tiles_file(_tiles(processor, example_image)))
    with reference(name, vlm):
        exact = torch_embeddings(vlm, processor, example_image)
        with llamacpp_numerics(vlm):
            emulated = torch_embeddings(vlm, processor, example_image)
    assert got.shape == exact.shape
    if qtype == "f32":
        assert relative_error(got, emulated) < 1e-4  # the export is exact ...
        assert relative_error(got, exact) < 2e-3  # ... and llama.cpp's float16 GELU table and im2col are what remain
    else:
        assert relative_error(got, exact) < 1e-2


def test_coarser_pixel_shuffle_runs_in_llamacpp_as_in_pytorch(tmp_path, example_image, llama_cpp):
    """`downsample_ratio: 0.25` (4x4 patches a token, the token-budget option) is written as the projector's scale
    factor; llama.cpp's InternVL graph must shuffle by it and give PyTorch's 4 tokens a tile."""
    vlm, processor = model.load("pocket-tiny", projector_options={"downsample_ratio": 0.25})
    model_file, mmproj = _files(export(vlm, processor, "gguf", tmp_path / "out", qtype="f32", name="coarse"),
                                "coarse", "f32")
    with PocketLlama(model_file, mmproj, kv_f32=True) as llama:
        got = llama.embed(llama.tiles_file(_tiles(processor, example_image)))
    with llamacpp_numerics(vlm):
        emulated = torch_embeddings(vlm, processor, example_image)
    assert got.shape == emulated.shape == (4 * len(_tiles(processor, example_image)), vlm.config.text_config.hidden_size)
    assert relative_error(got, emulated) < 1e-4


def greedy(vlm, encoded, n: int) -> tuple[list[int], list[int], list[float]]:
    """n argmax tokens, end-of-text tokens included (no stopping), recomputing the whole sequence each step; with
    each step's runner-up token and the logit gap between the two."""
    inputs = encoded.to_model_inputs()
    tokens, runners_up, gaps = [], [], []
    with torch.no_grad():
        embeds, _ = vlm.embed(inputs["input_ids"], inputs["pixel_values"])
        for _ in range(n):
            top = torch.topk(vlm.language_model(inputs_embeds=embeds).logits[0, -1], 2)
            tokens.append(int(top.indices[0]))
            runners_up.append(int(top.indices[1]))
            gaps.append(float(top.values[0] - top.values[1]))
            step = vlm.get_input_embeddings()(torch.tensor([[tokens[-1]]]))
            embeds = torch.cat([embeds, step], dim=1)
    return tokens, runners_up, gaps


NEAR_TIE = 1e-2  # a logit gap float16 weights may flip (random tiny models have such steps; trained ones rarely)


def _generation_inputs(processor, image):
    return processor([{"role": "user", "content": QUESTION}], images=[image])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("qtype", ["f32", "f16"])
def test_prompt_and_greedy_tokens_match_pytorch(name, qtype, models, exports, example_image, llama_cpp):
    vlm, processor = models[name]
    encoded = _generation_inputs(processor, example_image)
    with reference(name, vlm):
        expected, runners_up, gaps = greedy(vlm, encoded, 32)
    with LlamaCppVLM(exports(name, qtype)) as runtime:
        messages = runtime.messages([{"role": "user", "content": QUESTION}], 1)
        entries = runtime.image_entries([example_image])
        answer = runtime.llama.request(op="generate", messages=messages, images=entries, n_predict=32,
                                       ignore_eos=True)
    # llama.cpp rendered the embedded template and tokenised it as our processor does (image rows are -1)
    ids = encoded.input_ids.tolist()
    assert answer["prompt_ids"] == [-1 if i == processor.image_token_id else i for i in ids]
    got = answer["tokens"]
    if qtype == "f32" or got == expected:
        assert got == expected
    else:  # f16: identical up to a step where PyTorch itself nearly tied, and llama.cpp took the runner-up there
        k = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        assert gaps[k] < NEAR_TIE and got[k] == runners_up[k], (k, gaps[k], got[:k + 1], expected[:k + 1])


def test_feature_layer_is_the_one_pytorch_uses(models, tmp_path, example_image, monkeypatch, llama_cpp):
    """MobileVLM reads layer -2 of its CLIP tower (2 of 3 layers run). The block count the export writes makes
    llama.cpp run exactly those; the legacy converter's count (one fewer) is far off, so the parity test tells."""
    import deploy.gguf as g

    vlm, processor = models["mobilevlm"]
    with llamacpp_ldp_rows(vlm):
        exact = torch_embeddings(vlm, processor, example_image)

    def embeddings(folder: Path) -> np.ndarray:
        model_file, mmproj = _files(folder, "mobilevlm", "f32")
        with PocketLlama(model_file, mmproj) as llama:
            return llama.embed(llama.tiles_file(_tiles(processor, example_image)))

    good = embeddings(export(vlm, processor, "gguf", tmp_path / "good", qtype="f32", name="mobilevlm"))
    facts = g._projector_facts(vlm)
    assert facts.layers_to_run == 2
    real = g._projector_facts
    monkeypatch.setattr(g, "_projector_facts", lambda v: g._Projector(facts.kind, facts.layers_to_run - 1, False))
    legacy = embeddings(export(vlm, processor, "gguf", tmp_path / "legacy", qtype="f32", name="mobilevlm"))
    monkeypatch.setattr(g, "_projector_facts", real)
    assert relative_error(good, exact) < 2e-3
    assert relative_error(legacy, exact) > 0.05


@pytest.mark.parametrize("name", LDP_MODELS)
def test_llamacpp_ldp_rows_are_not_pytorchs(name, models, exports, example_image, llama_cpp):
    """Upstream defect, llama.cpp 0.3.36: the LDP/LDPv2 projector gets patches 1..575 and CLS instead of patches
    0..575 (`llamacpp_ldp_rows`). Checked both ways, so the day llama.cpp fixes it this test says so."""
    vlm, processor = models[name]
    model_file, mmproj = _files(exports(name, "f32"), name, "f32")
    with PocketLlama(model_file, mmproj, kv_f32=True) as llama:
        got = llama.embed(llama.tiles_file(_tiles(processor, example_image)))
    true = torch_embeddings(vlm, processor, example_image)
    with llamacpp_ldp_rows(vlm):
        as_llamacpp = torch_embeddings(vlm, processor, example_image)
    assert relative_error(got, as_llamacpp) < 2e-3
    assert relative_error(got, true) > 1e-2


@pytest.mark.slow
def test_lora_is_merged_vision_side_too(tmp_path, example_image, capsys, llama_cpp):
    """`adapt export --adapter DIR`: LoRA on the vision tower (and the LLM) is folded in before writing, so
    llama.cpp sees the adapted tower (llama.cpp#14867: a vision LoRA is lost unless merged)."""
    from peft import LoraConfig, get_peft_model

    from adapt.cli import main
    from model.loading import peft_quietly

    vlm, processor = model.load("pocket-tiny")
    base = torch_embeddings(vlm, processor, example_image)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "q_proj", "linear_1"], init_lora_weights=False)
    torch.manual_seed(3)
    with peft_quietly():
        peft_model = get_peft_model(vlm, config)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    with torch.no_grad():
        with llamacpp_numerics(vlm):
            adapted = torch_embeddings(peft_model.base_model.model, processor, example_image)
    out = tmp_path / "gguf"
    assert main(["export", "-f", "gguf", "--model", "pocket-tiny", "--adapter", str(tmp_path / "adapter"),
                 "--type", "f32", "--out", str(out)]) == 0
    model_file, mmproj = _files(out, "pocket-tiny", "f32")
    with PocketLlama(model_file, mmproj, kv_f32=True) as llama:
        got = llama.embed(llama.tiles_file(_tiles(processor, example_image)))
    assert relative_error(adapted, base) > 0.05  # the adapter changes the vision side ...
    assert relative_error(got, adapted) < 1e-4  # ... and the export carries it


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl"])
def test_llamacpp_preprocessing_of_a_tile_sized_image_is_ours(name, models, exports, example_image, llama_cpp):
    """A tile-sized image needs no tiling and no resize, in InternVL's rules and in llama.cpp's: the encoder input
    (hence the embeddings) is the same whether llama.cpp preprocesses the image or we do."""
    vlm, processor = models[name]
    size = processor.tiling.tile_size
    image = example_image.resize((size, size), Image.Resampling.BICUBIC)
    model_file, mmproj = _files(exports(name, "f32"), name, "f32")
    with PocketLlama(model_file, mmproj) as llama:
        ours = llama.embed(llama.tiles_file(_tiles(processor, image)))
        rgb = llama.scratch / "image.rgb"
        rgb.write_bytes(image.tobytes())
        theirs = llama.embed({"rgb": str(rgb), "width": size, "height": size})
    assert len(_tiles(processor, image)) == 1
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("template", list_chat_templates())
def test_embedded_chat_template_renders_in_llamacpp_as_in_training(template, models, tmp_path, llama_cpp):
    vlm, processor = models["pocket-tiny"]
    processor = _with_template(processor, template)
    folder = export(vlm, processor, "gguf", tmp_path / template, qtype="f16", name="t")
    conversations = [
        [{"role": "user", "content": "<__media__>\nWhat shapes?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?"}],
    ]
    with PocketLlama(_files(folder, "t", "f16")[0]) as llama:
        for messages in conversations:
            rendered = llama.request(op="render", messages=messages, add_generation_prompt=True)["prompt"]
            assert rendered == processor.chat_template.render(messages, add_generation_prompt=True)


def _with_template(processor, name):
    import copy

    clone = copy.copy(processor)
    clone.chat_template = get_chat_template(name)
    return clone


def test_a_tokenizer_model_only_unk_is_written_unknown(tmp_path):
    """MobileVLM V2 ships tokenizer.model alone; transformers 5 reads it with the backend model's unk_token unset,
    and <unk> went into the GGUF as a CONTROL token (llama.cpp's converter writes UNKNOWN, as for the others)."""
    import gguf

    from deploy.gguf import _vocab
    from model.loading import load_tokenizer

    from .test_reliability_model import _sentencepiece_folder

    tok = load_tokenizer(_sentencepiece_folder(tmp_path / "tok", "LlamaTokenizer"))
    types = _vocab(tok, len(tok)).types
    assert types[tok.unk_token_id] == gguf.TokenType.UNKNOWN
    assert types[tok.bos_token_id] == types[tok.eos_token_id] == gguf.TokenType.CONTROL
    assert types[tok.convert_tokens_to_ids("<0x41>")] == gguf.TokenType.BYTE


@pytest.mark.parametrize("name", ["pocket-tiny", "mobilevlm-spm"])
def test_tokenizer_matches_in_llamacpp(name, models, exports, llama_cpp):
    """Byte-level BPE (pocket-tiny, GPT-2 pre-tokenisation) and sentencepiece-style BPE (LLaMA-style: ▁ prefix,
    byte fallback, scores replaying the merge order): llama.cpp's ids are transformers' ids."""
    _, processor = models[name]
    texts = ["What shapes are in the picture?", "  two red circles,\n\tthree  squares [[12, 340, 56, 78]]",
             "<ref>the star</ref><box>[[1, 2, 3, 4]]</box>", "naïve café – 3.14159 ünïcödé 😀",
             "<|im_end|>x<img>", "what shapes are in the picture USER: ASSISTANT:</s>USER: a chat", "\nWhat? ", " ",
             # unseen compounds: their pieces depend on the merge order, not only on the vocabulary
             "shapescircle greentriangleblue assistantuser rightleftop squaretwothree curiouslyintelligent",
             "thetrianglethe bluegreenred chatbetweenassistant pictureshapes topbottomleft"]
    with PocketLlama(_files(exports(name, "f16"), name, "f16")[0]) as llama:
        for text in texts:
            assert llama.request(op="tokenize", text=text)["ids"] == processor.tokenizer.encode(text, add_special_tokens=False), text


@pytest.mark.slow
def test_eval_through_llamacpp_predicts_as_pytorch(models, exports, tmp_path, llama_cpp):
    """`adapt eval --runtime llamacpp`: `predict` with llama.cpp in place of the PyTorch model (same batches, left
    padding, token ids and tiles) gives PyTorch's answers for an f32 export: multi-tile images, a capped tile
    count, several images in one sample, a text-only sample with history."""
    from deploy.llamacpp.eval import LlamaCppEvalModel
    from tests.runtime_eval import assert_predicts_as_pytorch

    vlm, processor = models["pocket-tiny"]
    assert_predicts_as_pytorch(LlamaCppEvalModel(exports("pocket-tiny", "f32"), processor), vlm, processor, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m"])
def test_quantised_exports_run(qtype, models, exports, example_image, llama_cpp):
    from gguf import GGUFReader

    folder = exports("pocket-tiny", qtype)
    model_file, mmproj = _files(folder, "pocket-tiny", qtype)
    types = {t.tensor_type.name for t in GGUFReader(str(model_file)).tensors}
    assert ("Q8_0" if qtype == "q8_0" else "Q4_K") in types or (qtype == "q4_k_m" and types & {"Q5_0", "Q6_K"})
    assert mmproj.name.endswith("-f16.gguf")
    with LlamaCppVLM(folder) as runtime:
        answer = runtime.chat([{"role": "user", "content": QUESTION}], [example_image], max_new_tokens=16)
    assert answer.tokens


def test_a_max_new_tokens_past_the_context_answers_as_a_small_one(exports, example_image, llama_cpp):
    """A --max-new-tokens beyond 32 bits used to wrap negative inside the helper: no answer at all."""
    with LlamaCppVLM(exports("pocket-tiny", "f16")) as runtime:
        asked = [runtime.chat([{"role": "user", "content": QUESTION}], [example_image], max_new_tokens=n).tokens
                 for n in (16, 3_000_000_000)]
    assert asked[0] and asked[1][:len(asked[0])] == asked[0]


@pytest.mark.slow
def test_adapt_chat_llamacpp_gives_the_pytorch_answer(tmp_path, capsys, llama_cpp):
    """The README's three commands: export, (build), chat -- the answer is `adapt chat`'s on the PyTorch model."""
    from adapt.cli import main
    from model.resources import assets_dir

    out = tmp_path / "pocket-tiny-gguf"
    assert main(["export", "-f", "gguf", "--model", "pocket-tiny", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "mmproj-pocket-tiny-f16.gguf", "pocket-tiny-f16.gguf"]
    image = str(assets_dir() / "example.png")
    capsys.readouterr()
    assert main(["chat", "--image", image]) == 0
    torch_answer = capsys.readouterr().out
    assert main(["chat", "--runtime", "llamacpp", "--model", str(out), "--image", image]) == 0
    llama_answer = capsys.readouterr().out
    assert llama_answer.strip() and llama_answer.strip() == torch_answer.strip()


def test_a_name_starting_with_mmproj_is_told_apart_by_its_contents(models, tmp_path):
    """`--name mmproj-x` writes the text model as mmproj-x-f16.gguf: the runtime refused the folder (it took every
    mmproj-* file for a vision part); which file is which is read from the files (general.type)."""
    from deploy.llamacpp.runtime import ExportFolder

    vlm, processor = models["pocket-tiny"]
    out = export(vlm, processor, "gguf", tmp_path / "named", qtype="f16", name="mmproj-x")
    found = ExportFolder.open(out)
    assert (found.model, found.mmproj) == _files(out, "mmproj-x", "f16")
    assert found.tiling == processor.tiling


@pytest.mark.parametrize("edit, said", [
    ((b"pocket_adapt.tiling", b"pocket_adapt.tilinX"), "not written by `adapt export --format gguf` (no pocket_adapt.tiling"),
    ((b'"tile_size": 112', b'"tile_size": -12'), "(pocket_adapt.tiling): "),
    ((b'{"tile_size"', b'["tile_size"'), "(pocket_adapt.tiling): not JSON"),
])
def test_an_mmproj_without_pocket_tiling_is_one_line_naming_it(edit, said, exports, tmp_path, capsys):
    """An mmproj another tool wrote (no pocket_adapt.tiling key) or one whose tiling key was edited: a KeyError /
    TilingError traceback before; now one line naming the file."""
    from adapt.cli import main
    from model.checkpoints.checksums import write_checksums

    folder = tmp_path / "other-mmproj"
    shutil.copytree(exports("pocket-tiny", "f16"), folder)
    capsys.readouterr()
    _, mmproj = _files(folder, "pocket-tiny", "f16")
    data = mmproj.read_bytes()
    assert data.count(edit[0]) == 1
    mmproj.write_bytes(data.replace(*edit))
    write_checksums(folder)
    rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"adapt chat: error: {mmproj}") and "Traceback" not in err, err
    assert said in err


def test_max_tiles_with_llamacpps_own_preprocessing_is_refused(exports, capsys, llama_cpp):
    """llama.cpp's own preprocessing reads its tile counts from the mmproj: `--max-tiles 1 --preprocess llamacpp`
    answered with all of them as if the flag were not there; it is refused, and plain --preprocess llamacpp runs."""
    from adapt.cli import main

    folder = exports("pocket-tiny", "f16")
    capsys.readouterr()
    chat = ["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image", "--preprocess", "llamacpp",
            "--max-new-tokens", "2"]
    assert main([*chat, "--max-tiles", "1"]) == 1
    err = capsys.readouterr().err
    assert "takes its tile counts from the mmproj" in err and "--max-tiles" in err and "Traceback" not in err
    assert main(chat) == 0


def test_llamacpp_keeps_to_the_models_trained_context(tmp_path, llama_cpp):
    """A text model trained with a context under the runtime's 4096 (MobileLLaMA: 2048): llama.cpp answered
    prompts past it (positions the model never saw) that PyTorch refuses; its context is now the GGUF's
    context_length, so such a prompt is refused there too, and one that fits still answers."""
    vlm, processor = model.load("pocket-tiny")
    vlm.config.text_config.max_position_embeddings = 200
    out = export(vlm, processor, "gguf", tmp_path / "short", qtype="f16", name="short", progress=False)
    with LlamaCppVLM(out) as runtime:
        assert runtime.n_ctx == 200
        assert runtime.chat([{"role": "user", "content": QUESTION}], max_new_tokens=2).tokens
        with pytest.raises(LlamaCppError, match="does not fit the model.s context of 200"):
            runtime.chat([{"role": "user", "content": "red " * 300}], max_new_tokens=2)


@pytest.mark.parametrize("which", ["model", "mmproj"])
def test_a_truncated_gguf_is_one_line_naming_it(which, exports, tmp_path, capsys):
    """A GGUF cut short (a copy that did not finish): `adapt chat --runtime llamacpp` names the file instead of
    the gguf reader's IndexError / ValueError traceback."""
    from adapt.cli import main

    folder = tmp_path / "cut"
    shutil.copytree(exports("pocket-tiny", "f16"), folder)
    capsys.readouterr()  # the export's progress bar, when this test is the first to export
    target = dict(zip(("model", "mmproj"), _files(folder, "pocket-tiny", "f16")))[which]
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt chat: error:") and "Traceback" not in err
    assert f"{target}: its bytes do not match the SHA-256 recorded at export" in err
    (folder / "SHA256SUMS").unlink()  # a copy that left the checksums behind: the reader still names the file
    rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt chat: error:") and "Traceback" not in err
    assert f"{target}: not a readable GGUF file, truncated or damaged?" in err


@pytest.mark.parametrize("which", ["model", "mmproj"])
def test_a_gguf_damaged_in_place_is_refused(which, exports, tmp_path, capsys):
    """Bytes flipped inside the tensor data, size and header intact (a faulty copy): llama.cpp would load it and
    answer with wrong numbers; the export's SHA256SUMS catches it, naming the file."""
    from tests.test_export_checksums import assert_chat_refuses_damaged

    folder = tmp_path / "flipped"
    shutil.copytree(exports("pocket-tiny", "f16"), folder)
    target = dict(zip(("model", "mmproj"), _files(folder, "pocket-tiny", "f16")))[which]
    assert_chat_refuses_damaged(capsys, "llamacpp", folder, target)


def test_an_mmproj_of_another_model_is_refused(models, exports, tmp_path, capsys, llama_cpp):
    """The text model and mmproj record the vision weights they were exported with: an mmproj of another model
    beside a text model is refused (it answered with the wrong vision); one of the same model in another
    precision still runs."""
    from adapt.cli import main

    text, _ = _files(exports("pocket-tiny", "f16"), "pocket-tiny", "f16")
    _, f32_mmproj = _files(exports("pocket-tiny", "f32"), "pocket-tiny", "f32")
    vlm, processor = models["pocket-tiny"]
    other = export(vlm.__class__(vlm.config).eval(), processor, "gguf", tmp_path / "other", qtype="f16",
                   name="pocket-tiny")  # same shapes, other (random) weights
    _, other_mmproj = _files(other, "pocket-tiny", "f16")
    for mmproj, ok in ((f32_mmproj, True), (other_mmproj, False)):
        folder = tmp_path / f"mix-{ok}"
        folder.mkdir()
        shutil.copy(text, folder)
        shutil.copy(mmproj, folder)
        rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image", "--max-new-tokens", "2"])
        err = capsys.readouterr().err
        assert rc == (0 if ok else 1), err
        assert ok or f"{mmproj.name} is not the vision part of {text.name}" in err


def test_a_gguf_llamacpp_refuses_is_one_line_with_its_reason(exports, tmp_path, capsys, llama_cpp):
    """A text GGUF llama.cpp will not load (here: an architecture it does not know): its reason in one line --
    the log used to be closed before it was read, a ValueError traceback."""
    from adapt.cli import main
    from model.checkpoints.checksums import write_checksums

    folder = tmp_path / "odd"
    shutil.copytree(exports("pocket-tiny", "f16"), folder)
    capsys.readouterr()  # the export's progress bar, when this test is the first to export
    text, _ = _files(folder, "pocket-tiny", "f16")
    arch = model.load("pocket-tiny")[0].config.text_config.model_type.encode()
    data = text.read_bytes()
    assert arch in data
    text.write_bytes(data.replace(arch, arch[:-1] + b"9"))
    write_checksums(folder)  # a GGUF written that way, not damaged on the way: llama.cpp itself must refuse it
    rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"adapt chat: error: llama.cpp could not load {text}") and "Traceback" not in err
    assert (arch[:-1] + b"9").decode() in err.split("could not load", 1)[1].split(str(text), 1)[1]  # its reason
    assert re.search(r"with a context of \d+:", err)  # a context too big for memory would fail here too: say which


def test_llamacpp_aborting_mid_request_is_one_line_with_its_assert(tmp_path, capsys, monkeypatch, llama_cpp):
    """An mmproj whose graph llama.cpp aborts on (here: a pixel-shuffle factor that does not fit the projector's
    weights): the failed GGML_ASSERT in one line -- gdb's backtrace used to reach the JSON channel, a
    JSONDecodeError traceback."""
    import gguf

    from adapt.cli import main

    vlm, processor = model.load("pocket-tiny", projector_options={"downsample_ratio": 0.25})
    monkeypatch.setattr(gguf.GGUFWriter, "add_vision_projector_scale_factor",
                        lambda self, value: self.add_uint32(gguf.Keys.ClipVision.Projector.SCALE_FACTOR, 2))
    folder = export(vlm, processor, "gguf", tmp_path / "out", qtype="f32", name="coarse", progress=False)
    rc = main(["chat", "--runtime", "llamacpp", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt chat: error:") and "Traceback" not in err, err
    assert "GGML_ASSERT" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_stock_llama_mtmd_cli_answers_as_pytorch(models, exports, example_image, tmp_path, llama_cpp):
    """llama.cpp's own multimodal CLI, with only the export (embedded template, tile-sized image), answers as
    PyTorch does."""
    vlm, processor = models["pocket-tiny"]
    size = processor.tiling.tile_size
    image = example_image.resize((size, size), Image.Resampling.BICUBIC)
    image_path = tmp_path / "tile.png"
    image.save(image_path)
    encoded = processor([{"role": "user", "content": QUESTION}], images=[image])
    with torch.no_grad():
        ids = vlm.generate(**encoded.to_model_inputs(), max_new_tokens=24, do_sample=False,
                           eos_token_id=processor.stop_token_ids, pad_token_id=processor.pad_token_id)[0]
    expected = processor.decode(ids)
    model_file, mmproj = _files(exports("pocket-tiny", "f16"), "pocket-tiny", "f16")
    proc = _run_mtmd_cli(["-m", str(model_file), "--mmproj", str(mmproj), "--image", str(image_path),
                          "-p", QUESTION, "--temp", "0", "-n", "24", "--jinja"])
    assert expected and expected in proc.stdout


def _run_mtmd_cli(args: list[str], tries: int = 10) -> subprocess.CompletedProcess:
    """Run llama-mtmd-cli until its output arrives whole. Its logger (which also prints the answer) writes from a
    thread that is never joined at exit (common/log.cpp `common_log_main`), so on a busy machine the tail of stdout can
    be lost; a whole run ends with the blank lines the CLI logs last. Only such a cut run is tried again."""
    for _ in range(tries):
        proc = subprocess.run([str(binary("llama-mtmd-cli")), *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        if proc.stdout.endswith("\n\n"):
            return proc
    pytest.fail(f"llama-mtmd-cli's output was cut short in all {tries} runs; last stdout: {proc.stdout!r}")


# ------------------------------------------------------------------------------------------ without llama.cpp


@pytest.mark.parametrize("template", list_chat_templates())
def test_jinja_chat_template_renders_as_training(template):
    import jinja2

    from model.chat import chat_template_jinja

    t = get_chat_template(template)
    jinja = jinja2.Environment().from_string(chat_template_jinja(t))
    conversations = [
        [{"role": "user", "content": "<image>\nWhat shapes? \"quoted\" ünïcödé"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?\n"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
    ]
    for messages in conversations:
        for generation_prompt in (True, False):
            assert jinja.render(messages=messages, add_generation_prompt=generation_prompt) == t.render(
                messages, add_generation_prompt=generation_prompt)


def test_unsupported_language_model_is_named(models):
    from transformers import Phi3Config

    from model.vlm import PocketVLM, PocketVLMConfig

    vlm, processor = models["internvl"]
    text = Phi3Config(vocab_size=vlm.config.text_config.vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4, pad_token_id=None)
    config = PocketVLMConfig(vision_config=vlm.config.vision_config, text_config=text,
                             image_token_id=vlm.config.image_token_id, projector_options=vlm.config.projector_options,
                             tiling=vlm.config.tiling)
    with pytest.raises(GGUFExportError, match="supports Qwen2 and Llama.*'phi3'"):
        check_supported(PocketVLM(config), processor)


@pytest.mark.parametrize("edit, said", [
    (lambda spec: spec["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
    (lambda spec: spec.update(normalizer={"type": "Lowercase"}), "normalises text (Lowercase)"),
    (lambda spec: spec.update(normalizer={"type": "NFC"}), None),  # Qwen2's: normalised text stays as it is
])
def test_a_byte_level_tokenizer_llamacpp_would_split_otherwise_is_refused(edit, said):
    """ByteLevel(add_prefix_space=True) (RoBERTa-style) or a normaliser (lowercasing): llama.cpp's byte-level BPE
    does neither, so prompts began with other ids in llama.cpp ("What" -> "ĠWhat"); they were exported silently,
    now refused naming why."""
    import json

    from tokenizers import Tokenizer

    vlm, processor = model.load("pocket-tiny")
    check_supported(vlm, processor)
    spec = json.loads(processor.tokenizer.backend_tokenizer.to_str())
    edit(spec)
    processor.tokenizer._tokenizer = Tokenizer.from_str(json.dumps(spec))
    if said is None:
        check_supported(vlm, processor)
        return
    with pytest.raises(GGUFExportError, match=re.escape(said)):
        check_supported(vlm, processor)


def test_unsupported_projector_and_grid_are_named(models):
    import copy

    vlm, processor = models["internvl"]
    other = copy.deepcopy(vlm)
    other.config.projector_type = "mlp2x_gelu"
    with pytest.raises(GGUFExportError, match="supported: InternVL pixel shuffle"):
        check_supported(other, processor)
    other = copy.deepcopy(vlm)
    other.config.projector_options = {**other.config.projector_options, "ps_version": "v1"}
    with pytest.raises(GGUFExportError, match="ps_version v1"):
        check_supported(other, processor)


@pytest.mark.parametrize("layer", [-1, 3])
def test_an_ldp_feature_layer_at_the_towers_end_is_refused(layer, tiny_tokenizer):
    """llama.cpp's LDP graph reads the output of block_count - 1 layers, so the tower's last layer has no block
    count; -1 was refused, but the same layer given as +L (3 of 3) was written and llama.cpp then failed to load the
    mmproj (no tensor v.blk.3.*). Both are refused, naming the layer."""
    vlm, processor = tiny_ldp_model(tiny_tokenizer)
    check_supported(vlm, processor)  # -2: MobileVLM's
    vlm.config.vision_feature_layer = layer
    with pytest.raises(GGUFExportError, match=rf"feature layer before the last .*vision_feature_layer {layer} is the "
                                              r"last of the tower's 3 layers"):
        check_supported(vlm, processor)


def test_export_target_rules(models, tmp_path):
    """A non-empty target is refused without --force; with it the earlier export's .gguf files (its SHA256SUMS lists
    them) are replaced, the rest kept; a failed export leaves nothing behind."""
    from model.checkpoints.checksums import write_checksums

    vlm, processor = models["internvl"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "old-f16.gguf").write_text("stale")
    write_checksums(out)  # as the earlier export wrote it
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(vlm, processor, "gguf", out, qtype="f16", name="m")
    export(vlm, processor, "gguf", out, force=True, qtype="f16", name="m")
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "m-f16.gguf", "mmproj-m-f16.gguf", "notes.txt"]
    with pytest.raises(GGUFExportError, match="unknown GGUF type"):
        export(vlm, processor, "gguf", tmp_path / "bad", qtype="q2_k", name="m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_or_stale_build_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path))
    with pytest.raises(LlamaCppError, match=r"not built here .*build it with `python -m deploy.llamacpp`"):
        binary()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pocket-llama").write_text("")
    (tmp_path / "bin" / "BUILD").write_text("llama-cpp-python 0.0.1; driver 0")
    with pytest.raises(LlamaCppError, match=r"out of date .*build it with `python -m deploy.llamacpp`"):
        binary()


def test_q4_k_m_without_a_build_is_refused_before_any_file_is_written(tmp_path, monkeypatch):
    """q4_k_m goes through llama-quantize: without a build, the mmproj and the whole f32 text model were written
    (minutes and gigabytes for a real model) before the error; it now comes first, and nothing is left behind."""
    import deploy.gguf as g

    vlm, processor = model.load("pocket-tiny")
    monkeypatch.setenv("POCKET_LLAMA_CPP", str(tmp_path / "no-build"))
    written = []
    for writer in ("write_mmproj", "write_text_model"):
        monkeypatch.setattr(g, writer, lambda *a, _w=writer, **k: written.append(_w))
    with pytest.raises(LlamaCppError, match=r"not built here .*python -m deploy.llamacpp"):
        export(vlm, processor, "gguf", tmp_path / "out", qtype="q4_k_m", name="m")
    assert written == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_build_runs_from_an_installed_package_without_a_checkout(tmp_path):
    """An installed pocket-adapt has no ../../.venv beside deploy/llamacpp: build.sh ran a python that is not there
    (exit 127) and every message sent the user to a Makefile they do not have. build.sh now takes the python on
    PATH there, and `python -m deploy.llamacpp` runs it with its own interpreter, naming a missing tool first."""
    import sys

    import deploy.llamacpp as llamacpp

    site = tmp_path / "site-packages" / "deploy" / "llamacpp"
    site.mkdir(parents=True)
    for name in ("build.sh", "fetch.py", "CMakeLists.txt", "pocket_llama.cpp"):
        shutil.copy(Path(llamacpp.__file__).parent / name, site / name)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/called\nexit 3\n')
    (fake / "python3").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "POCKET_LLAMA_CPP": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(site / "build.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr  # the fetch ran through the python on PATH
    assert f"{site}/fetch.py {llamacpp.VERSION} " in (tmp_path / "called").read_text()
    # the module entry: a missing tool is named before anything is fetched
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "deploy.llamacpp"], capture_output=True, text=True,
                          env={"PATH": str(empty), "POCKET_LLAMA_CPP": str(tmp_path / "cache2"), "HOME": str(tmp_path)})
    assert proc.returncode == 1 and "needs: cmake (pip install cmake)" in proc.stderr
    assert "c++ (a C++17 compiler" in proc.stderr and not (tmp_path / "cache2").exists()


@pytest.mark.parametrize("args, rc", [(["--help"], 0), (["--frobnicate"], 2)])
def test_the_build_entry_answers_help_and_refuses_stray_arguments_without_building(tmp_path, args, rc):
    """`python -m deploy.llamacpp --help` ignored its arguments and started the 20-40 minute build (or, with tools
    missing, said what the build needs); --help now prints the usage and a stray argument is refused, both before
    any tool is looked for or anything is fetched."""
    import sys

    empty = tmp_path / "empty"  # no cmake on PATH: should the arguments be ignored, the entry stops at its tool check
    empty.mkdir()
    env = {"PATH": str(empty), "POCKET_LLAMA_CPP": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "deploy.llamacpp", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])  # this checkout's deploy/
    assert proc.returncode == rc, proc.stderr
    assert "usage: python -m deploy.llamacpp" in proc.stdout + proc.stderr
    assert "building llama.cpp" not in proc.stdout and "needs:" not in proc.stderr
    assert not (tmp_path / "cache").exists()


def _fake_sdist(folder: Path, version: str, marker: Path) -> Path:
    """A llama-cpp-python sdist whose setup.py and build backend write `marker`: run means code from it ran."""
    import tarfile

    root = folder / "src" / f"llama_cpp_python-{version}"
    (root / "vendor" / "llama.cpp").mkdir(parents=True)
    (root / "vendor" / "llama.cpp" / "CMakeLists.txt").write_text("# not llama.cpp\n")
    code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
    (root / "setup.py").write_text(code + "from setuptools import setup\nsetup(name='llama_cpp_python', "
                                   f"version={version!r})\n")
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {version}\n")
    sdist = folder / "links" / f"llama_cpp_python-{version}.tar.gz"
    sdist.parent.mkdir(parents=True)
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return sdist


def test_the_build_checks_the_sdist_hash_before_running_anything_from_it(tmp_path):
    """`pip download` prepared the sdist's metadata -- ran its setup.py -- before build.sh checked the pinned
    SHA-256, so a tampered index or mirror ran code first. fetch.py downloads the file itself and refuses a
    mismatch before reading it: the fake sdist's setup.py never runs and nothing reaches the cache."""
    import sys

    import deploy.llamacpp as llamacpp

    marker = tmp_path / "CODE_RAN"
    sdist = _fake_sdist(tmp_path, llamacpp.VERSION, marker)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable,
           "POCKET_LLAMA_CPP": str(tmp_path / "cache"), "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(sdist.parent), "PIP_NO_BUILD_ISOLATION": "0"}  # pip's spelling of 'no isolation'
    proc = subprocess.run(["bash", str(llamacpp.HERE / "build.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert not marker.exists()
    assert f"{sdist}: SHA-256" in proc.stderr and "is not the pinned 832db069" in proc.stderr, proc.stderr
    assert not (tmp_path / "cache" / "src").exists() and list((tmp_path / "cache").iterdir()) == []


def test_fetch_finds_the_sdist_on_an_index_and_unpacks_it_without_running_it(tmp_path):
    """The index's simple page (as pip reads PIP_INDEX_URL) leads to the file; with the pinned hash it is unpacked
    and nothing in it runs; any other hash is refused with nothing unpacked."""
    import functools
    import hashlib
    import http.server
    import threading

    from deploy.llamacpp.fetch import FetchError, fetch

    marker = tmp_path / "CODE_RAN"
    sdist = _fake_sdist(tmp_path, "0.0.1", marker)
    page = tmp_path / "site" / "simple" / "llama-cpp-python"
    page.mkdir(parents=True)
    (tmp_path / "site" / "files").mkdir()
    shutil.copy(sdist, tmp_path / "site" / "files")
    (page / "index.html").write_text(f'<a href="../../files/{sdist.name}#sha256=0">{sdist.name}</a>')
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = {"index-url": f"http://127.0.0.1:{server.server_port}/simple"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    try:
        with pytest.raises(FetchError, match=r"/files/llama_cpp_python-0.0.1.tar.gz: SHA-256 \w+ is not the pinned"):
            fetch("0.0.1", "0" * 64, tmp_path / "bad", settings)
        assert [p.name for p in (tmp_path / "bad").iterdir()] == [sdist.name]  # downloaded, not unpacked
        got = fetch("0.0.1", hashlib.sha256(sdist.read_bytes()).hexdigest(), tmp_path / "good", settings)
    finally:
        server.shutdown()
        server.server_close()
    assert (got / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file() and not marker.exists()
    with pytest.raises(FetchError, match="no find-links folder and pip's no-index"):
        fetch("0.0.1", "0" * 64, tmp_path / "good", {"no-index": "1"})


@pytest.mark.parametrize("flags, shown", [([], True), (["--no-progress"], False)])
def test_adapt_export_gguf_and_tensorrt_pass_the_progress_setting_on(tmp_path, monkeypatch, flags, shown):
    """The GGUF writer's bar and the TensorRT bundle's ONNX bar follow --no-progress (both were always off)."""
    import gguf

    import deploy.tensorrt
    from adapt.cli import main

    class Stop(Exception):
        pass

    asked = {}

    def record(name):
        def stand_in(*args, progress=None, **kwargs):
            asked[name] = progress
            raise Stop

        return stand_in

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", record("gguf"))
    monkeypatch.setattr(deploy.tensorrt, "write_onnx", record("tensorrt"))
    for fmt in ("gguf", "tensorrt"):
        with pytest.raises(Stop):
            main(["export", "--model", "pocket-tiny-scratch", "-f", fmt, "--out", str(tmp_path / fmt), *flags])
    assert asked == {"gguf": shown, "tensorrt": shown}


def test_llama_cpp_messages_place_the_image_as_the_template_trains():
    """A MobileVLM (vicuna_v1) export asked "Q\\n<image>" gets "<image>\\nQ", as the processor trains and prompts
    it; InternVL templates keep the placeholder where the text has it. (The runtime added placeholders only.)"""
    from types import SimpleNamespace

    from deploy.llamacpp.runtime import MARKER

    def content(template: str) -> str:
        runtime = SimpleNamespace(export=SimpleNamespace(template=get_chat_template(template)), placeholders=False)
        return LlamaCppVLM.messages(runtime, [{"role": "user", "content": "What is it?\n<image>"}], 1)[0]["content"]

    assert content("vicuna_v1") == f"{MARKER}\nWhat is it?"  # an export whose template takes markers
    assert content("internvl2_5") == f"What is it?\n{MARKER}"


@pytest.mark.parametrize("fields", ['{"name": "x"}', "not json", '{"stop_strings": 3}'])
def test_an_edited_template_key_is_one_error_naming_the_file(tmp_path, fields):
    """The GGUF's pocket_adapt.chat_template was read with ChatTemplate(**fields): a missing or wrong field was a
    KeyError / TypeError traceback from `adapt chat --runtime llamacpp`."""
    from gguf import GGUFWriter

    from deploy.llamacpp.runtime import ExportFolder

    path = tmp_path / "m-f16.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("pocket_adapt.chat_template", fields)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LlamaCppError, match=r"m-f16\.gguf \(pocket_adapt\.chat_template\)"):
        ExportFolder.open(tmp_path)


def test_every_shipped_template_reads_back_from_its_fields():
    """`to_dict` left out add_bos and strip_messages: a template read back from an export's fields lost them."""
    from model.chat import chat_template_from_dict

    for name in list_chat_templates():
        template = get_chat_template(name)
        assert chat_template_from_dict(template.to_dict(), name) == template


def test_a_weight_beyond_float16_is_refused_not_written_as_inf(tmp_path):
    """An f16 export wrote a weight past 65504 as inf, without a word, and llama.cpp computed NaN. q8_0 (a float16
    scale per 32 weights) and f32 hold it."""
    vlm, processor = model.load("pocket-tiny")
    with torch.no_grad():
        vlm.language_model.model.layers[0].mlp.down_proj.weight[0, 1] = 1e5
    with pytest.raises(GGUFExportError, match=r"tensor blk\.0\.ffn_down\.weight: a weight of magnitude 100000 does "
                                              r"not fit float16.*--type f32"):
        export(vlm, processor, "gguf", tmp_path / "out", qtype="f16", name="m")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    for qtype in ("q8_0", "f32"):
        export(vlm, processor, "gguf", tmp_path / qtype, qtype=qtype, name="m")
        assert (tmp_path / qtype / f"m-{qtype}.gguf").is_file()


class _Recorder:
    """A GGUF writer that records the keys `_write_vocab` adds."""

    def __init__(self):
        self.keys: dict[str, object] = {}

    def __getattr__(self, name):
        return lambda *args: self.keys.__setitem__(name, args[0] if len(args) == 1 else args)


@pytest.mark.parametrize("stops, eot, eom, lost", [
    (("<|im_end|>", "</quad>"), "</quad>", None, None),  # pocket-tiny's EOS is <|im_end|>
    (("<|im_end|>", "</quad>", "</ref>"), "</quad>", "</ref>", None),
    (("<|im_end|>", "</quad>", "</ref>", "<box>"), "</quad>", "</ref>", "<box>"),
])
def test_every_stop_token_of_the_template_ends_generation_in_llamacpp(stops, eot, eom, lost, models):
    """The GGUF named one stop token besides EOS (as EOT): a template's second one (Hermes-2's <|endoftext|> on a
    tokenizer whose EOS is </s>, a custom template's) did not end llama.cpp's own tools' answers where PyTorch's
    ended. The second goes in as EOM (llama.cpp stops on EOS, EOT and EOM); one past those is said."""
    import dataclasses
    import warnings

    from deploy.gguf import _write_vocab

    _, processor = models["pocket-tiny"]
    processor = _with_template(processor, "pocket-tiny")
    processor.chat_template = dataclasses.replace(processor.chat_template, stop_strings=stops)
    tok, writer = processor.tokenizer, _Recorder()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _write_vocab(writer, processor, len(tok))
    assert writer.keys["add_eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert writer.keys.get("add_eot_token_id") == tok.convert_tokens_to_ids(eot)
    assert writer.keys.get("add_eom_token_id") == (tok.convert_tokens_to_ids(eom) if eom else None)
    said = [str(w.message) for w in said if "stop tokens" in str(w.message)]
    assert (said and repr(lost) in said[0]) if lost else not said
