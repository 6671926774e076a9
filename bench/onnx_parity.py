"""The parity figures of README "Edge export: ONNX": the models of tests/test_onnx.py, measured, not asserted.

    python bench/onnx_parity.py [--write]

For pocket-tiny, the tiny random InternVL (Qwen2), MobileVLM V2 (LDPv2) and MobileVLM (LDP) -- the models of
bench/llamacpp_parity.py -- exported with `adapt export -f onnx` at fp32 and int8 and run in onnxruntime: the relative
difference (Frobenius) of the image embeddings from PyTorch's (the bundled example image's tiles), the largest
relative difference of the last-position logits over 32 greedy steps, and how many of the 32 greedy tokens agree.
`--write` puts the table into README.md (section onnx_parity).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TOKENS = 32


def measure(write: bool) -> str:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from deploy.onnx.runtime import OnnxVLM, import_extra

    # named in one line, with how to install it, before anything is built
    for module in ("onnx", "onnxruntime", "onnxscript"):
        import_extra(module)
    from bench.llamacpp_parity import models
    from bench.sections import helpers_of_tests
    from deploy.hf import export
    from model.resources import assets_dir

    t = helpers_of_tests("tests.test_onnx")
    QUESTION, onnx_greedy, relative_error, torch_greedy = t.QUESTION, t.onnx_greedy, t.relative_error, t.torch_greedy

    image = Image.open(assets_dir() / "example.png").convert("RGB")
    rows = ["| model | ONNX | tiles | embeddings vs PyTorch | logits vs PyTorch (worst of 32 steps) "
            "| greedy tokens identical |", "|---|---|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory(prefix="onnx-parity-") as tmp:
        made = models(Path(tmp))
        bar = tqdm(total=2 * len(made), desc="export + compare", unit="export")
        for name, (vlm, processor) in made.items():
            encoded = processor([{"role": "user", "content": QUESTION}], images=[image])
            with torch.no_grad():
                features = vlm.get_image_features(encoded.pixel_values).numpy()
            tokens, logits = torch_greedy(vlm, encoded, N_TOKENS)
            for variant in ("fp32", "int8"):
                folder = export(vlm, processor, "onnx", Path(tmp) / f"{len(rows)}-{variant}",
                                quantize=None if variant == "fp32" else variant)
                with OnnxVLM(folder) as runtime:
                    got_features = runtime.encode_images(encoded.pixel_values.numpy())
                    got_tokens, got_logits = onnx_greedy(runtime, encoded, N_TOKENS)
                same = next((k for k, (a, b) in enumerate(zip(got_tokens, tokens)) if a != b), N_TOKENS)
                # logits compared while the two sequences are the same (after a different token they differ anyway)
                worst = max(relative_error(a, b) for a, b in zip(got_logits[: same + 1], logits[: same + 1]))
                agree = f"{N_TOKENS} of {N_TOKENS}" if same == N_TOKENS else f"first {same} of {N_TOKENS}"
                rows.append(f"| {name} | {variant} | {len(encoded.pixel_values)} "
                            f"| {relative_error(got_features, features):.1e} | {worst:.1e} | {agree} |")
                bar.update()
        bar.close()
    text = "\n".join([
        *rows, "",
        "Relative differences are ‖a − b‖ / ‖b‖; logits are the last position's at each greedy step, compared up to "
        "the first step where the tokens part. Same image (the bundled 640×480 example) and prompt as the llama.cpp "
        "table above. Regenerate with `python bench/onnx_parity.py --write`; `tests/test_onnx.py` asserts the fp32 "
        "bounds (1e-4) and the 32 tokens.",
    ])
    if write:
        from bench.sections import ROOT as root
        from bench.sections import write_section

        write_section(root / "README.md", "onnx_parity", text)
    return text


def main(argv=None) -> int:
    from bench.sections import section_script

    return section_script(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
