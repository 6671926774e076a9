"""ExecuTorch export (deploy/executorch) run in ExecuTorch's Python runtime against PyTorch.

Three models, same image and prompt: pocket-tiny (trained weights), a tiny random InternVL (Qwen2) in the
transformers-native layout and a tiny random MobileVLM V2 (LDPv2 on a CLIP tower read at layer -2, one tile).
fp32: image embeddings and every step's logits within 1e-4 (relative) of PyTorch's and 32 greedy tokens identical,
the prompt prefilled in chunks; the vision encoder at 1 to 13 tiles (more than one call takes). A fourth, the tiny
InternVL with sliding-window attention, for the decoder that keeps transformers' static cache. int8 (torchao,
XNNPACK): the change is measured. Then the commands (`adapt export -f executorch`, `adapt chat/eval --runtime
executorch`) and the refusals: an edited tiling, another tokenizer, a prompt past the KV cache.

XNNPACK lowering takes about a minute per model on two shared cores, so the exports are made once per module and
the tests that need one are marked slow.
"""

from __future__ import annotations

import gc
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import model

from .deps import require

require("executorch.runtime", "the deploy extra: ExecuTorch export and runtime")
require("torchao", "the deploy extra: ExecuTorch int8 quantisation")

from deploy.executorch import PTE, ExecuTorchError  # noqa: E402
from deploy.executorch.runtime import ExecuTorchVLM  # noqa: E402
from deploy.hf import export  # noqa: E402
from deploy.onnx.export import PREPROCESSOR  # noqa: E402

from .test_gguf import sharpen_attention  # noqa: E402
from .test_onnx import (  # noqa: E402
    copy_folder,
    copy_with_image_seq_length_edited,
    copy_with_image_token_as,
    load_models,
    relative_error,
    torch_greedy,
)

QUESTION = "What shapes are in the picture?"
N_TOKENS = 32
MAX_SEQ_LEN = 512
PREFILL = 64  # the random models' programs take up to 64 positions per call, below the cache (a default export's 512
# is below its 4096): the decoder's methods and token_embedding then differ in their largest shapes


WINDOW = 16  # the windowed InternVL's attention span, well below its prompt


@pytest.fixture(scope="module")
def models(native_dir, tiny_tokenizer, tmp_path_factory) -> dict:
    made = load_models(native_dir, tiny_tokenizer, tmp_path_factory.mktemp("executorch-mobilevlm"))
    # the tiny InternVL again, its Qwen2 attending to the last WINDOW positions only (sliding-window attention)
    windowed = tmp_path_factory.mktemp("executorch-window") / "internvl-window"
    shutil.copytree(native_dir, windowed)
    config = json.loads((windowed / "config.json").read_text())
    config["text_config"].update(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=0)
    config["text_config"].pop("layer_types", None)
    (windowed / "config.json").write_text(json.dumps(config))
    made["internvl-window"] = model.load(windowed)
    sharpen_attention(made["internvl-window"][0])
    return made


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """exports(name, quantize) -> the export folder (written once per module; pocket-tiny through `adapt export`)."""
    from adapt.cli import main

    made: dict[tuple[str, str | None], Path] = {}
    root = tmp_path_factory.mktemp("executorch")

    def get(name: str, quantize: str | None = None) -> Path:
        if (name, quantize) not in made:
            out = root / f"{name}-{quantize or 'fp32'}"
            if name == "pocket-tiny":
                args = ["export", "-f", "executorch", "--model", name, "--out", str(out),
                        "--max-seq-len", str(MAX_SEQ_LEN)]
                gc.collect()  # an earlier test's garbage (an unclosed event loop) warns when collected, not here
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    assert main([*args, *(["--quantize", quantize] if quantize else [])]) == 0
                get.warnings += [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in caught]
            else:
                vlm, processor = models[name]
                export(vlm, processor, "executorch", out, quantize=quantize, max_seq_len=MAX_SEQ_LEN,
                       max_prefill_len=PREFILL)
            made[name, quantize] = out
        return made[name, quantize]

    get.warnings = []  # what `adapt export` let through to Python's warnings, per pocket-tiny export
    return get


def executorch_greedy(runtime: ExecuTorchVLM, encoded, n: int) -> tuple[list[int], list]:
    seen: list = []
    tokens, _ = runtime.generate(encoded.input_ids.tolist(), encoded.pixel_values, n, stop_ids=(),
                                 on_logits=lambda logits: seen.append(logits.copy()))
    return tokens, seen[:n]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pocket-tiny", "internvl", "mobilevlm"])
def test_embeddings_logits_and_greedy_tokens_match_pytorch(name, models, exports, example_image):
    vlm, processor = models[name]
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    with ExecuTorchVLM(exports(name)) as runtime:
        assert runtime.max_positions == MAX_SEQ_LEN
        got_features = runtime.encode_images(encoded.pixel_values)
        runtime.max_prefill_len = 48  # the prompt goes in several chunks (the programs take up to 512 or 64 per call)
        assert len(encoded.input_ids) > 2 * runtime.max_prefill_len
        got_tokens, got_logits = executorch_greedy(runtime, encoded, N_TOKENS)
    with torch.no_grad():
        features = vlm.get_image_features(encoded.pixel_values).numpy()
    assert got_features.shape == features.shape
    assert relative_error(got_features, features) < 1e-4
    tokens, logits = torch_greedy(vlm, encoded, N_TOKENS)
    assert got_tokens == tokens
    assert max(relative_error(a, b) for a, b in zip(got_logits, logits)) < 1e-4


@pytest.mark.slow
def test_token_embedding_between_decode_steps_leaves_the_kv_cache_alone(models, exports, example_image):
    """Prefill, token_embedding (generate runs it before every step), then one decode step: PyTorch's logits, in a
    program whose prefill bound (64) is below its cache (512). ExecuTorch's Python runtime gives a program's methods one
    set of memory arenas; the KV cache was planned in them and token_embedding's values overwrote it (logits off by
    up to 1.0, 2e-2 relative through generate); it now has an arena of its own."""
    vlm, processor = models["internvl"]
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    with ExecuTorchVLM(exports("internvl")) as runtime:
        assert (runtime.max_prefill_len, runtime.max_positions) == (PREFILL, MAX_SEQ_LEN)
        embeds = runtime.prompt_embeddings(encoded.input_ids.tolist(), encoded.pixel_values)
        assert embeds.shape[1] > 2 * PREFILL
        with torch.no_grad():
            expected = vlm.language_model(inputs_embeds=torch.from_numpy(embeds)).logits[0].numpy()
        for between in ([17], list(range(17, 17 + MAX_SEQ_LEN))):
            for n in (5, PREFILL - 1, PREFILL + 1, 2 * PREFILL + 3):
                runtime.prefill(embeds[:, :n])
                runtime.embed(between)
                got = runtime.decode(embeds[:, n : n + 1], n)
                assert relative_error(got, expected[n]) < 1e-5, (n, len(between))


def test_the_decoder_attends_through_executorchs_kv_cache_kernels_unless_the_attention_is_windowed(models):
    """Full attention: llama::update_cache writes the new positions in place and llama::custom_sdpa reads only the
    filled ones, so a decode step does not grow with the cache length; a window narrower than the cache keeps
    transformers' static cache and masks (custom_sdpa has no window)."""
    from deploy.executorch.export import KVCacheDecoder, StaticCacheDecoder, kv_cache_decoder

    for name in ("pocket-tiny", "internvl", "mobilevlm"):
        assert type(kv_cache_decoder(models[name][0].language_model, MAX_SEQ_LEN)) is KVCacheDecoder, name
    windowed = models["internvl-window"][0].language_model
    assert type(kv_cache_decoder(windowed, MAX_SEQ_LEN)) is StaticCacheDecoder
    assert type(kv_cache_decoder(windowed, WINDOW)) is KVCacheDecoder  # the window covers the whole cache


@pytest.mark.slow
def test_the_program_carries_the_kv_cache_kernels(exports):
    program = (exports("pocket-tiny") / PTE).read_bytes()
    assert b"llama::custom_sdpa" in program and b"llama::update_cache" in program


@pytest.mark.slow
def test_sliding_window_attention_matches_pytorch(models, exports, example_image):
    """The windowed model (through the static-cache decoder) gives PyTorch's logits and tokens; the window matters
    for this prompt: the same weights without it answer otherwise."""
    vlm, processor = models["internvl-window"]
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    assert len(encoded.input_ids) > 4 * WINDOW
    with ExecuTorchVLM(exports("internvl-window")) as runtime:
        got_tokens, got_logits = executorch_greedy(runtime, encoded, N_TOKENS)
    tokens, logits = torch_greedy(vlm, encoded, N_TOKENS)
    assert got_tokens == tokens
    assert max(relative_error(a, b) for a, b in zip(got_logits, logits)) < 1e-4
    unwindowed, _ = torch_greedy(models["internvl"][0], encoded, N_TOKENS)
    assert unwindowed != tokens


@pytest.mark.slow
def test_tile_counts_beyond_one_call(models, exports):
    """1 to 13 tiles (InternVL2's 12 + thumbnail): the program takes max_tiles + thumbnail (7) per call, the runtime
    splits larger batches; rows stay with their tile."""
    vlm, processor = models["pocket-tiny"]
    size = processor.tiling.tile_size
    with ExecuTorchVLM(exports("pocket-tiny")) as runtime:
        assert runtime.max_tiles == 7
        for n in (1, 7, 13):
            pixels = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
            got = runtime.encode_images(pixels)
            with torch.no_grad():
                expected = vlm.get_image_features(pixels).numpy()
            assert got.shape == expected.shape
            assert relative_error(got, expected) < 1e-4


@pytest.mark.slow
def test_int8_shrinks_the_program_and_stays_close(models, exports, example_image):
    vlm, processor = models["pocket-tiny"]
    folder = exports("pocket-tiny", "int8")
    assert (folder / PTE).stat().st_size < 0.6 * (exports("pocket-tiny") / PTE).stat().st_size
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example_image])
    with ExecuTorchVLM(folder) as runtime:
        assert runtime.export.program.load_method("get_quantize").execute([])[0] == "int8"
        features = runtime.encode_images(encoded.pixel_values)
        _, got_logits = executorch_greedy(runtime, encoded, 4)
    with torch.no_grad():
        expected = vlm.get_image_features(encoded.pixel_values).numpy()
    _, logits = torch_greedy(vlm, encoded, 4)
    assert 1e-4 < relative_error(features, expected) < 0.1  # changed (it is quantised), and not by much
    assert relative_error(got_logits[0], logits[0]) < 0.1


@pytest.mark.slow
def test_adapt_chat_executorch_gives_the_pytorch_answer(exports, capsys):
    from adapt.cli import main
    from model.resources import assets_dir
    from tests.test_cli import shown_prompt

    folder = exports("pocket-tiny")
    image = str(assets_dir() / "example.png")
    capsys.readouterr()
    assert main(["chat", "--image", image, "--show-prompt"]) == 0
    torch_answer = capsys.readouterr()
    assert main(["chat", "--runtime", "executorch", "--model", str(folder), "--image", image, "--show-prompt"]) == 0
    answer = capsys.readouterr()
    assert answer.out.strip() and answer.out.strip() == torch_answer.out.strip()
    assert "in ExecuTorch" in answer.err
    assert "<IMG_CONTEXT>×" in shown_prompt(answer.err)  # summarised, not hundreds of image tokens
    assert shown_prompt(answer.err) == shown_prompt(torch_answer.err)


@pytest.mark.slow
def test_eval_through_executorch_predicts_as_pytorch(models, exports, tmp_path):
    """`adapt eval --runtime executorch`: `predict` with ExecuTorch in place of the PyTorch model (same batches,
    left padding, token ids and tiles) gives PyTorch's answers: multi-tile, capped tiles, two images, text only."""
    from deploy.executorch.eval import ExecuTorchEvalModel
    from tests.runtime_eval import assert_predicts_as_pytorch

    vlm, processor = models["pocket-tiny"]
    assert_predicts_as_pytorch(ExecuTorchEvalModel(exports("pocket-tiny"), processor), vlm, processor, tmp_path)


@pytest.mark.slow
def test_kv_cache_bounds(models, exports):
    """A prompt longer than the static cache is refused naming --max-seq-len; generation that fills it just ends."""
    _, processor = models["pocket-tiny"]
    with ExecuTorchVLM(exports("pocket-tiny")) as runtime:
        with pytest.raises(ExecuTorchError, match=r"do not fit the exported KV cache of 512; ask with fewer tiles "
                                                  r"\(--max-tiles\) or a shorter question, or re-export with a "
                                                  r"larger --max-seq-len if the model's context allows one"):
            runtime.generate(list(range(10, 10 + MAX_SEQ_LEN + 1)), None, 4)
        ids = processor.tokenizer.encode("red green blue " * 200)[: MAX_SEQ_LEN - 5]  # text only, 507 positions
        tokens, _ = runtime.generate(ids, None, 64)
        assert len(tokens) == MAX_SEQ_LEN - len(ids) + 1  # the last one read the final cache position


def test_feeding_no_positions_is_refused_naming_the_program(tmp_path):
    """`_feed` with 0 positions ran no decoder call and failed on its None logits; now a clear refusal."""
    from types import SimpleNamespace

    runtime = ExecuTorchVLM.__new__(ExecuTorchVLM)
    runtime.export = SimpleNamespace(folder=tmp_path)
    runtime.max_prefill_len = 4
    runtime.decoder = SimpleNamespace(execute=lambda args: pytest.fail("the decoder was called with no positions"))
    with pytest.raises(ExecuTorchError, match=r"model.pte: text_decoder needs \(1, positions, hidden\) embeddings "
                                              r"of at least one position, got shape \(1, 0, 8\)"):
        runtime.prefill(torch.zeros(1, 0, 8).numpy())
    with pytest.raises(ExecuTorchError, match="the prompt is empty"):
        runtime.generate([], None, 4)


@pytest.mark.slow
def test_tiling_edited_after_export_is_refused(exports, tmp_path):
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "edited")
    ExecuTorchVLM(folder).close()  # as exported: loads
    pre = json.loads((folder / PREPROCESSOR).read_text())
    pre["tiling"]["max_tiles"] = 12
    pre["tiling"]["mean"] = [0.5, 0.5, 0.5]
    (folder / PREPROCESSOR).write_text(json.dumps(pre))
    with pytest.raises(ExecuTorchError, match=r"preprocessor_config.json: tiling differs .*max_tiles 6 -> 12.*mean"):
        ExecuTorchVLM(folder)


@pytest.mark.slow
def test_an_image_token_edited_to_another_token_is_refused_at_load(exports, tmp_path):
    """The image end token edited to another token of the tokenizer changed the prompt without a word; the program
    records the image token ids with the tokenizer's fingerprint, and a differing one is refused."""
    folder, _ = copy_with_image_token_as(exports("pocket-tiny"), tmp_path / "edited", "image_end_token",
                                         "image_start_token")
    with pytest.raises(ExecuTorchError, match=r"preprocessor_config.json: image_end_token '.+' is id \d+, model.pte "
                                              r"was exported with id \d+"):
        ExecuTorchVLM(folder)


@pytest.mark.slow
def test_an_edited_image_seq_length_is_refused_at_load(exports, tmp_path):
    """image_seq_length edited after export: refused on opening, naming the file and the program's count."""
    folder, exported = copy_with_image_seq_length_edited(exports("pocket-tiny"), tmp_path / "edited")
    with pytest.raises(ExecuTorchError, match=rf"preprocessor_config.json: 'image_seq_length' {exported + 1}, but "
                                              rf"model.pte was exported with {exported} image features per tile"):
        ExecuTorchVLM(folder)


@pytest.mark.slow
def test_a_program_damaged_in_place_is_refused(exports, tmp_path, capsys):
    """Bytes flipped inside model.pte, size intact: the export's SHA256SUMS catches it, naming the file."""
    from tests.test_export_checksums import assert_chat_refuses_damaged

    folder = tmp_path / "flipped"
    shutil.copytree(exports("pocket-tiny"), folder)
    assert_chat_refuses_damaged(capsys, "executorch", folder, folder / "model.pte")


@pytest.mark.slow
def test_another_tokenizer_is_refused(exports, tmp_path):
    from .test_gguf import spm_tokenizer

    folder = copy_folder(exports("pocket-tiny"), tmp_path / "swapped")
    for f in folder.glob("tokenizer*"):
        f.unlink()
    spm_tokenizer().save_pretrained(str(folder))
    with pytest.raises(ExecuTorchError, match=r"not the tokenizer model.pte was exported with \(\d+ tokens"):
        ExecuTorchVLM(folder)
    folder = copy_folder(exports("pocket-tiny"), tmp_path / "permuted")
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["red"], vocab["blue"] = vocab["blue"], vocab["red"]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ExecuTorchError, match="token -> id map differs"):
        ExecuTorchVLM(folder)


def test_adapt_chat_executorch_prints_no_cpu_probe_log(exports):
    """A fresh process's first method load starts XNNPACK's thread pool, whose ExecuTorch code logged five ARM
    probe lines to stderr on x86 ("Failed to open midr file ..."), as if something were broken; they are dropped."""
    import os
    import subprocess
    import sys

    from model.resources import assets_dir

    folder = exports("pocket-tiny")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "adapt", "chat", "--runtime", "executorch", "--model", str(folder),
                           "--image", str(assets_dir() / "example.png"), QUESTION], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0 and "in ExecuTorch" in done.stderr, done.stderr[-2000:]
    assert "cpuinfo" not in done.stderr and "midr" not in done.stderr, done.stderr


def test_the_export_keeps_the_tracings_warnings_off_stderr(exports):
    """torch.export's side-effect notes and torch / ExecuTorch deprecations printed some 36 warnings in Python's
    source-location form during `adapt export -f executorch`; none reach the user now."""
    exports("pocket-tiny")
    assert exports.warnings == []


def test_refusals_before_any_lowering(tmp_path, capsys):
    from adapt.cli import main

    vlm, processor = model.load("pocket-tiny")
    with pytest.raises(ExecuTorchError, match="unknown ExecuTorch quantisation 'int4'"):
        export(vlm, processor, "executorch", tmp_path / "x", quantize="int4")
    with pytest.raises(ExecuTorchError, match=r"max_seq_len 99999: must be \d+ .. the model's context \(4096\)"):
        export(vlm, processor, "executorch", tmp_path / "x", max_seq_len=99999)
    assert not (tmp_path / "x").exists()
    assert main(["export", "-f", "onnx", "--out", str(tmp_path / "z"), "--max-seq-len", "64"]) == 1
    assert "--max-seq-len applies to --format executorch only" in capsys.readouterr().err
    with pytest.raises(ExecuTorchError, match="not an ExecuTorch export, missing model.pte"):
        ExecuTorchVLM(tmp_path)


@pytest.mark.parametrize("missing", ["executorch", "executorch.runtime"])
def test_a_missing_executorch_says_the_command_that_installs_it(missing, monkeypatch):
    """It said 'install the deploy extra's executorch and torchao pins': torchao is in the executorch extra and
    executorch is installed without its dependencies. The message is the command."""
    import sys

    from deploy.executorch import require_executorch

    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(ExecuTorchError) as err:
        require_executorch()
    assert str(err.value) == (
        "ExecuTorch export and its runtime need the executorch package, which is not installed: pip install "
        "'pocket-adapt[executorch]' && pip install --no-deps 'executorch==1.5.1' (the executorch extra; a checkout's "
        "`make setup` installs every extra)")


def test_the_bar_shows_stages_without_an_eta_and_is_closed_on_an_error(monkeypatch, capsys):
    """The stages cost unlike (the lowering most), so the bar names the stage and the time so far, no ETA (3/4 at
    00:09<00:03 was followed by 63 s); a failed export ends the bar's line before its error is said."""
    import deploy.executorch.export as et

    def fail(module, args, dynamic_shapes, method):
        if method == et.EMBED_METHOD:
            raise ExecuTorchError(f"{method}: torch.export failed (test)")
        return None

    monkeypatch.setattr(et, "_capture", fail)
    vlm, processor = model.load("pocket-tiny-scratch")
    with pytest.raises(ExecuTorchError) as failed:
        et.write_executorch(vlm, processor, Path("unused"), progress=True)
    err = capsys.readouterr().err
    assert failed.value and err.endswith("\n") and "ExecuTorch export: 1/4 stages" in err, err
    assert "<" not in err and "it/s" not in err and "%" not in err, err


class _FakeProgram:
    """A loaded program that says it has the export's methods (no .pte needed)."""

    method_names = ("vision_encoder", "token_embedding", "text_decoder", "get_pocket_adapt_tiling",
                    "get_pocket_adapt_tokenizer", "get_max_seq_len", "get_max_prefill_len", "get_max_tiles")

    def load_method(self, name):
        from types import SimpleNamespace

        recorded = '{"size": 1, "vocab_sha256": "0", "probe_ids": [0]}' if name.endswith("tokenizer") else "{}"
        return SimpleNamespace(execute=lambda args: [recorded if name.startswith("get_pocket") else 8])


def test_a_refused_export_keeps_no_program_loaded(tmp_path, monkeypatch):
    """A check after loading (here the processor's files) refused the export, but its traceback kept the loaded
    program alive (a whole model's weights, for as long as the caller held the error); the error names the file."""
    import weakref

    from executorch.runtime import Runtime

    from deploy.executorch.runtime import ExecuTorchExport
    from deploy.onnx.export import CHAT_TEMPLATE

    for name in (PTE, PREPROCESSOR, CHAT_TEMPLATE):
        (tmp_path / name).write_text("{}")
    held = [_FakeProgram()]  # handed over on loading: from then on only the loader holds it
    ref = weakref.ref(held[0])
    runtime = type("R", (), {"load_program": lambda s, p: held.pop()})
    monkeypatch.setattr(Runtime, "get", staticmethod(lambda: runtime()))
    with pytest.raises(ExecuTorchError, match=PREPROCESSOR) as err:
        ExecuTorchExport.open(tmp_path)
    gc.collect()
    assert ref() is None, "the refused export's program is still alive in the error's traceback"
    assert err.value is not None


def test_a_runtime_that_fails_to_load_its_methods_keeps_no_program(monkeypatch):
    """`ExecuTorchVLM` set the opened export on itself before loading the methods: a failure there left the program
    alive on the half-made runtime that the error's traceback holds."""
    import weakref
    from types import SimpleNamespace

    from deploy.executorch.runtime import ExecuTorchExport

    def fail(name):
        raise ExecuTorchError(f"model.pte: cannot load {name}")

    class Program:  # its method holds no frame of its own, as ExecuTorch's compiled one does not
        load_method = staticmethod(fail)

    held = [Program()]
    ref = weakref.ref(held[0])
    monkeypatch.setattr(ExecuTorchExport, "open", classmethod(
        lambda cls, folder: SimpleNamespace(program=held.pop(), processor=None)))
    with pytest.raises(ExecuTorchError, match="cannot load vision_encoder") as err:
        ExecuTorchVLM("folder")
    gc.collect()
    assert ref() is None and err.value is not None


def test_closing_the_runtime_releases_the_program():
    """`close` dropped the three methods but kept the loaded program (the whole model) on `export` while the runtime
    object lived (an `adapt eval` sweep holds one per variant)."""
    import weakref

    from deploy.executorch.runtime import ExecuTorchExport

    program = _FakeProgram()
    ref = weakref.ref(program)
    runtime = ExecuTorchVLM.__new__(ExecuTorchVLM)
    runtime.export = ExecuTorchExport(Path("folder"), "processor", program, {})
    runtime.vision = runtime.embedding = runtime.decoder = object()
    del program
    with runtime:
        pass
    gc.collect()
    assert ref() is None and runtime.export.folder == Path("folder") and runtime.decoder is None
