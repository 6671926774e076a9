"""The parity figures of README "Edge export: ExecuTorch": the models of tests/test_executorch.py, measured.

    python bench/executorch_parity.py [--write]

pocket-tiny, the tiny random InternVL (Qwen2), MobileVLM V2 (LDPv2) and MobileVLM (LDP) of
bench/llamacpp_parity.py (the ONNX table's models), exported with `adapt export -f
executorch` at fp32 and int8 with its default sizes (a KV cache of the model's context up to 4096 positions, the
decoder taking up to 512 per call, as `adapt eval --runtime executorch` exports) and run in ExecuTorch's Python
runtime: the relative difference (Frobenius) of the image
embeddings from PyTorch's (the bundled example image's tiles), the largest relative difference of the last-position
logits over 32 greedy steps, and how many of the 32 greedy tokens agree. `--write` puts the table into README.md
(section executorch_parity).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TOKENS = 32
MODELS = ("pocket-tiny", "InternVL (Qwen2), tiny random", "MobileVLM V2 (LDPv2), tiny random",
          "MobileVLM (LDP), tiny random")


def measure(write: bool) -> str:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from deploy.executorch import require_executorch

    require_executorch()  # named in one line (with how to install it) before anything is built
    from bench.llamacpp_parity import models
    from bench.sections import helpers_of_tests
    from deploy.executorch.runtime import ExecuTorchVLM
    from deploy.hf import export
    from model.resources import assets_dir

    et_tests, onnx_tests = helpers_of_tests("tests.test_executorch"), helpers_of_tests("tests.test_onnx")
    QUESTION, executorch_greedy = et_tests.QUESTION, et_tests.executorch_greedy
    relative_error, torch_greedy = onnx_tests.relative_error, onnx_tests.torch_greedy

    image = Image.open(assets_dir() / "example.png").convert("RGB")
    rows = ["| model | ExecuTorch | KV cache (per call) | tiles | embeddings vs PyTorch "
            "| logits vs PyTorch (worst of 32 steps) | greedy tokens identical | model.pte MB |",
            "|---|---|---:|---:|---:|---:|---|---:|"]
    with tempfile.TemporaryDirectory(prefix="executorch-parity-") as tmp:
        made = {name: pair for name, pair in models(Path(tmp)).items() if name in MODELS}
        bar = tqdm(total=2 * len(made), desc="export + compare", unit="export")
        for name, (vlm, processor) in made.items():
            encoded = processor([{"role": "user", "content": QUESTION}], images=[image])
            with torch.no_grad():
                features = vlm.get_image_features(encoded.pixel_values).numpy()
            tokens, logits = torch_greedy(vlm, encoded, N_TOKENS)
            for variant in ("fp32", "int8"):
                folder = export(vlm, processor, "executorch", Path(tmp) / f"{len(rows)}-{variant}",
                                quantize=None if variant == "fp32" else variant)
                with ExecuTorchVLM(folder) as runtime:
                    got_features = runtime.encode_images(encoded.pixel_values)
                    got_tokens, got_logits = executorch_greedy(runtime, encoded, N_TOKENS)
                    sizes = f"{runtime.max_positions} ({runtime.max_prefill_len})"
                same = next((k for k, (a, b) in enumerate(zip(got_tokens, tokens)) if a != b), N_TOKENS)
                # logits compared while the two sequences are the same (after a different token they differ anyway)
                worst = max(relative_error(a, b) for a, b in zip(got_logits[: same + 1], logits[: same + 1]))
                agree = f"{N_TOKENS} of {N_TOKENS}" if same == N_TOKENS else f"first {same} of {N_TOKENS}"
                size = (folder / "model.pte").stat().st_size / 1e6
                rows.append(f"| {name} | {variant} | {sizes} | {len(encoded.pixel_values)} "
                            f"| {relative_error(got_features, features):.1e} | {worst:.1e} | {agree} | {size:.1f} |")
                bar.update()
        bar.close()
    text = "\n".join([
        *rows, "",
        "Relative differences are ‖a − b‖ / ‖b‖; logits are the last position's at each greedy step, compared up to "
        "the first step where the tokens part. Same image (the bundled 640×480 example) and prompt as the llama.cpp "
        "and ONNX tables; exports with the default sizes: a KV cache of the model's context up to 4096 positions, "
        "the decoder taking up to 512 new positions per call. Regenerate with `python bench/executorch_parity.py "
        "--write`; `tests/test_executorch.py` asserts the fp32 bounds (1e-4) and the 32 tokens.",
    ])
    if write:
        from bench.sections import ROOT as root
        from bench.sections import write_section

        write_section(root / "README.md", "executorch_parity", text)
    return text


def main(argv=None) -> int:
    from bench.sections import section_script

    return section_script(measure, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    from bench.sections import run_script

    run_script(main)
