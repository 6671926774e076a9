"""The parity figures of README "Edge export: llama.cpp": the models of tests/test_gguf.py, measured, not asserted.

    python bench/llamacpp_parity.py [--write]

For pocket-tiny, the tiny random InternVL (Qwen2), MobileVLM V2 (LDPv2) and MobileVLM (LDP) at f32 and f16: the
relative difference (Frobenius) of the mmproj's image embeddings from PyTorch's, from PyTorch computing as llama.cpp's
CPU kernels do (float16 im2col, float16 GELU tables), and how many of 32 greedy tokens agree (prompt rendered and
tokenised by llama.cpp from the embedded template, compared id for id). MobileVLM's references use llama.cpp's LDP
row selection (see README). `--write` puts the table into README.md (section llamacpp_parity).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def models(tmp: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, InternVLForConditionalGeneration

    import model
    from bench.sections import helpers_of_tests
    from model.resources import assets_dir

    conftest, checkpoints = helpers_of_tests("tests.conftest"), helpers_of_tests("tests.test_checkpoints")
    randomize_, tiny_internvl_config = conftest.randomize_, conftest.tiny_internvl_config
    write_preprocessor, write_mobilevlm_v2 = conftest.write_preprocessor, checkpoints.write_mobilevlm_v2
    gguf_tests = helpers_of_tests("tests.test_gguf")
    sharpen_attention, tiny_ldp_model = gguf_tests.sharpen_attention, gguf_tests.tiny_ldp_model

    tok = AutoTokenizer.from_pretrained(str(assets_dir() / "pocket-tiny"))
    torch.manual_seed(0)
    hf = InternVLForConditionalGeneration(tiny_internvl_config(tok))
    randomize_(hf)
    hf.save_pretrained(str(tmp / "internvl"))
    tok.save_pretrained(str(tmp / "internvl"))
    write_preprocessor(tmp / "internvl")
    made = {
        "pocket-tiny": model.load("pocket-tiny"),
        "InternVL (Qwen2), tiny random": model.load(tmp / "internvl"),
        "MobileVLM V2 (LDPv2), tiny random": model.load(write_mobilevlm_v2(tmp / "mvlm", tok, tie=False).directory),
        "MobileVLM (LDP), tiny random": tiny_ldp_model(tok),
    }
    for name, (vlm, _) in made.items():
        if name != "pocket-tiny":
            sharpen_attention(vlm)
    return made


def measure(write: bool) -> str:
    from PIL import Image

    from bench.sections import helpers_of_tests
    from deploy.hf import export
    from deploy.llamacpp import PocketLlama
    from deploy.llamacpp.runtime import LlamaCppVLM
    from model.resources import assets_dir

    t = helpers_of_tests("tests.test_gguf")

    image = Image.open(assets_dir() / "example.png").convert("RGB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (vlm, processor) in models(Path(tmp)).items():
            key = "mobilevlm" if "LDP" in name else "other"
            for qtype in ("f32", "f16"):
                folder = export(vlm, processor, "gguf", Path(tmp) / f"{len(rows)}", qtype=qtype, name="m")
                model_file, mmproj = t._files(folder, "m", qtype)
                with PocketLlama(model_file, mmproj, kv_f32=qtype == "f32") as llama:
                    got = llama.embed(llama.tiles_file(t._tiles(processor, image)))
                own = t.relative_error(got, t.torch_embeddings(vlm, processor, image))
                with t.reference(key, vlm):
                    exact = t.torch_embeddings(vlm, processor, image)
                    with t.llamacpp_numerics(vlm):
                        emulated = t.torch_embeddings(vlm, processor, image)
                    encoded = t._generation_inputs(processor, image)
                    expected, _, gaps = t.greedy(vlm, encoded, 32)
                with LlamaCppVLM(folder) as runtime:
                    answer = runtime.llama.request(
                        op="generate", messages=runtime.messages([{"role": "user", "content": t.QUESTION}], 1),
                        images=runtime.image_entries([image]), n_predict=32, ignore_eos=True)
                ids = encoded.input_ids.tolist()
                same_prompt = answer["prompt_ids"] == [-1 if i == processor.image_token_id else i for i in ids]
                agree = next((k for k, (a, b) in enumerate(zip(answer["tokens"], expected)) if a != b), 32)
                note = "" if agree == 32 else f" (PyTorch's top-2 gap there: {gaps[agree]:.4f})"
                own = f"{own:.1e}" if key == "mobilevlm" else "="
                rows.append(f"| {name} | {qtype} | {own} | {t.relative_error(got, exact):.1e} "
                            f"| {t.relative_error(got, emulated):.1e} | {'identical' if same_prompt else 'DIFFERENT'} "
                            f"| {agree} of 32{note} |")
    lines = [
        "| model | type | embeddings vs PyTorch's own | vs PyTorch (llama.cpp's LDP rows) | vs PyTorch with llama.cpp's CPU "
        "numerics | prompt ids | greedy tokens identical |",
        "|---|---|---:|---:|---:|---|---|",
        *rows,
        "",
        "Relative differences are ‖a − b‖ / ‖b‖ over all image rows of the bundled example image (pocket-tiny: 7 tiles). "
        "MobileVLM's other columns and its tokens compare with PyTorch fed llama.cpp's LDP rows (patches 1..575 + CLS, "
        "see below); for the others the first two columns are the same comparison. "
        "Regenerate with `python bench/llamacpp_parity.py --write`; `tests/test_gguf.py` asserts the bounds.",
    ]
    text = "\n".join(lines)
    if write:
        from bench.sections import write_section

        write_section(ROOT / "README.md", "llamacpp_parity", text)
    return text


def main(argv=None) -> int:
    from bench.sections import section_script

    return section_script(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
