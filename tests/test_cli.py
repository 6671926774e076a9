"""The `adapt` verbs as a user runs them (in-process, tiny model)."""

from __future__ import annotations

import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText

from adapt.cli import build_parser, main
from model.resources import assets_dir
from tests.export_fakes import fake_export_vlm, timings


def shown_prompt(err: str) -> str:
    """What `adapt chat --show-prompt` printed: stderr up to the run's summary line ``[model ...]``."""
    lines = err.splitlines()
    end = next(k for k, line in enumerate(lines) if line.startswith("["))
    return "\n".join(lines[:end])


def test_chat_on_the_example_image(capsys):
    assert main(["chat", "--example-image", "--max-new-tokens", "4", "--show-prompt", "Which shapes?"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s), 7 tile(s)" in err
    assert "<img><IMG_CONTEXT>×112</img>" in err  # 7 tiles x 16 tokens, summarised
    assert shown_prompt(err).endswith("\nWhich shapes?<|im_end|><|im_start|>assistant\n")


def test_chat_reports_a_missing_image_without_traceback(capsys, tmp_path):
    assert main(["chat", "--image", str(tmp_path / "missing.png")]) == 1
    err = capsys.readouterr().err
    assert "missing.png" in err and "Traceback" not in err


def test_chat_without_an_image_says_so(capsys):
    """It answered the default question ('What shapes are in the picture?') about no picture without a word."""
    assert main(["chat", "--max-new-tokens", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: no --image (nor --example-image): the model answers without a picture" in err
    assert "0 image(s)" in err
    assert main(["chat", "--example-image", "--max-new-tokens", "1"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--vision-adapter", "fresh"], "--vision-adapter fresh applies with --vision"),
    (["--device", "cuda:99"], "finds"),
])
def test_inspect_of_a_preset_checks_the_flags_chat_checks(capsys, argv, needle):
    """inspect --model PRESET (described from its config) accepted flags chat refuses."""
    assert main(["inspect", "--model", "pocket-tiny", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt inspect: error:") and needle in err


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["inspect", "--model", "no-such-model"]) == 1
    assert "presets: pocket-tiny" in capsys.readouterr().err


def test_tiles_plans_without_pixels(capsys):
    assert main(["tiles", "2688x896"]) == 0
    out = capsys.readouterr().out
    assert "grid 6x2" in out and "3328 image tokens" in out
    assert main(["tiles", "800x600", "--max-tiles", "6"]) == 0
    assert "grid 3x2 (cols x rows), 7 tiles" in capsys.readouterr().out


@pytest.mark.parametrize("argv,expected", [
    # pocket-tiny's processor: 112 px tiles, 2x2 + thumbnail (the grid's tie-break depends on the tile size);
    # InternVL2's 448 px tiles, which `tiles` always planned with, give 1x1
    (["--model", "pocket-tiny"], "300x300: grid 2x2 (cols x rows), 5 tiles incl. thumbnail, 80 image tokens (112 px"),
    (["--tile-size", "112", "--max-tiles", "6", "--tokens-per-tile", "16"], "grid 2x2 (cols x rows), 5 tiles"),
    (["--max-tiles", "6", "--tokens-per-tile", "16"], "grid 1x1 (cols x rows), 1 tile, 16 image tokens (448 px"),
    (["--model", "mobilevlm-v2-1.7b"], "grid 1x1 (cols x rows), 1 tile, 144 image tokens (336 px tiles, pad mode)"),
    (["--model", "pocket-tiny", "--max-tiles", "1"], "grid 1x1 (cols x rows), 1 tile, 16 image tokens (112 px"),
])
def test_tiles_plans_with_the_models_tiling(capsys, argv, expected):
    assert main(["tiles", "300x300", *argv]) == 0
    assert expected in capsys.readouterr().out


def test_tiles_reads_a_checkpoints_config_without_its_weights(tmp_path, capsys):
    from model.presets import preset_config
    from model.tiling import count_tiles

    config = preset_config("pocket-tiny")
    config.save_pretrained(str(tmp_path))  # config.json alone: no weights, no tokenizer
    assert main(["tiles", "640x480", "--model", str(tmp_path)]) == 0
    n = count_tiles(640, 480, config.tiling_config)
    assert f"{n} tiles incl. thumbnail, {n * 16} image tokens (112 px tiles)" in capsys.readouterr().out
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["tiles"].format_help().split())
    assert "default: the model's, else 12" in help_text and "else 256" in help_text and "else 448" in help_text


def test_tiles_says_when_max_tiles_lowers_the_models_min_tiles(tmp_path, capsys):
    """`adapt tiles --model M --max-tiles N` under M's min_tiles plans N-N tiles, as chat does, and says so once."""
    from model.presets import preset_config

    config = preset_config("pocket-tiny")
    config.tiling = {**config.tiling, "min_tiles": 4}
    config.save_pretrained(str(tmp_path))
    assert main(["tiles", "640x480", "--model", str(tmp_path), "--max-tiles", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("note: --max-tiles 2 is below the model's min_tiles 4: using 2-2 tiles") == 1
    assert "grid 2x1 (cols x rows), 3 tiles incl. thumbnail" in captured.out
    assert main(["tiles", "640x480", "--model", str(tmp_path), "--max-tiles", "4"]) == 0
    assert "min_tiles" not in capsys.readouterr().err  # a cap at min_tiles lowers nothing


def test_tiles_of_an_image_above_the_pixel_cap_says_it_is_refused(tmp_path, capsys):
    """A 20000x20000 file crashed with PIL's DecompressionBombError traceback; 8000x8000 planned 10 tiles without
    a word that chat refuses the image (64 M pixels > tiling.max_pixels)."""
    Image.new("1", (20000, 20000)).save(tmp_path / "h.png")
    assert main(["tiles", str(tmp_path / "h.png")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("20000x20000: grid") and "Traceback" not in err
    assert "note: 20000x20000 = 400,000,000 pixels is above the limit of 50,000,000 (tiling.max_pixels)" in err
    assert main(["tiles", "8000x8000"]) == 0
    out, err = capsys.readouterr()
    assert "10 tiles" in out and "refuse" in err
    assert main(["tiles", "7000x7000"]) == 0 and capsys.readouterr().err == ""


@pytest.mark.slow
def test_export_hf_then_transformers_loads_it(tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "--format", "hf", "--out", str(out)]) == 0
    _, info = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert main(["inspect", "--model", str(out)]) == 0
    assert "pixel_shuffle_mlp" in capsys.readouterr().out


def test_presets_listed(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("pocket-tiny", "internvl2-1b", "mini-internvl-2b", "mini-internvl-4b", "mobilevlm-v2-1.7b", "mobilevlm-v2-3b"):
        assert name in out


def test_llamacpp_preprocessing_outside_llamacpp_is_refused(capsys):
    """`--preprocess llamacpp` on the PyTorch runtime was accepted and ignored (ONNX refused it)."""
    assert main(["chat", "--example-image", "--preprocess", "llamacpp"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt chat: error:") and "--preprocess llamacpp applies to --runtime llamacpp" in err


def test_max_tiles_with_llamacpps_own_preprocessing_is_refused_before_loading(tmp_path, capsys):
    """llama.cpp's own preprocessing takes its tiles from the mmproj: --max-tiles was refused only once llama.cpp had
    loaded the model (a missing folder shows that nothing was loaded first)."""
    argv = ["chat", "--example-image", "--runtime", "llamacpp", "--preprocess", "llamacpp", "--max-tiles", "2"]
    assert main([*argv, "--model", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "--max-tiles applies to pocket preprocessing" in err and "nothing" not in err, err


@pytest.mark.parametrize("name", ["../../evil", "a/b", ".hidden", ""])
def test_an_export_name_that_is_not_a_file_stem_is_refused_up_front(name, tmp_path, capsys):
    assert main(["export", "-f", "gguf", "--name", name, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt export: error:") and "give a file name stem" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.parent.glob("evil*"))


def test_a_prompt_longer_than_the_context_is_refused(capsys):
    """It used to run on, past the positions the model was built for (pocket-tiny: 4096)."""
    question = "red blue square circle " * 1500
    assert main(["chat", question, "--example-image"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt chat: error: the prompt takes") and "more than the model's context of 4096" in err


@pytest.mark.parametrize("argv,needle", [
    (["chat", "--example-image", "--runtime", "onnx", "--model", "x", "--dtype", "float16"],
     "apply to the pytorch runtime; an export for ONNX Runtime"),
    (["chat", "--example-image", "--vision-adapter", "fresh"], "--vision-adapter fresh applies with --vision"),
])
def test_flags_that_do_not_apply_say_why(capsys, argv, needle):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt chat: error:") and needle in err and "GGUF" not in err


def test_an_empty_answer_from_an_export_runtime_is_said(monkeypatch, tmp_path, capsys):
    """An export whose weights were damaged in place answered with an empty line and status 0, nothing more."""
    import deploy.onnx.runtime as onnx_runtime
    from deploy.runtimes import Answer

    monkeypatch.setattr(onnx_runtime, "OnnxVLM", fake_export_vlm(Answer("", [], "", False, timings(0))))
    assert main(["chat", "--runtime", "onnx", "--model", str(tmp_path), "--example-image"]) == 0
    assert "[no answer: the model's first token ended it" in capsys.readouterr().err


def test_chat_reads_a_dicom_file_with_the_domain_named(tmp_path, capsys):
    """A DICOM file is not an ordinary image: chat names the domain that reads it, and --domain reads it as the
    demo does (its reader, its window option)."""
    from domains.medical.synthetic import generate

    dicom = sorted(generate("classification", tmp_path / "raw", n=2).rglob("*.dcm"))[0]
    assert main(["chat", "--image", str(dicom), "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "not an image file" in err and "add --domain medical" in err and "Traceback" not in err
    assert main(["chat", "--image", str(dicom), "--domain", "medical", "--read-option", "window=lung",
                 "--max-new-tokens", "2", "--show-prompt", "What is shown?"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s)" in err and shown_prompt(err).endswith("What is shown?<|im_end|><|im_start|>assistant\n")
    cut = tmp_path / "cut.png"  # a damaged picture: no domain's reader would help, so none is suggested
    cut.write_bytes((assets_dir() / "example.png").read_bytes()[:1500])
    assert main(["chat", "--image", str(cut), "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "damaged or truncated" in err and "--domain" not in err
    assert main(["chat", "--image", str(dicom), "--read-option", "window=lung"]) == 1
    assert "--read-option applies with --domain" in capsys.readouterr().err
    assert main(["chat", "--image", str(dicom), "--domain", "medical", "--read-option", "window=nonsense"]) == 1
    assert "nonsense" in capsys.readouterr().err
    # a misspelt option is refused, not dropped (the default would be used while the user believes otherwise)
    assert main(["chat", "--image", str(dicom), "--domain", "medical", "--read-option", "windw=lung"]) == 1
    err = capsys.readouterr().err
    assert "--read-option windw: the medical reader has no such option (it takes: " in err and "window" in err


def test_every_domain_reader_names_its_options_so_a_misspelt_read_option_is_refused():
    """`adapt chat --domain D --read-option K=V` checks K against the reader's keyword parameters; a reader
    taking **options would let a misspelt key through unused (driving's and medical's did)."""
    import inspect

    from deploy.demo.hooks import hooks_for
    from domains.base import get_domain, list_domains

    readers = {name: (get_domain(name).demo_hooks or {}).get("read_upload") for name in list_domains()}
    readers = {name: read for name, read in readers.items() if read is not None}
    assert {"driving", "medical", "remote_sensing"} <= set(readers)
    for name, read in readers.items():
        kinds = [p.kind for p in inspect.signature(hooks_for(get_domain(name))[0]).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name


@pytest.mark.parametrize("content, said", [(b"", "empty file"), (b"garbage, not a picture", "not an image file")])
def test_chat_suggests_no_domain_for_a_damaged_png(tmp_path, capsys, content, said):
    """A zero-byte or garbage .png was met with 'the driving / medical domain reads .png files: add --domain
    medical', which then failed the same way: those domains read a .png through the same reader."""
    bad = tmp_path / "z.png"
    bad.write_bytes(content)
    assert main(["chat", "--image", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adapt chat: error: {bad}: {said}") and "--domain" not in err


def test_chat_sends_no_vrt_to_a_domain_whose_reader_refuses_it(tmp_path, capsys):
    """remote_sensing registered a reader for .vrt, so `adapt chat --image x.vrt` said 'add --domain remote_sensing',
    whose raster reader then refused every VRT (it points at other files or URLs). No domain claims .vrt now."""
    from domains.base import get_domain, list_domains

    assert not [name for name in list_domains() if ".vrt" in get_domain(name).readers]
    vrt = tmp_path / "scene.vrt"
    vrt.write_text('<VRTDataset rasterXSize="4" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1">'
                   '</VRTRasterBand></VRTDataset>')
    assert main(["chat", "--image", str(vrt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adapt chat: error: {vrt}: not an image file") and "--domain" not in err


@pytest.mark.parametrize("device,needle", [("gpu", "not a torch device name"), ("cuda:99", "finds"),
                                           ("mps:7", "finds")])
def test_a_device_this_machine_lacks_is_one_line(capsys, device, needle):
    assert main(["chat", "--example-image", "--device", device, "--max-new-tokens", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"adapt chat: error: device '{device}': ") and needle in err and "Traceback" not in err


def test_export_into_the_model_folder_itself_is_refused_even_with_force(tmp_path, capsys):
    """--force into --model's own folder deleted the checkpoint being exported (its weights, config, tokenizer)."""
    ck = tmp_path / "ck"
    assert main(["export", "--model", "pocket-tiny", "--format", "pocket", "--out", str(ck)]) == 0
    before = sorted(p.name for p in ck.iterdir())
    capsys.readouterr()
    for out in (str(ck), f"{ck}/.", str(tmp_path / "x" / ".." / "ck")):
        assert main(["export", "--model", str(ck), "--format", "hf", "--out", out, "--force"]) == 1
        err = capsys.readouterr().err
        assert "the folder of the model being exported" in err and "Traceback" not in err
    assert sorted(p.name for p in ck.iterdir()) == before


def test_an_internvl_export_of_a_language_model_internvl_cannot_build_is_refused(tmp_path, capsys):
    """llm_config.architectures was written as AutoModelForCausalLM: a checkpoint neither InternVL's code nor
    pocket-adapt could load. A Gemma language model loads here, so it is the export that refuses."""
    from transformers import (
        AutoTokenizer,
        GemmaConfig,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
    )

    from model.resources import assets_dir

    tok = AutoTokenizer.from_pretrained(str(assets_dir() / "pocket-tiny"))
    vision = InternVLVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                  image_size=56, patch_size=14, attention_bias=True, layer_scale_init_value=0.5)
    text = GemmaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=2048,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = InternVLConfig(vision_config=vision, text_config=text, image_seq_length=4,
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    InternVLForConditionalGeneration(config).save_pretrained(tmp_path / "gemma")
    tok.save_pretrained(tmp_path / "gemma")
    assert main(["export", "--model", str(tmp_path / "gemma"), "--format", "internvl", "--out", str(tmp_path / "iv")]) == 1
    err = capsys.readouterr().err
    assert "takes qwen2, llama, phi3, qwen3, mistral language models; this model's is 'gemma'" in err
    assert not (tmp_path / "iv").exists()


def test_a_missing_extra_names_the_extra_to_install(tmp_path):
    """Installed without an extra, `adapt synthesize medical` / `export -f gguf` / `demo` / `convert driving nuscenes`
    ended in a ModuleNotFoundError traceback. Each now says, in one line, which extra brings the package."""
    import subprocess
    import sys

    script = """
import sys
for name in ("pydicom", "gguf", "gradio", "nuscenes", "nuscenes.nuscenes"):
    sys.modules[name] = None  # import fails as if not installed
from adapt.cli import main
for argv in (["synthesize", "medical", "--out", "med"], ["export", "-m", "pocket-tiny", "-f", "gguf", "-o", "g"],
             ["demo", "--model", "pocket-tiny"], ["convert", "driving", "nuscenes", "--src", "src", "--out", "o"]):
    print("rc", main(argv), file=sys.stderr)
"""
    (tmp_path / "src").mkdir()
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("adapt ", "rc ", "Traceback"))]
    assert lines == [
        "adapt synthesize: error: this needs the pydicom package, which is not installed: pip install "
        "'pocket-adapt[medical]' (the medical extra; a checkout's `make setup` installs every extra)", "rc 1",
        "adapt export: error: this needs the gguf package, which is not installed: pip install 'pocket-adapt[deploy]' "
        "(the deploy extra; a checkout's `make setup` installs every extra)", "rc 1",
        "adapt demo: error: this needs the gradio package, which is not installed: pip install 'pocket-adapt[demo]' "
        "(the demo extra; a checkout's `make setup` installs every extra)", "rc 1",
        "adapt convert: error: this needs the nuscenes package, which is not installed: pip install "
        "'pocket-adapt[driving]' && pip install --no-deps 'nuscenes-devkit==1.2.0' (the driving extra; a checkout's "
        "`make setup` installs every extra)", "rc 1",
    ], proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if any(p.iterdir())) == []  # nothing half-written


def test_chat_reads_a_dicom_series_folder_with_the_domain_named(tmp_path, capsys):
    """`--domain medical --image SERIES_FOLDER` (the help promises series) ended in a ValueError traceback; a folder
    now stands for the files in it, and a reader's refusal is one line."""
    from domains.medical.synthetic import generate

    raw = generate("dicom_qa", tmp_path / "raw", n=1, n_slices=6)
    series = sorted({p.parent for p in raw.rglob("*.dcm")})[0]
    assert main(["chat", "--image", str(series), "--domain", "medical", "--read-option", "n_slices=3",
                 "--max-new-tokens", "2", "--show-prompt", "Which organ?"]) == 0
    err = capsys.readouterr().err
    assert "3 image(s)" in err and "Traceback" not in err
    assert [line.split(":")[0] for line in shown_prompt(err).splitlines() if line.startswith("Slice ")] == [
        "Slice 2/6", "Slice 4/6", "Slice 6/6"]  # the series read whole, three slices picked from its six
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    assert main(["chat", "--image", str(notes), "--domain", "medical", "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adapt chat: error: --domain medical: no DICOM or image files among the upload")
    (notes / "readme.txt").unlink()
    assert main(["chat", "--image", str(notes), "--domain", "medical", "--max-new-tokens", "2"]) == 1
    assert "the folder holds no files" in capsys.readouterr().err


def test_ctrl_c_while_the_model_stack_imports_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first seconds of `adapt chat` (torch and transformers importing) printed a 30-line
    KeyboardInterrupt traceback; it is `adapt chat: interrupted`, status 130, like Ctrl-C later on."""
    import sys

    import adapt.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_import_model_stack", interrupted)
    monkeypatch.setattr(sys, "argv", ["adapt", "chat", "--example-image"])
    assert cli.main() == 130
    assert capsys.readouterr().err == "adapt chat: interrupted\n"


def test_python_m_adapt_is_not_shadowed_by_the_working_folder(tmp_path):
    """`python -m adapt` in a project folder holding its own model.py / deploy.py ran the user's file and failed
    with "'deploy' is not a package": `-m` puts the working folder first on sys.path."""
    import subprocess
    import sys

    for name in ("model", "deploy", "domains"):
        (tmp_path / f"{name}.py").write_text(f"print('the user own {name}.py ran')\n")
    proc = subprocess.run([sys.executable, "-m", "adapt", "presets"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "pocket-tiny" in proc.stdout, proc.stderr[-2000:]
    assert "own" not in proc.stdout + proc.stderr


def test_version_names_the_package_and_its_version(monkeypatch):
    """`adapt --version` exited 2 ('unrecognized arguments') and the package had no __version__."""
    import importlib.metadata
    import re
    import subprocess
    import sys
    from pathlib import Path

    import adapt

    root = Path(__file__).resolve().parents[1]
    version = re.search(r'^version = "(.+)"$', (root / "pyproject.toml").read_text(), re.M).group(1)
    proc = subprocess.run([sys.executable, "-m", "adapt", "--version"], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"pocket-adapt {version}\n", "")
    assert adapt.__version__ == version

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert adapt.__version__ == "0+unknown"  # a checkout run without `pip install`


def test_chat_streamer_prints_what_processor_decode_gives():
    """The pytorch streamer dropped grounding markup (TextStreamer skip_special_tokens): '<ref>red circle</ref><box>
    [[10, 20, 300, 400]]</box>' printed as 'red circle[[10, 20, 300, 400]]'; onnx / llama.cpp keep it."""
    import torch

    import model
    from model.generation import StopStreamer

    _, processor = model.load("pocket-tiny")
    ids = processor.tokenizer.encode("<ref>red circle</ref><box>[[10, 20, 300, 400]]</box><|im_end|>after",
                                     add_special_tokens=False)
    printed: list[str] = []
    streamer = StopStreamer(processor, on_text=printed.append)  # as adapt chat prints
    streamer.put(torch.zeros((1, 0), dtype=torch.long))
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(printed) == processor.decode(ids) == "<ref>red circle</ref><box>[[10, 20, 300, 400]]</box>"
    assert streamer.stopped and processor.decode(streamer.tokens) == processor.decode(ids)


def test_chat_notes_a_cut_or_empty_answer_on_every_runtime(monkeypatch, capsys, tmp_path):
    """An answer cut by --max-new-tokens got no note (exit 0), and an empty answer printed a blank line on the
    pytorch path where the export runtimes said '[no answer: …]'."""
    import torch

    import deploy.onnx.runtime as onnx_runtime
    import model
    from deploy.runtimes import Answer

    assert main(["chat", "--example-image", "--max-new-tokens", "1"]) == 0  # 'cross', then more
    assert "[cut at --max-new-tokens 1]" in capsys.readouterr().err
    assert main(["chat", "--example-image", "--max-new-tokens", "2"]) == 0  # 'cross', then its end token
    assert "[cut at" not in capsys.readouterr().err
    real_load = model.load

    def silent_load(*args, **kwargs):  # a model whose first token is its end token
        vlm, processor = real_load(*args, **kwargs)
        monkeypatch.setattr(vlm, "generate", lambda *a, streamer, **kw: (
            streamer.put(torch.tensor([processor.stop_token_ids[0]])), streamer.end()))
        return vlm, processor

    monkeypatch.setattr(model, "load", silent_load)
    assert main(["chat", "--example-image", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "[no answer: the model's first token ended it]" in err and "[cut at" not in err

    monkeypatch.setattr(onnx_runtime, "OnnxVLM", fake_export_vlm(Answer("a b c", [1, 2, 3], "", False, timings(3))))
    assert main(["chat", "--runtime", "onnx", "--model", str(tmp_path), "--example-image", "--max-new-tokens", "3"]) == 0
    assert "[cut at --max-new-tokens 3]" in capsys.readouterr().err


def test_chat_seed_picks_the_draw_and_loading_a_preset_leaves_the_rng_alone(capsys):
    """Sampling had no seed: model.load of a preset called torch.manual_seed(0) (so every run drew alike), a folder
    was unseeded, the export runtimes always used seed 0. --seed N now seeds every runtime."""
    import torch

    import model

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model.load("pocket-tiny")
    assert torch.equal(torch.rand(3), expected)  # the preset's random init did not reseed the caller's RNG

    def answer(seed: str) -> str:
        assert main(["chat", "--example-image", "--max-new-tokens", "12", "--keep-repeats", "--temperature", "5",
                     "--seed", seed]) == 0
        return capsys.readouterr().out

    first = answer("1")
    assert answer("1") == first
    assert any(answer(seed) != first for seed in ("2", "3", "4"))
    assert build_parser().parse_args(["chat"]).seed == 0


def test_an_export_into_a_log_prints_stage_lines(monkeypatch, tmp_path):
    """Into a log (stderr not a terminal) `adapt export` gets "lines" (an ONNX export's stage lines) as eval and
    convert do, and the libraries' own bars are off; --no-progress gives nothing. (export took a second flag,
    rewritten to mean "libraries off", and showed nothing in a log.)"""
    import sys

    import adapt.cli as cli
    import deploy.hf
    from model.progress import LINES

    seen = []
    monkeypatch.setattr(cli, "_load", lambda args: (None, None))
    monkeypatch.setattr(deploy.hf, "export", lambda *a, **options: seen.append(options["progress"]) or tmp_path)
    monkeypatch.setattr(cli, "_quiet_libraries", lambda progress, command_line: seen.append(("libraries", progress)))
    monkeypatch.setattr(cli, "_terminate_as_interrupt", lambda: None)
    monkeypatch.setattr(cli, "_import_model_stack", lambda: None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    command = ["adapt", "export", "--format", "onnx", "--model", "m", "--out", str(tmp_path / "o")]
    for extra, expected in (([], LINES), (["--no-progress"], False)):
        seen.clear()
        monkeypatch.setattr(sys, "argv", [*command, *extra])
        assert main() == 0
        assert seen == [("libraries", False), expected]
