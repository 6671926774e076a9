"""ONNX export (deploy/onnx) run in onnxruntime against PyTorch.

Three models, same image and prompt: pocket-tiny (trained weights), a tiny random InternVL (Qwen2) in the
transformers-native layout and a tiny random MobileVLM V2 (LDPv2 on a 3-layer CLIP, feature layer -2). For each,
fp32: image embeddings and every step's logits within 1e-4 (relative) of PyTorch's and 32 greedy tokens identical;
the vision graph at several tile counts (its tile axis is dynamic). int8: the graphs are quantised and the change is
measured. Then the commands (`adapt export -f onnx`, `adapt chat/eval --runtime onnx`) and the refusals: an edited
tiling, another tokenizer, an operator the exporter cannot translate (named with its module).

Each export takes 10-40 s on two shared cores (torch.export traces with symbolic shapes), so the exports are made
once per module and the tests that need one are marked slow.
"""

from __future__ import annotations

import json
import shutil
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

from deploy.hf import ExportError, export  # noqa: E402
from deploy.onnx.export import DECODER, EMBED, GENAI_CONFIG, PREPROCESSOR, VISION  # noqa: E402
from deploy.onnx.graphs import OnnxExportError, export_graph  # noqa: E402
from deploy.onnx.runtime import OnnxExport, OnnxRuntimeError, OnnxVLM  # noqa: E402
from model.resources import assets_dir  # noqa: E402

from .test_checkpoints import write_mobilevlm_v2  # noqa: E402
from .test_gguf import sharpen_attention  # noqa: E402

MODELS = ("pocket-tiny", "internvl", "mobilevlm")
QUESTION = "What shapes are in the picture?"
N_TOKENS = 32


def load_models(native_dir: Path, tokenizer, folder: Path) -> dict:
    """pocket-tiny, the tiny InternVL and a tiny MobileVLM V2 written into `folder`: name -> (vlm, processor)."""
    mobilevlm = write_mobilevlm_v2(folder / "src", tokenizer, tie=False)
    made = {"pocket-tiny": model.load("pocket-tiny"), "internvl": model.load(native_dir),
            "mobilevlm": model.load(mobilevlm.directory)}
    for name in ("internvl", "mobilevlm"):
        sharpen_attention(made[name][0])  # position-sensitive attention: a cache or position slip changes tokens
    return made


@pytest.fixture(scope="module")
def models(native_dir, tiny_tokenizer, tmp_path_factory) -> dict:
    return load_models(native_dir, tiny_tokenizer, tmp_path_factory.mktemp("onnx-mobilevlm"))


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """exports(name, quantize) -> the export folder (written once per module)."""
    made: dict[tuple[str, str | None], Path] = {}
    root = tmp_path_factory.mktemp("onnx")

    def get(name: str, quantize: str | None = None) -> Path:
        if (name, quantize) not in made:
            vlm, processor = models[name]
            made[name, quantize] = export(vlm, processor, "onnx", root / f"{name}-{quantize or 'fp32'}",
                                          quantize=quantize)
        return made[name, quantize]

    return get


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def torch_greedy(vlm, encoded, n: int) -> tuple[list[int], list[np.ndarray]]:
    """n argmax tokens (no stopping) and each step's last logits, recomputing the whole sequence each step."""
    inputs = encoded.to_model_inputs()
    tokens, logits = [], []
    with torch.no_grad():
        embeds, _ = vlm.embed(inputs["input_ids"], inputs.get("pixel_values"))
        for _ in range(n):
            last = vlm.language_model(inputs_embeds=embeds).logits[0, -1]
            logits.append(last.numpy())
            tokens.append(int(last.argmax()))
            embeds = torch.cat([embeds, vlm.get_input_embeddings()(torch.tensor([[tokens[-1]]]))], dim=1)
    return tokens, logits


def onnx_greedy(runtime: OnnxVLM, encoded, n: int) -> tuple[list[int], list[np.ndarray]]:
    seen: list[np.ndarray] = []
    pixels = None if encoded.pixel_values is None else encoded.pixel_values.numpy()
    tokens, _ = runtime.generate(encoded.input_ids.tolist(), pixels, n, stop_ids=(), on_logits=seen.append)
    return tokens, seen[:n]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_embeddings_logits_and_greedy_tokens_match_pytorch(name, models, exports, example_image):
    vlm, processor = models[name]
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    with OnnxVLM(exports(name)) as runtime:
        got_features = runtime.encode_images(encoded.pixel_values.numpy())
        got_tokens, got_logits = onnx_greedy(runtime, encoded, N_TOKENS)
    with torch.no_grad():
        features = vlm.get_image_features(encoded.pixel_values).numpy()
    assert got_features.shape == features.shape
    assert relative_error(got_features, features) < 1e-4
    tokens, logits = torch_greedy(vlm, encoded, N_TOKENS)
    assert got_tokens == tokens
    assert max(relative_error(a, b) for a, b in zip(got_logits, logits)) < 1e-4


@pytest.mark.slow
def test_tile_count_is_dynamic(models, exports):
    """One vision graph for 1 to 13 tiles (InternVL2's 12 + thumbnail); rows stay with their tile."""
    vlm, processor = models["pocket-tiny"]
    size = processor.tiling.tile_size
    with OnnxVLM(exports("pocket-tiny")) as runtime:
        for n in (1, 2, 7, 13):
            pixels = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
            with torch.no_grad():
                expected = vlm.get_image_features(pixels).numpy()
            got = runtime.encode_images(pixels.numpy())
            assert got.shape == expected.shape
            assert relative_error(got, expected) < 1e-4, n


@pytest.mark.slow
def test_vision_graph_for_a_fixed_tile_count(models, tmp_path):
    """What a TensorRT profile wants: the tile count fixed in the graph (`export_vision(tiles=N)`)."""
    from deploy.onnx.graphs import export_vision
    from deploy.onnx.runtime import session

    vlm, processor = models["internvl"]
    path = export_vision(vlm, tmp_path / "vision-3.onnx", tiles=3)
    dims = [d.dim_value for d in onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 3, 56, 56]
    pixels = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = vlm.get_image_features(pixels).numpy()
    assert relative_error(session(path).run(None, {"pixel_values": pixels.numpy()})[0], expected) < 1e-4


@pytest.mark.slow
def test_graphs_are_checker_clean_and_described_by_genai_config(exports):
    folder = exports("internvl")
    genai = json.loads((folder / GENAI_CONFIG).read_text())
    described = genai["model"]
    for graph, section in ((VISION, "vision"), (EMBED, "embedding"), (DECODER, "decoder")):
        onnx.checker.check_model(str(folder / graph), full_check=True)
        proto = onnx.load(str(folder / graph), load_external_data=False)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        inputs = {i.name for i in proto.graph.input}
        assert described[section]["filename"] == graph
        names = described[section]["inputs"]
        for key, value in names.items():
            if key.endswith("_names"):
                assert all(value % i in inputs for i in range(described["decoder"]["num_hidden_layers"]))
            else:
                assert value in inputs
    vision = onnx.load(str(folder / VISION), load_external_data=False).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in vision.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 56, 56]  # tiles dynamic, the tile fixed
    pre = json.loads((folder / PREPROCESSOR).read_text())
    assert pre["tiling"]["tile_size"] == 56 and pre["tiling"]["max_tiles"] == 6
    assert {"tokenizer.json", "chat_template.json"} <= {p.name for p in folder.iterdir()}


@pytest.mark.slow
def test_int8_quantises_the_matmuls_and_stays_close(models, exports, example_image):
    vlm, processor = models["pocket-tiny"]
    folder = exports("pocket-tiny", "int8")
    for graph in (VISION, DECODER):
        ops = {n.op_type for n in onnx.load(str(folder / graph), load_external_data=False).graph.node}
        assert "MatMulInteger" in ops, graph
    fp32_size = sum(p.stat().st_size for p in exports("pocket-tiny").glob("decoder.onnx*"))
    int8_size = sum(p.stat().st_size for p in folder.glob("decoder.onnx*"))
    assert int8_size < 0.5 * fp32_size
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    with OnnxVLM(folder) as runtime:
        features = runtime.encode_images(encoded.pixel_values.numpy())
        _, got_logits = onnx_greedy(runtime, encoded, 4)
    with torch.no_grad():
        expected = vlm.get_image_features(encoded.pixel_values).numpy()
    _, logits = torch_greedy(vlm, encoded, 4)
    assert 1e-4 < relative_error(features, expected) < 0.1  # changed (it is quantised), and not by much
    assert relative_error(got_logits[0], logits[0]) < 0.1


@pytest.mark.slow
def test_adapt_export_and_chat_onnx_give_the_pytorch_answer(tmp_path, capsys):
    from adapt.cli import main
    from model.resources import assets_dir
    from tests.test_cli import shown_prompt

    out = tmp_path / "pocket-tiny-onnx"
    assert main(["export", "-f", "onnx", "--model", "pocket-tiny", "--out", str(out)]) == 0
    assert {VISION, EMBED, DECODER, GENAI_CONFIG, PREPROCESSOR} <= {p.name for p in out.iterdir()}
    image = str(assets_dir() / "example.png")
    capsys.readouterr()
    assert main(["chat", "--image", image, "--show-prompt"]) == 0
    torch_answer = capsys.readouterr()
    assert main(["chat", "--runtime", "onnx", "--model", str(out), "--image", image, "--show-prompt"]) == 0
    onnx_answer = capsys.readouterr()
    assert onnx_answer.out.strip() and onnx_answer.out.strip() == torch_answer.out.strip()
    assert "in ONNX Runtime" in onnx_answer.err
    assert "<IMG_CONTEXT>×" in shown_prompt(onnx_answer.err)
    assert shown_prompt(onnx_answer.err) == shown_prompt(torch_answer.err)


@pytest.mark.slow
def test_eval_through_onnx_predicts_as_pytorch(models, exports, tmp_path):
    """`adapt eval --runtime onnx`: `predict` with onnxruntime in place of the PyTorch model (same batches, left
    padding, token ids and tiles) gives PyTorch's answers: multi-tile, capped tiles, two images, text only."""
    from deploy.onnx.eval import OnnxEvalModel
    from tests.runtime_eval import assert_predicts_as_pytorch

    vlm, processor = models["pocket-tiny"]
    assert_predicts_as_pytorch(OnnxEvalModel(exports("pocket-tiny"), processor), vlm, processor, tmp_path)


def copy_folder(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def copy_with_image_seq_length_edited(export: Path, dest: Path) -> tuple[Path, int]:
    """A copy of `export` whose preprocessor_config.json claims one image token per tile more than exported, and the
    exported count."""
    folder = copy_folder(export, dest)
    pre = json.loads((folder / PREPROCESSOR).read_text())
    (folder / PREPROCESSOR).write_text(json.dumps({**pre, "image_seq_length": pre["image_seq_length"] + 1}))
    return folder, pre["image_seq_length"]


def copy_with_image_token_as(export: Path, dest: Path, key: str, other: str) -> tuple[Path, dict]:
    """A copy of `export` whose preprocessor_config.json gives image token `key` the token of `other` (another token
    the tokenizer has), and the config as exported."""
    folder = copy_folder(export, dest)
    pre = json.loads((folder / PREPROCESSOR).read_text())
    (folder / PREPROCESSOR).write_text(json.dumps({**pre, key: pre[other]}))
    return folder, pre


@pytest.mark.slow
def test_tiling_edited_after_export_is_refused(exports, tmp_path):
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "edited")
    OnnxVLM(folder).close()  # as exported: loads
    pre = json.loads((folder / PREPROCESSOR).read_text())
    pre["tiling"]["max_tiles"] = 12
    pre["tiling"]["mean"] = [0.5, 0.5, 0.5]
    (folder / PREPROCESSOR).write_text(json.dumps(pre))
    with pytest.raises(OnnxRuntimeError, match=r"preprocessor_config.json: tiling differs .*max_tiles 6 -> 12.*mean"):
        OnnxVLM(folder)


def test_transformers_image_processor_cuts_the_same_tiles(exports, tmp_path):
    """preprocessor_config.json is what the hf export writes (resample 3, PIL's bicubic, and image_processor_type):
    transformers' AutoImageProcessor loads it and cuts pocket-adapt's tiles exactly ("bicubic" was resampled
    otherwise, up to 0.445 apart, and AutoImageProcessor refused the file). An export written with the former
    "bicubic" still opens."""
    from transformers import AutoImageProcessor

    folder = exports("pocket-tiny")
    with Image.open(assets_dir() / "example.png") as image:
        image = image.convert("RGB")
    ours = OnnxExport.open(folder).processor([{"role": "user", "content": "x"}], images=[image]).pixel_values.numpy()
    theirs = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="np")["pixel_values"]
    assert theirs.shape == ours.shape and ours.shape[0] > 1
    assert np.abs(theirs - ours).max() == 0
    former = copy_folder(folder, tmp_path / "former")
    pre = json.loads((former / PREPROCESSOR).read_text())
    (former / PREPROCESSOR).write_text(json.dumps({**pre, "resample": "bicubic"}))
    OnnxExport.open(former)


@pytest.mark.parametrize("block", ["missing", "broken"])
def test_chat_without_onnxruntime_says_which_extra(exports, tmp_path, block):
    """adapt chat --runtime onnx without a usable onnxruntime: one line naming the package and the extra, for a
    missing package and for one whose import fails (a broken install raises a plain ImportError; it ended in a
    26-line traceback)."""
    import subprocess
    import sys

    fake = tmp_path / "fake" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libonnxruntime.so: cannot open shared object file')\n")
    setup = "sys.modules['onnxruntime'] = None" if block == "missing" else f"sys.path.insert(0, {str(fake.parent)!r})"
    code = (f"import sys; {setup}\nfrom adapt.cli import main\nsys.exit(main(['chat', '--runtime', 'onnx', "
            f"'--model', {str(exports('pocket-tiny'))!r}, '--example-image', '--max-new-tokens', '2']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    err = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(err) == 1, result.stderr
    assert "onnxruntime package" in err[0] and "pip install 'pocket-adapt[deploy]'" in err[0]


def test_an_edited_mirror_key_is_refused(exports, tmp_path):
    """preprocessor_config.json's image-processor keys (max_patches, image_mean, ...) only mirror 'tiling'; an
    edit to them used to be ignored without a word."""
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "edited")
    pre = json.loads((folder / PREPROCESSOR).read_text())
    pre["max_patches"] = 12
    (folder / PREPROCESSOR).write_text(json.dumps(pre))
    with pytest.raises(OnnxRuntimeError, match=r"preprocessor_config.json: max_patches 12 \(tiling says 6\)"):
        OnnxVLM(folder)


def test_an_edited_image_seq_length_is_refused_at_load(exports, tmp_path):
    """image_seq_length (image tokens per tile) edited after export: refused when the folder is opened, naming the
    file and the vision graph's count, not on the first image with a message naming neither."""
    folder, exported = copy_with_image_seq_length_edited(exports("pocket-tiny"), tmp_path / "edited")
    with pytest.raises(OnnxRuntimeError, match=rf"preprocessor_config.json: 'image_seq_length' {exported + 1}, but "
                                               rf"vision.onnx makes {exported} image features per tile"):
        OnnxVLM(folder)


@pytest.mark.slow
def test_an_image_token_the_tokenizer_lacks_is_refused_not_blamed_on_the_tokenizer(exports, tmp_path):
    """preprocessor_config.json's image token edited to a string the tokenizer lacks was added to the tokenizer as a
    new token, and the load then said the tokenizer files were not the exported ones."""
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "edited")
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["image_start_token"] = "<image_begin>"
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(OnnxRuntimeError, match=r"preprocessor_config.json: 'image_start_token' '<image_begin>' is "
                                               r"not a token of the exported tokenizer"):
        OnnxVLM(folder)


def test_another_tokenizer_is_refused(exports, tmp_path):
    from .test_gguf import spm_tokenizer

    folder = copy_folder(exports("pocket-tiny"), tmp_path / "swapped")
    for f in folder.glob("tokenizer*"):
        f.unlink()
    spm_tokenizer().save_pretrained(str(folder))
    with pytest.raises(OnnxRuntimeError, match=r"not the tokenizer embed.onnx was exported with \(\d+ tokens"):
        OnnxVLM(folder)
    # same size, two ids swapped: still refused (the token -> id map)
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "permuted")
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = "red", "blue"
    assert a in vocab and b in vocab
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(OnnxRuntimeError, match="token -> id map differs"):
        OnnxVLM(folder)
    # same vocabulary, half the merges: words split differently (the probe sentence alone did not notice)
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "merges")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["merges"] = spec["model"]["merges"][: len(spec["model"]["merges"]) // 2]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(OnnxRuntimeError, match="its merges or normalisation rules differ"):
        OnnxVLM(folder)


@pytest.mark.parametrize("cut", ["vision.onnx", "decoder.onnx.data"])
def test_a_truncated_graph_or_weights_file_is_one_line_naming_it(cut, exports, tmp_path, capsys):
    """A graph or its external weights cut short: `adapt chat --runtime onnx` names the file instead of
    protobuf's DecodeError / onnxruntime's Fail traceback."""
    from adapt.cli import main

    folder = copy_folder(exports("pocket-tiny"), tmp_path / "cut")
    target = folder / cut
    assert target.is_file(), sorted(p.name for p in folder.iterdir())
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    (folder / "SHA256SUMS").unlink()  # a copy that left the checksums behind (with them: the test below)
    rc = main(["chat", "--runtime", "onnx", "--model", str(folder), "--example-image"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("adapt chat: error:") and "Traceback" not in err
    assert str(target.with_suffix("") if cut.endswith(".data") else target) in err and "truncated or damaged" in err


@pytest.mark.parametrize("damage", ["vision.onnx", "decoder.onnx.data", "embed.onnx"])
def test_a_graph_or_weights_file_damaged_in_place_is_refused(damage, exports, tmp_path, capsys):
    """Bytes flipped inside a graph or its external weights, size intact: onnxruntime would run it with wrong
    numbers; the export's SHA256SUMS catches it, naming the file."""
    from tests.test_export_checksums import assert_chat_refuses_damaged

    folder = copy_folder(exports("pocket-tiny"), tmp_path / "flipped")
    assert_chat_refuses_damaged(capsys, "onnx", folder, folder / damage)


def test_a_prompt_longer_than_the_context_is_refused(exports):
    vlm = OnnxVLM(exports("pocket-tiny"))
    try:
        with pytest.raises(OnnxRuntimeError, match=r"the prompt takes \d+ positions, more than the model's context"):
            vlm.chat([{"role": "user", "content": "red blue square circle " * 1500}])
    finally:
        vlm.close()


def test_an_empty_prompt_is_refused(exports):
    """No token ids: refused naming the cause, not an IndexError from the decoder's empty output."""
    vlm = OnnxVLM(exports("pocket-tiny"))
    try:
        with pytest.raises(OnnxRuntimeError, match=r"the prompt is empty \(no token ids\)"):
            vlm.generate([], None, 4)
    finally:
        vlm.close()


def test_an_answer_the_context_ends_is_marked(exports):
    """An answer that fills the decoder's last position stops there; Answer.context_full says so (adapt chat notes
    it), as for llama.cpp; one that ends by its stop token or --max-new-tokens is not marked."""
    vlm = OnnxVLM(exports("pocket-tiny"))
    try:
        conversation = [{"role": "user", "content": "red blue square circle"}]
        free = vlm.chat(conversation, max_new_tokens=4, cut_repeats=False)
        assert len(free.tokens) == 4 and not free.context_full
        prompt = free.timings["prompt_tokens"]
        vlm.max_positions = prompt + 2
        full = vlm.chat(conversation, max_new_tokens=50, cut_repeats=False)
        assert full.tokens == free.tokens[:3] and full.context_full
    finally:
        vlm.close()


class _Histogram(torch.nn.Module):
    def forward(self, x):
        return x + torch.histc(x, bins=4).sum()  # aten.histc has no ONNX translation


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.head = torch.nn.Sequential(torch.nn.ReLU(), _Histogram())

    def forward(self, x):
        return self.head(self.proj(x))


def test_unsupported_operator_names_its_module(tmp_path):
    with pytest.raises(OnnxExportError, match=r"net.onnx: cannot export operator aten.histc called by head.1 \(_Histogram\)"):
        export_graph(_Net(), (torch.randn(2, 4),), tmp_path / "net.onnx", ["x"], ["y"])
    assert not (tmp_path / "net.onnx").exists()


def test_export_graph_restores_the_callers_train_mode(tmp_path):
    """The graph is exported in eval mode (no dropout in it), and each submodule's own mode comes back afterwards,
    after a failed export too: a model being trained stayed in eval mode."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 4))
    net[2].eval()  # a frozen part kept in eval mode
    export_graph(net, (torch.randn(2, 4),), tmp_path / "seq.onnx", ["x"], ["y"])
    assert [m.training for m in net.modules()] == [True, True, True, False]
    import onnx

    assert "Dropout" not in {n.op_type for n in onnx.load(str(tmp_path / "seq.onnx")).graph.node}
    failing = _Net()
    with pytest.raises(OnnxExportError):
        export_graph(failing, (torch.randn(2, 4),), tmp_path / "net.onnx", ["x"], ["y"])
    assert all(m.training for m in failing.modules())


def test_unknown_quantisation_and_misplaced_flags_are_refused(tmp_path, capsys):
    from adapt.cli import main

    vlm, processor = model.load("pocket-tiny")
    with pytest.raises(Exception, match="unknown ONNX quantisation 'int4'"):
        export(vlm, processor, "onnx", tmp_path / "x", quantize="int4")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ExportError, match="takes no options"):
        export(vlm, processor, "pocket", tmp_path / "y", quantize="int8")
    assert main(["export", "-f", "gguf", "--out", str(tmp_path / "z"), "--quantize", "int8"]) == 1
    assert "--quantize applies to --format onnx or executorch only" in capsys.readouterr().err
    assert main(["chat", "--runtime", "onnx", "--model", str(tmp_path), "--preprocess", "llamacpp"]) == 1
    assert "--preprocess llamacpp applies to --runtime llamacpp" in capsys.readouterr().err


def test_not_an_export_is_named(tmp_path):
    with pytest.raises(OnnxRuntimeError, match="not an ONNX export, missing vision.onnx"):
        OnnxVLM(tmp_path)


@pytest.mark.parametrize(("missing", "quantize"), [("onnxscript", []), ("onnx", []), ("onnxruntime", ["--quantize", "int8"])])
def test_a_missing_exporter_package_is_named_with_its_extra(missing, quantize, tmp_path, capsys, monkeypatch):
    """Without onnxscript the export said 'vision.onnx: the ONNX exporter failed (No module named 'onnxscript')', as
    if the model could not be exported; it names the package and the extra to install."""
    import sys

    from adapt.cli import main

    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    assert main(["export", "-m", "pocket-tiny", "-f", "onnx", *quantize, "--no-progress", "-o",
                 str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err == (
        f"adapt export: error: this needs the {missing} package, which is not installed: pip install "
        "'pocket-adapt[deploy]' (the deploy extra; a checkout's `make setup` installs every extra)\n")
    assert not (tmp_path / "x").exists()


def test_the_bar_shows_stages_without_an_eta(monkeypatch, capsys, tmp_path):
    """The graphs cost unlike (the decoder most), so the bar names the graph and the time so far, no ETA."""
    import deploy.onnx.export as ox

    for name in ("export_vision", "export_embed", "export_decoder"):
        monkeypatch.setattr(ox, name, lambda vlm, path, metadata: None)
    vlm, processor = model.load("pocket-tiny-scratch")
    ox.write_onnx(vlm, processor, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "ONNX export: 3/3 graphs" in err and "decoder.onnx" in err and err.endswith("\n"), err
    assert "<" not in err and "it/s" not in err and "%" not in err, err


def test_int8_quantisation_keeps_onnxruntimes_preprocessing_note_off_stderr(tmp_path, capsys):
    """onnxruntime logs "Please consider to run pre-processing before quantization" on its root logger; it was
    printed on the ONNX bar's line, once per graph."""
    import logging

    from onnx import TensorProto, helper, numpy_helper

    from deploy.onnx.export import quantize_int8

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    said: list[str] = []
    root = logging.getLogger()
    root.addHandler(handler := Said())
    try:
        handlers = list(root.handlers)
        quantize_int8(path)
        assert root.handlers == handlers and path.is_file()
    finally:
        root.removeHandler(handler)
    assert not [m for m in said if "pre-processing" in m] and "pre-processing" not in capsys.readouterr().err, said


class _NanLogits:
    """An onnxruntime decoder session whose logits come out NaN (a float16 export overflowing)."""

    def __init__(self, session):
        self.session = session

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        out = self.session.run(names, feeds)
        return [np.full_like(out[0], np.nan), *out[1:]]


def test_nan_logits_are_caught_as_pytorchs_non_finite_scores_error(models, exports):
    """The generation loop (chat) and `adapt eval`'s wrapper re-raised the runtime's NaN check as OnnxRuntimeError:
    `except NonFiniteScoresError`, which catches PyTorch's, let it through. Both now keep the type, and their
    messages still name the step and the sample."""
    from deploy.onnx.eval import OnnxEvalModel
    from model.errors import NonFiniteScoresError

    vlm = OnnxVLM(exports("pocket-tiny"))
    try:
        vlm.decoder = _NanLogits(vlm.decoder)
        with pytest.raises(NonFiniteScoresError, match=r"^the prompt pass: the model produced unusable logits"):
            vlm.chat([{"role": "user", "content": "red blue"}], max_new_tokens=2)
    finally:
        vlm.close()
    _, processor = models["pocket-tiny"]
    evaluated = OnnxEvalModel(exports("pocket-tiny"), processor)
    try:
        evaluated.runtime.decoder = _NanLogits(evaluated.runtime.decoder)
        ids = processor([{"role": "user", "content": "red blue"}]).input_ids[None]
        with pytest.raises(NonFiniteScoresError, match=r"^ONNX Runtime, sample a:1: the prompt pass: .*unusable"):
            evaluated.generate(ids, max_new_tokens=2, samples=["a:1"])
    finally:
        evaluated.close()


def test_an_image_token_edited_to_another_token_is_refused_at_load(exports, tmp_path):
    """preprocessor_config.json's image start token edited to another token of the tokenizer: the prompt changed
    without a word. The export records the image token ids beside the tokenizer's fingerprint; a differing one is
    refused, naming the file, the key and both ids."""
    folder, pre = copy_with_image_token_as(exports("pocket-tiny"), tmp_path / "edited", "image_start_token",
                                           "image_end_token")
    with pytest.raises(OnnxRuntimeError, match=rf"{PREPROCESSOR}: image_start_token '{pre['image_end_token']}' is id "
                                               r"\d+, embed.onnx was exported with id \d+"):
        OnnxVLM(folder)


@pytest.mark.parametrize("tiles", [0, -1, 2.0, True])
def test_a_fixed_tile_count_that_is_not_a_whole_number_above_zero_is_refused(tiles, tmp_path):
    # tiles=0 wrote a graph fixed at 2 tiles (the example's count), silently
    from deploy.onnx.graphs import export_vision

    with pytest.raises(OnnxExportError, match=r"vision\.onnx: tiles must be None .* got "):
        export_vision(object(), tmp_path / "vision.onnx", tiles=tiles)
    assert not (tmp_path / "vision.onnx").exists()
