"""README.md of a TensorRT bundle: the device-side build commands (from profiles.json), what is confirmed and what is
not, and how to run verify.py. Facts about TensorRT-LLM / TensorRT Edge-LLM on Jetson: ../shared/reference/
edge_export.md §5 (what it leaves unconfirmed is marked so here too)."""

from __future__ import annotations

import textwrap

# TensorRT-LLM's checkpoint converter per LLM family (convert_checkpoint.py lives under examples/<family>/)
TRTLLM_FAMILY = {"qwen2": "qwen", "qwen": "qwen", "internlm2": "internlm2", "phi3": "phi", "phi": "phi",
                 "llama": "llama", "mobilellama": "llama"}


def exportable_layouts(vlm) -> list[str]:
    """The checkpoint layouts other tools read (hf, internvl, mobilevlm) that `adapt export` writes for this model:
    each refuses a projector or template it has no place for (`deploy.hf`'s check, the export's own)."""
    from deploy.hf import ExportError, _check_layout

    found = []
    for fmt in ("hf", "internvl", "mobilevlm"):
        try:
            _check_layout(vlm, fmt)
        except ExportError:
            continue
        found.append(fmt)
    return found


def _export_routes(vlm, projector: str) -> tuple[str, str]:
    """What routes B and C say to export first, for the layouts this model can be written in."""
    found = exportable_layouts(vlm)
    if "hf" in found or "internvl" in found:
        named = " or ".join(f"`--format {f}`" for f in found if f != "mobilevlm")
        return (f"export it with `adapt export {named.removeprefix('`')} first",
                f"Export the model in a layout TensorRT-LLM reads (`adapt export --format "
                f"{'hf' if 'hf' in found else 'internvl'} --model MODEL --out hf`, on x86)")
    if found == ["mobilevlm"]:
        why = f"the only layout that takes its `{projector}` projector; `--format hf` and `--format internvl` refuse it"
        return (f"export it with `adapt export --format mobilevlm` first, {why}",
                f"Export the model with `adapt export --format mobilevlm --model MODEL --out mvlm` (on x86; {why}): "
                "MobileVLM V2's layout, its LLM LLaMA-shaped under LLaMA key names but with config model_type "
                "`mobilevlm`, so whether the llama converter reads it (or needs the LLM alone, as a LLaMA folder) "
                "is **unconfirmed**")
    none = (f"`adapt export` writes this model (its `{projector}` projector) in none of the layouts other tools "
            "read (`--format hf`, `--format internvl`, `--format mobilevlm` refuse it)")
    return (f"there is no such export: {none}", f"**This route is not open to this model**: {none}; use route A. "
            "For a model that has a layout, the commands are")


# what is known of TensorRT's ONNX parsers on the JetPacks (none of their support matrices at hand gives an opset
# range; TensorRT 11.x's gives 9 to 25): LayerNormalization, the opset-17 operator a LayerNorm is exported as, is
# parsed from TensorRT 8.6 on (its release notes advise opset 17 for it); 8.5 has no importer for it (reported to
# fail with "No importer registered for op: LayerNormalization", fixed by moving to 8.6)
def _opset_note(opset: int, layer_norm: list[str] | None = None, decomposed: list[str] | None = None) -> str:
    """What is known of which JetPack's TensorRT parses the graphs: ONNX opset `opset`, LayerNormalization nodes in
    the graphs named in `layer_norm` (None: not recorded, a bundle written before profiles.json held them), the
    graphs whose LayerNormalization nodes opset 16 decomposed in `decomposed`."""
    return textwrap.fill(_opset_text(opset, layer_norm, decomposed), 115)


def _opset_text(opset: int, layer_norm: list[str] | None, decomposed: list[str] | None = None) -> str:
    if opset <= 16 and not layer_norm:
        where = f" (in {', '.join(f'`{g}`' for g in decomposed)})" if decomposed else ""
        return (f"The graphs are ONNX opset {opset}, for TensorRT 8.5 (JetPack 5): every LayerNormalization, the "
                f"opset-17 operator its ONNX parser has no importer for, is decomposed into ReduceMean / Sub / Mul / "
                f"Add / Sqrt / Div{where}. Whether 8.5 parses the rest of the graphs is unconfirmed; verify.py on "
                "the device says whether its engines reproduce PyTorch. TensorRT 8.6 (JetPack 6.0) and 10.3 (JetPack "
                "6.1) parse opset 16 as well; for them `--opset 17` keeps LayerNormalization whole.")
    if opset <= 17:
        text = f"The graphs are ONNX opset {opset}, which TensorRT 8.6 (JetPack 6.0) and 10.3 (JetPack 6.1) parse."
    else:
        text = (f"The graphs are ONNX opset {opset}: build with TensorRT 10 (JetPack 6.1 ships 10.3). Whether TensorRT "
                "8.6 (JetPack 6.0) parses this opset is unconfirmed: export again with `--opset 17` for it.")
    if layer_norm is None:
        return (text + " TensorRT 8.5 (JetPack 5) has no importer for LayerNormalization, the opset-17 operator a "
                "LayerNorm is exported as (it came with 8.6): a graph holding one does not parse there; export "
                "again with `--opset 16` for it.")
    if layer_norm:
        named = ", ".join(f"`{g}`" for g in layer_norm)
        return (text + f" TensorRT 8.5 (JetPack 5) cannot build this bundle: {named} "
                f"{'holds' if len(layer_norm) == 1 else 'hold'} LayerNormalization, the opset-17 operator a LayerNorm "
                "is exported as, which its ONNX parser has no importer for (it came with 8.6); export again with "
                "`--opset 16` for it, which decomposes it.")
    if opset <= 17:
        return (text + " No graph holds LayerNormalization, the operator TensorRT 8.5 (JetPack 5) has no importer "
                "for; whether 8.5 parses the rest is unconfirmed.")
    return text


def _sequence_note(decoder: dict) -> str:
    """Where the decoder's longest sequence comes from, and a cut to the model's positions said as such."""
    if decoder.get("max_sequence_cut"):
        return f"**cut**: {decoder['max_sequence_cut'].split(': ', 1)[-1]}"
    return "the largest image profile's image tokens plus 1024 text tokens"


def _other_counts(vision: dict) -> str:
    """How a prompt whose tile count no fixed engine takes runs, with the tiling's example of one."""
    other = vision["other_counts"]
    low, high = other["range"]
    text = (f"Any other count from {low} to {high} runs on `vision_range.plan` below, or on the fixed engines in "
            "pieces: the vision graph encodes each tile on its own, so the tiles can be split into batches the built "
            "engines take and the features concatenated in tile order")
    example = other.get("example")
    if example:
        pieces = " + ".join(map(str, example["split"])) if example["split"] else None
        text += (f". E.g. {example['images']} images of up to {example['each']} tiles each give "
                 f"{example['tiles']}, which no fixed engine takes" + (f": {pieces}" if pieces else ""))
    return text


def _longest_prompt(decoder: dict) -> str:
    """The longest prompt the profiles serve, in tokens, against max_input_len."""
    prompts = decoder.get("prompt_tokens")
    if not prompts:
        return ""
    name = prompts["longest"]
    return (f"; the longest prompt the vision profiles serve, `{name}` with the question \"{prompts['question']}\", "
            f"is {prompts['by_layout'][name]} tokens as the processor encodes it (image tokens, each image's framing "
            f"and the chat template): a longer question has {decoder['max_input_len'] - prompts['by_layout'][name]} "
            "tokens more to use")


def _between(vision: dict) -> str:
    """The range engine's own checks, at counts no fixed engine takes."""
    between = vision["range_profile"].get("checked_between") or []
    if not between:
        return ""
    return (" and on " + " and ".join(f"{x['tiles']} tiles ({x['description']})" for x in between)
            + ", counts no fixed engine takes (the graph passed these in onnxruntime when the bundle was written)")


def _tokenizer_files(files: list[str] | None) -> str:
    """The tokenizer's own files among the bundle's `files` (those the Files table does not name otherwise)."""
    named = {"README.md", "SHA256SUMS", "vision.onnx", "vision.onnx.data", "embed.onnx", "embed.onnx.data",
             "decoder.onnx", "decoder.onnx.data", "profiles.json", "fp16_check.json", "bundle.json", "verify.py",
             "preprocessor_config.json", "chat_template.json", "genai_config.json"}
    rest = sorted(set(files or ()) - named)
    return ", ".join(f"`{f}`" for f in rest) if rest else "tokenizer files"


def _cutting(tiling: dict) -> str:
    """How the host cuts an image into tiles under `tiling` (a `TilingConfig.to_dict()`), in words."""
    return {
        "dynamic": "InternVL dynamic tiles (the closest aspect-ratio grid, bicubic resize, row-major tiles, "
                   + ("a thumbnail when there is more than one tile)" if tiling["thumbnail"] else "no thumbnail)"),
        "pad": "one tile per image: padded to a centred square with the mean colour, then resized (bicubic)",
        "crop": "one tile per image: the shortest edge resized (bicubic) to the tile size, then the centred tile cut",
        "resize": "one tile per image: resized (bicubic) to the tile size",
    }[tiling["mode"]]


def bundle_readme(vlm, processor, profiles: dict, fp16: dict, files: list[str] | None = None) -> str:
    """The bundle's README.md; `files`: the names in the bundle's top folder (the tokenizer's are listed by name)."""
    vision, decoder, embed = profiles["vision"], profiles["decoder"], profiles["embed"]
    text_type = str(getattr(vlm.config.text_config, "model_type", "?"))
    family = TRTLLM_FAMILY.get(text_type)
    rows = "\n".join(
        f"| `{p['engine']}` | {p['tiles']} | {'; '.join(s['name'] + ': ' + s['description'] for s in p['serves'])} |"
        for p in vision["profiles"])
    commands = "\n".join(f"{p['trtexec']}" for p in vision["profiles"])
    tiling = profiles["tiling"]
    most = decoder["max_multimodal_len"] // profiles["image_tokens_per_tile"]
    projector = str(getattr(vlm.config, "projector_type", "?"))
    export_first, trtllm_export = _export_routes(vlm, projector)
    mobilevlm = ("\n\nThis model has an LDP projector (MobileVLM): TensorRT-LLM has no `model_type` for MobileVLM; it "
                 "would need its own vision wrapper and the LLaMA path (unconfirmed)." if projector.startswith("ldp") else "")
    cutting = _cutting(tiling)
    context = f"{profiles['image_tokens_per_tile']} x `{processor.image_context_token}` per tile"
    run = ", ".join(f"`{t}`" if t != context else t for t in (processor.image_start_token, context,
                                                                processor.image_end_token) if t)
    opset_note = _opset_note(profiles["onnx_opset"], profiles.get("layer_normalization"),
                             profiles.get("layer_normalization_decomposed"))
    return f"""# TensorRT bundle for Jetson Orin

Written by `adapt export --format tensorrt` (pocket-adapt). Tiling: {profiles['tiling_source']}
(tile {tiling['tile_size']} px, {tiling['min_tiles']}-{tiling['max_tiles']} tiles, thumbnail {tiling['thumbnail']},
mode {tiling['mode']}); {profiles['image_tokens_per_tile']} image tokens per tile; language model: {text_type}.

## What was checked, and what was not

- Checked when the bundle was written (x86, CPU): the ONNX graphs against PyTorch fp32 on the reference inputs
  (`python3 verify.py --runtime onnxruntime` passed, rtol 1e-4), and each graph converted to fp16 and run in
  onnxruntime against fp32 (`fp16_check.json`): {fp16['summary']}.
- **Not checked: no TensorRT engine was built from this bundle and no GPU was used.** Engines are specific to the
  device and TensorRT version, so they are built on the Orin with the commands below; nothing is known about
  TensorRT parity or latency until `verify.py` has run there.

## Files

| file | what |
|---|---|
| `vision.onnx` (+ `.data`) | `pixel_values (tiles, 3, {tiling['tile_size']}, {tiling['tile_size']})` -> `image_features (tiles, {', '.join(map(str, vision['output_per_tile']))})`; fixed tile size, tile count fixed by each profile |
| `embed.onnx` (+ `.data`) | `input_ids (1, seq)` int64 -> `inputs_embeds`; image-context ids read row 0 (they are overwritten) |
| `decoder.onnx` (+ `.data`) | `inputs_embeds`, `attention_mask`, `position_ids`, `past_key_values.N.key/value` -> last-position `logits`, `present.N.key/value` |
| `profiles.json` | every engine's profile (min/opt/max shapes) and its trtexec command |
| `references/*.npy` | reference inputs and PyTorch fp32 outputs (numpy, no pickle) |
| `fp16_check.json` | the fp16 check: errors per output, fp32 magnitudes per module and operator |
| `bundle.json`, `verify.py` | what verify.py compares, at which tolerances |
| `preprocessor_config.json`, `chat_template.json`, {_tokenizer_files(files)} | how the host cuts tiles, builds the prompt and tokenises |
| `genai_config.json` | onnxruntime-genai's description of the three graphs (what `adapt export --format onnx` writes; TensorRT does not read it) |
| `README.md` | this file |
| `SHA256SUMS` | every file's SHA-256, written by the export: run `sha256sum -c SHA256SUMS` here after copying the bundle to the Orin |

## 1. Vision engines (trtexec, on the Orin)

One engine per layout below; each profile fixes the tile count (min = opt = max), so an engine takes a prompt
whose tiles add up to exactly its count and no other. {_other_counts(vision)}.

| engine | tiles | serves |
|---|---|---|
{rows}

JetPack ships trtexec as `/usr/src/tensorrt/bin/trtexec`, which is not on `PATH`; run from this folder:

```sh
export PATH="$PATH:/usr/src/tensorrt/bin"
{commands}
```

{opset_note}

fp16 notes: an operator listed under `overflow` in `fp16_check.json` produces values above 65504 in fp32 and
becomes inf in fp16; a normalisation listed under `norm_sum_of_squares_over_fp16` overflows if TensorRT reduces
it in fp16. Keep such layers in fp32 (`--precisionConstraints=obey --layerPrecisions=<layer>:fp32`; the
TensorRT layer names come from `trtexec --verbose`) and compare again with verify.py.

One engine for every tile count can be built as well: it takes {vision['range_profile']['takes']} in one call,
so every image of any aspect ratio (one image gives {', '.join(map(str, vision['range_profile']['one_image']))} tiles) and every prompt of up to
{profiles['max_images']} images; verify.py checks it, when it is there, on every reference above{_between(vision)}:

```sh
{vision['range_profile']['trtexec']}
```

## 2. Language model

**A. Plain TensorRT from `decoder.onnx` and `embed.onnx`** (the route verify.py checks):

```sh
{embed['trtexec']}
{decoder['trtexec']}
```

The decoder profile allows {decoder['max_sequence']} tokens ({_sequence_note(decoder)}). Unconfirmed: that TensorRT on the Orin accepts the empty KV cache (past length 0) of the
first step as a profile minimum, and how this engine's speed compares with TensorRT-LLM's (no plugins here).

**B. TensorRT Edge-LLM** (Orin to Thor): the x86 tools `tensorrt-edgellm-quantize-llm`,
`tensorrt-edgellm-export-llm` and `tensorrt-edgellm-export-visual`, then on the device
`llm_build --vlm --minImageTokens N --maxImageTokens {decoder['max_multimodal_len']}` and `visual_build`.
Its listed VLMs are Qwen2-VL, Qwen2.5-VL, InternVL3 and Phi-4-MM; whether it takes this model (a pocket-adapt
checkpoint; {export_first}) is **unconfirmed**, as are
the other flags. INT4-AWQ and GPTQ are available; FP8 is not on Orin (SM87; FP8 needs SM89+).

**C. TensorRT-LLM `v0.12.0-jetson`** (the branch for JetPack 6.1, "Jetson AGX Orin; other Orin devices under
testing"; container `dustynv/tensorrt_llm:0.12-r36.4.0`, about 18.5 GB, NVMe recommended). {trtllm_export}, then on the device:

```sh
python3 examples/{family or '<family>'}/convert_checkpoint.py --model_dir <LLM folder> --output_dir ckpt --dtype float16
trtllm-build --checkpoint_dir ckpt --output_dir llm --gemm_plugin float16 --max_batch_size 1 \\
    --max_input_len {decoder['max_input_len']} --max_seq_len {decoder['max_sequence']} --max_multimodal_len {decoder['max_multimodal_len']}
```

`--max_input_len` (prompt, image tokens included) leaves {decoder['max_new_tokens']} of `--max_seq_len` to the answer
(`max_new_tokens`){_longest_prompt(decoder)}.

`--max_multimodal_len` = the most tiles ({most}: a prompt of up to {profiles['max_images']} images) x
{profiles['image_tokens_per_tile']} image tokens. The converter is chosen by LLM family
({'`' + family + '` for ' + text_type if family else 'no known family for ' + text_type + ': unsupported by this route'});
the image features enter as a prompt-embedding table of shape `(tiles x tokens, hidden)`, the vision engine's
output flattened. Unconfirmed: whether the Jetson branch has `internvl`, whether its converter reads the LLM out
of a whole-VLM folder (it may need the LLM alone), and its pinned transformers version (4.37.2 in the README).{mobilevlm}

## 3. Preprocessing on the host

`preprocessor_config.json` holds the tiling: {cutting}; then `(x / 255 - mean) / std`. A prompt of n images gives
each image at most `max(1, max_tiles // n)` tiles{' (+ thumbnail; dynamic mode)' if tiling['thumbnail'] else ''};
the tiles of all images go to the vision engine in one batch (one that takes their count, section 1).
**At most {profiles['max_images']} images per prompt**: the largest profile ({most} tiles) and
`--max_multimodal_len` hold the most tiles such a prompt gives; refuse a prompt with more images on the host (its
tiles may not fit), or export again with `adapt export --format tensorrt --max-images N`. The prompt
follows `chat_template.json`: each image becomes {run}; the decoder's `inputs_embeds` are `embed(ids)` with the image-context rows replaced by the vision
output rows in order.

## 4. Check the engines: verify.py

```sh
python3 verify.py                          # the *.plan files in this folder, TensorRT
python3 verify.py --engines /path/to/plans # engines elsewhere
python3 verify.py --runtime onnxruntime    # the fp32 ONNX graphs (x86 or Orin, no engine)
```

It runs each engine on the shipped reference inputs and compares with the shipped PyTorch fp32 outputs:
PASS when max|got - expected| <= atol + rtol x max|expected| (TensorRT fp16: rtol 1e-2, atol 1e-4;
onnxruntime fp32: rtol 1e-4, atol 1e-6; `--rtol` / `--atol` override). Vision engines are required; the
embed/decoder engines of route A are checked when present, the decoder twice: the prompt on an empty KV cache
(`decoder`) and one generated token on a {decoder['reference_step']['past']}-token cache (`decoder_step`, the path
of every later token). Exit status 0 when all pass, 1 otherwise. Needs numpy
and the TensorRT Python bindings (JetPack's `python3-libnvinfer`) with polygraphy or `cuda-python`.
"""
