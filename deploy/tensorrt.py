"""`adapt export --format tensorrt [--recipe RECIPE]`: the bundle an automotive team builds TensorRT engines from on
a Jetson Orin (engines are specific to the device and TensorRT version, so they are built there, not here).

    vision.onnx, embed.onnx, decoder.onnx (+ .data), tokenizer, chat_template.json, preprocessor_config.json,
    genai_config.json
                        what `write_onnx` writes (deploy/onnx): the vision graph has fixed tile_size x tile_size
                        tiles and a symbolic tile axis; the decoder takes inputs_embeds and a KV cache; converted
                        to ONNX opset 17 (TensorRT 8.6 / 10.3, JetPack 6.0 / 6.1; `opset=18` keeps the exporter's;
                        `opset=16`, LayerNormalization decomposed, for TensorRT 8.5 / JetPack 5), and
                        float constants below fp16's range (the attention-mask fill) set to FP16_MASK_FILL
    profiles.json       one TensorRT profile per tile count the tiling produces (min = opt = max), named after the
                        inputs it serves: the fewest tiles, the most one image gets (max_tiles + thumbnail), the
                        most a prompt of up to `max_images` images gets (the images share max_tiles), the driving
                        layouts (one stitched 2688x896 image; six 1600x900 camera views); the decoder's and
                        embedding's shape ranges; the trtexec command of each engine; the range engine (any count
                        from the fewest to the most tiles) and how a count without a fixed engine runs (other_counts)
    references/*.npy    reference inputs (the example image tiled for each profile and for tile counts between them
                        that only the range engine takes, the prompt's token ids, a KV
                        cache for one decode step) and PyTorch's fp32 outputs (image features, embeddings, the
                        first logits on an empty cache, the decode step's logits)
    fp16_check.json     each graph run in fp16 in onnxruntime against fp32, and the operators whose fp32 values
                        would overflow fp16
    bundle.json         what verify.py checks: graph, engine, reference files, tolerances per runtime
    verify.py           the standalone check run on the Orin (deploy/tensorrt_verify.py)
    README.md           the build commands and what was and was not checked

Why one vision graph with a symbolic tile axis and not one static graph per tile count: trtexec refuses
--minShapes/--optShapes/--maxShapes for an input whose shape is static (NVIDIA/TensorRT#2043, on an Orin), and one
graph keeps one copy of the weights; a profile with min = opt = max fixes the tile count just the same.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from domains.driving.layout import CAMERA_SIZE, STITCHED_SIZE
from model.errors import PocketAdaptError
from model.limits import MAX_IMAGES
from model.progress import Progress
from model.resources import assets_dir
from model.tiling import TilingConfig, candidate_grids, tile_counts
from model.vision import check_tile_size

from .fp16_check import FP16_MAX, compare_fp16, scan_magnitudes
from .onnx.export import DECODER, EMBED, VISION, write_onnx
from .onnx.graphs import (
    DecoderGraph,
    EmbedGraph,
    VisionGraph,
    decoder_names,
    eager_attention,
    float32_on_cpu,
    kv_shape,
)

BUNDLE, PROFILES, FP16_REPORT, VERIFY, README = "bundle.json", "profiles.json", "fp16_check.json", "verify.py", "README.md"
REFERENCES = "references"
QUESTION = "What shapes are in the picture?"
TEXT_BUDGET = 1024  # text tokens the decoder profile allows beside the largest profile's image tokens
MAX_NEW_TOKENS = 256  # of TEXT_BUDGET, the tokens TensorRT-LLM's max_input_len leaves for the answer
# ONNX opsets the bundle can be written at: 16, LayerNormalization decomposed, for TensorRT 8.5 (JetPack 5), which
# lacks it (tensorrt_readme); 17, which TensorRT 8.6 (JetPack 6.0) and 10 (JetPack 6.1) parse; and 18, what
# torch.onnx's exporter writes
OPSETS, DEFAULT_OPSET = (16, 17, 18), 17
# an attention mask's fill (torch.finfo(float32).min, -3.4e38) becomes -inf in fp16, and a fully masked row's
# softmax NaN; this fill is exact in fp16 and leaves room below it for any score added (fp16 ends at -65504)
FP16_MASK_FILL = -32768.0
# max|got - expected| <= atol + rtol * max|expected|: fp16 engines against PyTorch fp32; the fp32 ONNX graphs
TOLERANCE = {"tensorrt": {"rtol": 1e-2, "atol": 1e-4}, "onnxruntime": {"rtol": 1e-4, "atol": 1e-6}}


class TensorRTExportError(PocketAdaptError, ValueError):
    """The model or its tiling cannot be written as a TensorRT bundle."""


@dataclass(frozen=True)
class Layout:
    """Images of one sample the vision engine must take, and the tiles the processor cuts from them."""

    name: str
    description: str
    images: tuple[tuple[int, int], ...]
    tiles: int


def layouts(processor, tiling: TilingConfig, max_images: int = MAX_IMAGES) -> list[Layout]:
    """The image layouts the tiling must serve, each with its exact tile count from the processor; a prompt holds at
    most `max_images` images."""
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise TensorRTExportError(f"max_images must be a whole number >= 1, got {max_images!r}")
    s = tiling.tile_size
    thumb = " + thumbnail" if tiling.mode == "dynamic" and tiling.thumbnail else ""
    wanted = [
        ("fewest_tiles", f"an image cut into the fewest tiles (a {tiling.min_tiles}x1 grid{thumb if tiling.min_tiles > 1 else ''})",
         ((s * tiling.min_tiles, s),)),
        ("most_tiles", f"an image cut into the most tiles (a {tiling.max_tiles}x1 grid{thumb if tiling.max_tiles > 1 else ''})",
         ((s * tiling.max_tiles, s),)),
        ("driving_stitched", "the six nuScenes cameras stitched into one 2688x896 image (Mini-InternVL's layout)",
         (STITCHED_SIZE,)),
        ("driving_six_views", "six 1600x900 camera images in one sample (max_tiles shared out among them)",
         (CAMERA_SIZE,) * 6),
    ]
    if tiling.mode != "dynamic":
        wanted = wanted[:1] + wanted[2:]
        wanted[0] = ("one_image", f"any one image ({tiling.mode} mode: always one tile)", ((s, s),))
    wanted = [w for w in wanted if len(w[2]) <= max_images]
    most, count = most_tiles(tiling, max_images)
    if most > max(sum(processor.tiles_for_sizes(images, tiling)) for _, _, images in wanted):
        cap = tiling.for_images(count).max_tiles if tiling.mode == "dynamic" else 1
        each = f"a {cap}x1 grid{thumb if cap > 1 else ''}" if tiling.mode == "dynamic" else "one tile"
        wanted.append(("most_tiles_multi_image", f"{count} images in one prompt, each cut into the most tiles it can "
                       f"get ({each}): the most tiles any prompt of up to {max_images} images gives",
                       ((s * cap, s),) * count))
    return [Layout(name, text, images, sum(processor.tiles_for_sizes(images, tiling))) for name, text, images in wanted]


def source_tile_caps(recipe, processor, tiling: TilingConfig, what: str) -> str | None:
    """A warning, or None, for the recipe's data sources whose own max_tiles differ from `tiling`'s: the bundle's
    profiles, max_multimodal_len and preprocessor_config.json follow `tiling`, so their images run on the device
    with other tile counts than in training (a six-camera sample's, as the processor cuts it, named)."""
    sources = [*getattr(recipe.data, "sources", []), *getattr(recipe.data, "eval_sources", [])]
    other = sorted({(s.name, s.max_tiles) for s in sources if s.max_tiles is not None and s.max_tiles != tiling.max_tiles})
    if not other or tiling.mode != "dynamic":
        return None

    def six(cap: int) -> int:
        return sum(processor.tiles_for_sizes([CAMERA_SIZE] * 6, tiling.with_max_tiles(cap)))

    named = ", ".join(f"{name} (max_tiles {cap}: six camera views {six(cap)} tiles)" for name, cap in other)
    text = (f"{what}: data source(s) {named} cap tiles otherwise than tiling.max_tiles {tiling.max_tiles}, which the "
            f"bundle's profiles, max_multimodal_len and preprocessor_config.json follow (six camera views "
            f"{six(tiling.max_tiles)} tiles): on the device those images are cut as tiling.max_tiles says, not as in "
            f"training; set tiling.max_tiles to the cap the model should run with")
    warnings.warn(text, stacklevel=2)
    return text


def most_tiles(tiling: TilingConfig, max_images: int) -> tuple[int, int]:
    """The most tiles one prompt of 1 to `max_images` images can give (the images share max_tiles as the processor
    shares it, `TilingConfig.for_images`), and the fewest images that give it."""
    totals = {n: n * max(tile_counts(tiling.for_images(n))) for n in range(1, max_images + 1)}
    most = max(totals.values())
    return most, min(n for n, total in totals.items() if total == most)


def other_counts(found: list[Layout], tiling: TilingConfig, max_images: int) -> dict:
    """How a prompt whose tile count has no fixed engine runs: on the range engine (any count from the fewest to the
    most tiles), or on the fixed engines in pieces (the vision graph encodes each tile on its own, so a batch can be
    split and the features concatenated in tile order); with an example prompt of this tiling that needs it."""
    fixed = sorted({x.tiles for x in found})
    counts = sorted(set(tile_counts(tiling)) | set(fixed))
    example = None
    for n in range(2, max_images + 1):
        total = n * max(tile_counts(tiling.for_images(n)))
        if total not in fixed:
            each = max(tile_counts(tiling.for_images(n)))
            example = {"images": n, "tiles": total, "each": each, "split": split_tiles(total, fixed)}
            break
    return {"range": [counts[0], counts[-1]], "fixed": fixed, "example": example}


def range_layouts(processor, tiling: TilingConfig, found: list[Layout], max_images: int) -> list[Layout]:
    """Prompts whose tile count no fixed engine takes, to check the range profile between its bounds (the bounds are
    fixed engines' counts, checked on their references): the multi-image example of `other_counts`, and one image
    cut into the count nearest the middle of the range that no fixed engine and no other check here takes."""
    fixed = {x.tiles for x in found}
    s, wanted = tiling.tile_size, []
    example = other_counts(found, tiling, max_images)["example"]
    if example:
        cap = tiling.for_images(example["images"]).max_tiles if tiling.mode == "dynamic" else 1
        wanted.append(("multi_image", f"{example['images']} images of up to {example['each']} tiles each",
                       ((s * cap, s),) * example["images"]))
    if tiling.mode == "dynamic":
        counts = sorted(set(tile_counts(tiling)) | fixed)
        middle, taken = (counts[0] + counts[-1]) / 2, fixed | {example["tiles"] if example else 0}
        sizes = {sum(processor.tiles_for_sizes([(s * c, s * r)], tiling)): (s * c, s * r)
                 for c, r in candidate_grids(tiling.min_tiles, tiling.max_tiles)}
        free = sorted((abs(n - middle), n) for n in sizes if n not in taken)
        if free:
            n = free[0][1]
            wanted.append(("one_image_between", f"one {sizes[n][0]}x{sizes[n][1]} image", (sizes[n],)))
    checked = [Layout(name, text, images, sum(processor.tiles_for_sizes(images, tiling)))
               for name, text, images in wanted]
    return [x for x in checked if x.tiles not in fixed]


def split_tiles(count: int, fixed: list[int]) -> list[int] | None:
    """`count` tiles as a sum of the fixed engines' counts, fewest engine runs first (largest pieces first), or None
    where they cannot add up to it."""
    best: list[list[int] | None] = [[]] + [None] * count
    for total in range(1, count + 1):
        for piece in sorted(fixed, reverse=True):
            rest = best[total - piece] if piece <= total else None
            if rest is not None and (best[total] is None or len(rest) + 1 < len(best[total])):
                best[total] = sorted([piece, *rest], reverse=True)
    return best[count]


def write_tensorrt(vlm, processor, out_dir: Path, tiling: TilingConfig | None = None, source: str | None = None,
                   max_images: int = MAX_IMAGES, progress: Progress = True, opset: int = DEFAULT_OPSET,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> Path:
    """Write the bundle into `out_dir` (an empty staging folder); `tiling`: the recipe's (default: the model's);
    `source`: where that tiling came from, for the README; `max_images`: the most images one prompt may hold (the
    largest profile and max_multimodal_len take the most tiles such a prompt gives); `progress`: the ONNX export's
    bar; `opset`: the graphs' ONNX opset (`OPSETS`); `max_new_tokens`: the answer tokens TensorRT-LLM's
    max_input_len leaves room for within max_seq_len."""
    if opset not in OPSETS:
        raise TensorRTExportError(f"ONNX opset {opset!r} is not one the bundle is written at; choose one of "
                                  f"{', '.join(map(str, OPSETS))} (16: JetPack 5; 17: JetPack 6.0 and 6.1; "
                                  "18: TensorRT 10)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise TensorRTExportError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    out_dir = Path(out_dir)
    processor = copy.copy(processor)
    processor.tiling = tiling or processor.tiling
    tiling = processor.tiling
    check_tile_size(tiling.tile_size, vlm.config.vision_config, source or "the model", TensorRTExportError)
    # the decoder's limits and the reference prompt before the (minute-long) ONNX export: a setting they refuse
    # fails at once
    found = layouts(processor, tiling, max_images)
    encoded = processor([{"role": "user", "content": QUESTION}], images=[example(STITCHED_SIZE)], tiling=tiling)
    ids, cfg = encoded.input_ids[None], vlm.config.text_config
    n = ids.shape[1]
    multimodal = max(x.tiles for x in found) * processor.image_seq_length
    max_positions = int(getattr(cfg, "max_position_embeddings", 4096))
    longest, max_input, cut = sequence_limits(multimodal, max_positions, max_new_tokens, source or "the model")
    if n > max_input:
        raise TensorRTExportError(
            f"{source or 'the model'}: the reference prompt (the stitched {STITCHED_SIZE[0]}x{STITCHED_SIZE[1]} driving "
            f"image and the question) is {n} tokens, more than max_input_len {max_input} (max_seq_len {longest} - "
            f"max_new_tokens {max_new_tokens}; max_position_embeddings {max_positions}): the decoder profile's opt shape "
            f"would pass its max and the prompt could not run on the engines; ask for fewer new tokens "
            f"(--max-new-tokens) or fewer tiles (max_tiles)")
    prompts = prompt_lengths(processor, found, tiling)
    widest = max(prompts, key=prompts.get)
    if prompts[widest] > max_input:
        layout = next(x for x in found if x.name == widest)
        raise TensorRTExportError(
            f"{source or 'the model'}: a prompt of layout {widest} ({len(layout.images)} image(s), {layout.tiles} tiles "
            f"= {layout.tiles * processor.image_seq_length} image tokens, with the question {prompts[widest]} tokens) "
            f"is longer than max_input_len {max_input} (max_seq_len {longest} - max_new_tokens {max_new_tokens}; "
            f"max_position_embeddings {max_positions}): TensorRT-LLM and the decoder profile could not take it; ask "
            f"for fewer new tokens (--max-new-tokens), fewer images (--max-images) or fewer tiles (max_tiles)")
    write_onnx(vlm, processor, out_dir, progress=progress)
    clamped, decomposed = [], []
    for graph in (VISION, EMBED, DECODER):
        if convert_opset(out_dir / graph, opset):
            decomposed.append(graph)
        clamped += [{"graph": graph, **c} for c in clamp_fp16_constants(out_dir / graph)]
    # the references are CPU float32 (a --device cuda model left its inputs behind) and made in eval mode: a copy
    # where the caller's model is (partly) in training mode, which it is still in afterwards
    vlm = float32_on_cpu(vlm, always_copy=any(m.training for m in vlm.modules())).eval()
    refs = References(out_dir / REFERENCES)
    checks, vision_profiles, fp16 = [], [], {}
    features_shape = None
    for tiles in sorted({layout.tiles for layout in found}):
        served = [layout for layout in found if layout.tiles == tiles]
        pixels, _ = processor.prepare_images([example(size) for size in served[0].images], tiling)
        with torch.no_grad():
            features = vlm.get_image_features(pixels)
        features_shape = list(features.shape[1:])
        name = f"vision_{tiles}tiles"
        shape = [tiles, 3, tiling.tile_size, tiling.tile_size]
        command = trtexec(VISION, f"{name}.plan", {"pixel_values": (shape, shape, shape)})
        vision_profiles.append({"tiles": tiles, "engine": f"{name}.plan", "min": shape, "opt": shape, "max": shape,
                                "output_shape": list(features.shape), "trtexec": command,
                                "serves": [{"name": x.name, "description": x.description,
                                            "images": [list(i) for i in x.images]} for x in served]})
        checks.append({"name": name, "onnx": VISION, "engine": f"{name}.plan", "required": True, "build": command,
                       "inputs": {"pixel_values": refs.save(name, "pixel_values", pixels)},
                       "outputs": {"image_features": refs.save(name, "image_features", features)}})
        fp16[name] = fp16_entry(compare_fp16(out_dir / VISION, {"pixel_values": pixels.numpy()}),
                                "image_features", VisionGraph(vlm), (pixels,), vlm)

    # one engine for any count (images of any aspect ratio): a range profile, checked on every fixed reference
    counts = sorted(set(tile_counts(tiling)) | {x.tiles for x in found})
    side = tiling.tile_size
    low, high = [counts[0], 3, side, side], [counts[-1], 3, side, side]
    opt = [max(tile_counts(tiling)), 3, side, side]
    range_cmd = trtexec(VISION, "vision_range.plan", {"pixel_values": (low, opt, high)})
    for fixed in list(checks):
        checks.append({**fixed, "name": f"vision_range@{fixed['name'][len('vision_'):]}", "engine": "vision_range.plan",
                       "required": False, "engine_only": True, "build": range_cmd})
    # and on prompts whose counts no fixed engine takes (the graph the range engine is built from, in onnxruntime
    # at export too): a batch size the fixed references never ran
    between = []
    for layout in range_layouts(processor, tiling, found, max_images):
        pixels, _ = processor.prepare_images([example(size) for size in layout.images], tiling)
        with torch.no_grad():
            features = vlm.get_image_features(pixels)
        name = f"vision_range_{layout.tiles}tiles"
        checks.append({"name": f"vision_range@{layout.tiles}tiles", "onnx": VISION, "engine": "vision_range.plan",
                       "required": False, "build": range_cmd,
                       "inputs": {"pixel_values": refs.save(name, "pixel_values", pixels)},
                       "outputs": {"image_features": refs.save(name, "image_features", features)}})
        between.append({"tiles": layout.tiles, "name": layout.name, "description": layout.description,
                        "images": [list(i) for i in layout.images]})
    range_profile = {"engine": "vision_range.plan", "min": low, "opt": opt, "max": high, "tile_counts": counts,
                     "one_image": tile_counts(tiling), "takes": f"any tile count from {low[0]} to {high[0]}",
                     "trtexec": range_cmd, "checked_between": between}

    stitched = next(x for x in found if x.name == "driving_stitched")
    lm = vlm.language_model
    heads, head_dim = kv_shape(cfg)
    with torch.no_grad():
        embedded = EmbedGraph(vlm)(ids)
        merged, _ = vlm.embed(ids, encoded.pixel_values)
        mask, positions = torch.ones_like(ids), torch.arange(ids.shape[1])[None]
        logits = lm(inputs_embeds=merged, attention_mask=mask, position_ids=positions).logits[:, -1:]
    inputs, _ = decoder_names(cfg.num_hidden_layers)
    past = {n: {"zeros": [1, heads, 0, head_dim], "dtype": "float32"} for n in inputs[3:]}
    lm_shapes = {"inputs_embeds": ([1, 1, cfg.hidden_size], [1, n, cfg.hidden_size], [1, longest, cfg.hidden_size]),
                 "attention_mask": ([1, 1], [1, n], [1, longest]), "position_ids": ([1, 1], [1, n], [1, longest]),
                 **{k: ([1, heads, 0, head_dim], [1, heads, 0, head_dim], [1, heads, longest - 1, head_dim])
                    for k in inputs[3:]}}
    embed_shapes = {"input_ids": ([1, 1], [1, n], [1, longest])}
    decoder_cmd, embed_cmd = trtexec(DECODER, "decoder.plan", lm_shapes), trtexec(EMBED, "embed.plan", embed_shapes)
    checks.append({"name": "embed", "onnx": EMBED, "engine": "embed.plan", "required": False, "build": embed_cmd,
                   "inputs": {"input_ids": refs.save("embed", "input_ids", ids)},
                   "outputs": {"inputs_embeds": refs.save("embed", "inputs_embeds", embedded)}})
    feeds = {"inputs_embeds": refs.save("decoder", "inputs_embeds", merged),
             "attention_mask": refs.save("decoder", "attention_mask", mask),
             "position_ids": refs.save("decoder", "position_ids", positions), **past}
    checks.append({"name": "decoder", "onnx": DECODER, "engine": "decoder.plan", "required": False,
                   "build": decoder_cmd, "inputs": feeds,
                   "outputs": {"logits": refs.save("decoder", "logits", logits)}})
    # one decode step (a token on a filled KV cache: the path of every generated token; the check above has an empty
    # cache), the cache from PyTorch's prefill of the text-only prompt, which keeps the cache files small
    prefix = processor([{"role": "user", "content": QUESTION}], tiling=tiling).input_ids[None]
    m, graph = prefix.shape[1], DecoderGraph(lm)
    with torch.no_grad():
        empty = [torch.zeros(p["zeros"]) for p in past.values()]
        first, *cache = graph(EmbedGraph(vlm)(prefix), torch.ones_like(prefix), torch.arange(m)[None], *empty)
        token = first[:, -1:].argmax(-1)
        step = {"inputs_embeds": EmbedGraph(vlm)(token), "attention_mask": torch.ones(1, m + 1, dtype=torch.long),
                "position_ids": torch.tensor([[m]]), **dict(zip(inputs[3:], cache))}
        step_logits = graph(*step.values())[0]
    checks.append({"name": "decoder_step", "onnx": DECODER, "engine": "decoder.plan", "required": False,
                   "build": decoder_cmd, "inputs": {k: refs.save("decoder_step", k, v) for k, v in step.items()},
                   "outputs": {"logits": refs.save("decoder_step", "logits", step_logits)}})
    decoder_feeds = {"inputs_embeds": merged.numpy(), "attention_mask": mask.numpy(), "position_ids": positions.numpy(),
                     **{k: np.zeros(v["zeros"], np.float32) for k, v in past.items()}}
    fp16["decoder"] = fp16_entry(compare_fp16(out_dir / DECODER, decoder_feeds), "logits", DecoderGraph(lm),
                                 tuple(torch.from_numpy(v) for v in decoder_feeds.values()), vlm)

    import onnx

    graphs = {graph: onnx.load(str(out_dir / graph), load_external_data=False) for graph in (VISION, EMBED, DECODER)}
    profiles = {
        "tiling": tiling.to_dict(), "tiling_source": source or "the model's own tiling", "max_images": max_images,
        "onnx_opset": max(_opset(g) for g in graphs.values()),
        # the opset-17 operator TensorRT 8.5 (JetPack 5) has no importer for (the README says so)
        "layer_normalization": [name for name, g in graphs.items()
                                if any(n.op_type == "LayerNormalization" for n in g.graph.node)],
        # the graphs whose LayerNormalization nodes opset 16 decomposed into ReduceMean / Sub / Mul / Add / Sqrt / Div
        "layer_normalization_decomposed": decomposed,
        "image_tokens_per_tile": processor.image_seq_length,
        "vision": {"onnx": VISION, "input": "pixel_values", "output": "image_features",
                   "output_per_tile": features_shape, "profiles": vision_profiles, "range_profile": range_profile,
                   "other_counts": other_counts(found, tiling, max_images)},
        "embed": {"onnx": EMBED, "engine": "embed.plan", "shapes": _named(embed_shapes), "trtexec": embed_cmd},
        "decoder": {"onnx": DECODER, "engine": "decoder.plan", "shapes": _named(lm_shapes), "trtexec": decoder_cmd,
                    "reference_prompt": {"question": QUESTION, "layout": stitched.name, "tokens": n},
                    "reference_step": {"question": QUESTION, "images": 0, "past": m},
                    "max_sequence": longest, "max_input_len": max_input, "max_new_tokens": longest - max_input,
                    "max_sequence_cut": cut, "max_multimodal_len": multimodal,
                    "prompt_tokens": {"question": QUESTION, "by_layout": prompts, "longest": widest}},
    }
    report = fp16_report(fp16, clamped)
    _write_json(out_dir / PROFILES, profiles)
    _write_json(out_dir / FP16_REPORT, report)
    _write_json(out_dir / BUNDLE, {"format": "pocket-adapt tensorrt bundle", "version": 1, "tolerance": TOLERANCE,
                                   "checks": checks})
    shutil.copyfile(Path(__file__).with_name("tensorrt_verify.py"), out_dir / VERIFY)
    _check_graphs(out_dir)
    from .tensorrt_readme import bundle_readme

    files = [f.name for f in out_dir.iterdir() if f.is_file()] + [README]
    (out_dir / README).write_text(bundle_readme(vlm, processor, profiles, report, files), encoding="utf-8")
    return out_dir


def prompt_lengths(processor, found: list[Layout], tiling: TilingConfig) -> dict[str, int]:
    """Tokens of a prompt of QUESTION with each layout's images (image tokens, their start / end tokens and the chat
    template's text), as the processor encodes it: what TensorRT-LLM's max_input_len must hold."""
    question = [{"role": "user", "content": QUESTION}]
    return {x.name: len(processor.encode_tokens(question, processor.tiles_for_sizes(x.images, tiling)).input_ids)
            for x in found}


def sequence_limits(multimodal: int, positions: int, max_new_tokens: int, what: str = "the model"
                    ) -> tuple[int, int, str | None]:
    """(max_seq_len, max_input_len, cut) of the decoder: the most image tokens of a prompt (`multimodal`) plus
    TEXT_BUDGET text tokens, at most the model's `positions` (max_position_embeddings); max_input_len leaves
    `max_new_tokens` of it to the answer. `cut`: what a cut to `positions` took away (warned), else None."""
    wanted = multimodal + TEXT_BUDGET
    longest, cut = min(positions, wanted), None
    if wanted > positions:
        cut = (f"{what}: the decoder profile wants {wanted} tokens ({multimodal} image tokens + {TEXT_BUDGET} text) "
               f"but the model has max_position_embeddings {positions}; the decoder profile and TensorRT-LLM's "
               f"max_seq_len are cut to {positions}")
    max_input = longest - max_new_tokens
    if max_input <= multimodal:
        # a --max-new-tokens past the whole sequence was said as "leaves -998719 input tokens"
        left = f"leaves {max_input} input tokens of" if max_input > 0 else "leaves no input tokens in"
        raise TensorRTExportError(f"{what}: max_new_tokens {max_new_tokens} {left} the "
                                  f"{longest}-token sequence, not more than the {multimodal} image tokens of the "
                                  f"largest prompt; ask for fewer new tokens (--max-new-tokens) or fewer "
                                  f"images (--max-images)")
    if cut:  # only for an export that goes on: before a refusal it was a warning about a bundle never written
        warnings.warn(cut, stacklevel=3)
    return longest, max_input, cut


def convert_opset(path: Path, opset: int) -> int:
    """Rewrite the graph at `path` at ONNX opset `opset` in place (the weights in its .data file stay as they are)
    and return how many LayerNormalization nodes were decomposed (below opset 17, which has none: TensorRT 8.5).
    onnx's converter leaves ReduceMean & co. (opset < 18) with ReduceSum's noop_with_empty_axes, which they do not
    have: dropped where it holds the default, refused where not. An operator the target opset lacks (other than
    LayerNormalization) is refused naming it, not left to the converter's assertion."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path), load_external_data=False)
    if _opset(model) == opset:
        return 0
    # before any step: an opset-18 operator is refused naming it, not by a converter assertion at 17
    _refuse_missing_operators(model, opset, path.name, {"LayerNormalization"} if opset < 17 else set())
    decomposed = 0
    try:
        if opset < 17:  # LayerNormalization first, at 17 (ReduceMean's axes an attribute), then the opset step
            if _opset(model) > 17:
                model = version_converter.convert_version(model, 17)
            decomposed = decompose_layer_norm(model, path.name)
        converted = version_converter.convert_version(model, opset)
    except TensorRTExportError:
        raise
    except Exception as err:  # noqa: BLE001 - any converter failure names the graph and the opset
        raise TensorRTExportError(f"{path.name}: cannot convert to ONNX opset {opset} ({err})") from err
    for node in _all_nodes(converted.graph):
        if opset < 18 and node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            for attr in list(node.attribute):
                if attr.name == "noop_with_empty_axes":
                    if attr.i:
                        raise TensorRTExportError(f"{path.name}: {node.op_type} node {node.name!r} reduces nothing "
                                                  f"when given no axes, which opset {opset} cannot express")
                    node.attribute.remove(attr)
    if _opset(converted) != opset:
        raise TensorRTExportError(f"{path.name}: converted to ONNX opset {_opset(converted)}, not {opset}")
    onnx.save(converted, str(path))
    try:  # by path: the checker finds the weights' .data file beside it
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise TensorRTExportError(f"{path.name}: the graph converted to ONNX opset {opset} is invalid "
                                  f"({str(err).splitlines()[0]})") from err
    return decomposed


def _refuse_missing_operators(model, opset: int, what: str, lowered: set[str]) -> None:
    """Refuse a node of the default domain whose operator ONNX opset `opset` does not have (came later), but for
    those in `lowered` (decomposed before the conversion)."""
    from onnx import defs

    missing = {}
    for node in _all_nodes(model.graph):
        if node.domain in ("", "ai.onnx") and node.op_type not in missing and node.op_type not in lowered:
            try:
                defs.get_schema(node.op_type, opset, "")
            except defs.SchemaError:
                missing[node.op_type] = node.name
    if missing:
        named = ", ".join(f"{op} (node {name!r})" for op, name in missing.items())
        raise TensorRTExportError(f"{what}: ONNX opset {opset} has no {named}: the operator came with a later opset "
                                  f"and no lowering of it is known here; export at a later opset (--opset)")


def decompose_layer_norm(model, what: str = "the graph") -> int:
    """Replace every LayerNormalization node of `model` (opset 17, in place) by ReduceMean / Sub / Mul / Add / Sqrt /
    Div (opset 13 forms), as PyTorch computes it: the variance as the mean of (x - mean)^2. onnx's own function body
    for the operator takes mean(x^2) - mean(x)^2, which cancels where the mean is large and whose x^2 an fp16
    engine overflows for |x| > 256. Returns how many were replaced."""
    from onnx import helper

    count = 0
    for graph in _all_graphs(model.graph):
        types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
        types.update({t.name: t.data_type for t in graph.initializer})
        taken = {name for node in graph.node for name in (*node.input, *node.output)}
        nodes = []
        for node in graph.node:
            if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
                nodes.append(node)
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axis, epsilon, stash = attrs.get("axis", -1), attrs.get("epsilon", 1e-5), attrs.get("stash_type", 1)
            x, scale, bias = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else ""
            if axis >= 0:  # the reduced axes counted from the end need the rank
                rank = _rank(graph, x)
                if rank is None:
                    raise TensorRTExportError(f"{what}: LayerNormalization node {node.name!r} normalises from axis "
                                              f"{axis} of {x!r}, whose rank the graph does not record")
                axis -= rank
            base = node.output[0] or node.name

            def fresh(suffix: str, base=base) -> str:
                name, i = f"{base}/ln_{suffix}", 0
                while name in taken:
                    i += 1
                    name = f"{base}/ln_{suffix}_{i}"
                taken.add(name)
                return name

            def add(op: str, inputs: list[str], output: str | None = None, **kw) -> str:
                output = output or fresh(op.lower())
                nodes.append(helper.make_node(op, inputs, [output], name=fresh(f"{op}_node"), **kw))
                return output

            cast = types.get(x) != stash
            xs = add("Cast", [x], to=stash) if cast else x
            axes = list(range(axis, 0))
            mean = add("ReduceMean", [xs], node.output[1] if len(node.output) > 1 and node.output[1] else None,
                       axes=axes, keepdims=1)
            dev = add("Sub", [xs, mean])
            var = add("ReduceMean", [add("Mul", [dev, dev])], axes=axes, keepdims=1)
            eps = add("Constant", [], value=helper.make_tensor(fresh("epsilon"), stash, [], [epsilon]))
            std = add("Sqrt", [add("Add", [var, eps])])
            normed = add("Div", [dev, std])
            if cast:
                normed = add("CastLike", [normed, x])
            out = add("Mul", [normed, scale], None if bias else node.output[0])
            if bias:
                add("Add", [out, bias], node.output[0])
            if len(node.output) > 2 and node.output[2]:
                add("Reciprocal", [std], node.output[2])
            count += 1
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _rank(graph, name: str) -> int | None:
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def clamp_fp16_constants(path: Path) -> list[dict]:
    """Set every inline float constant of the graph at `path` below fp16's range (an attention mask's fill:
    -3.4e38, -inf) to FP16_MASK_FILL, in place, and return what was changed (name, consumers, old value); a constant
    above fp16's range, which cannot be a mask fill, is refused naming the node."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    users: dict[str, list[str]] = {}
    for node in _all_nodes(model.graph):
        for name in node.input:
            users.setdefault(name, []).append(f"{node.op_type} {node.name}")
    found = []

    def fix(tensor, name: str) -> None:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type not in (
                onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return
        array = numpy_helper.to_array(tensor)
        high, low = (array > FP16_MAX) | np.isnan(array), array < -FP16_MAX
        if high.any():
            raise TensorRTExportError(f"{path.name}: constant {name!r} (used by {', '.join(users.get(name, ['?']))}) "
                                      f"holds {float(array[high].flat[0]):g}, above fp16's {FP16_MAX:g}; an fp16 "
                                      "engine would make it inf")
        if low.any():
            found.append({"constant": name, "used_by": users.get(name, []), "was": float(array[low].min()),
                          "now": FP16_MASK_FILL})
            tensor.CopyFrom(numpy_helper.from_array(np.where(low, FP16_MASK_FILL, array).astype(array.dtype),
                                                    tensor.name))

    for graph in _all_graphs(model.graph):
        for init in graph.initializer:
            fix(init, init.name)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    fix(attr.t, node.output[0])
                elif node.op_type == "Constant" and attr.name == "value_float" and abs(attr.f) > FP16_MAX:
                    raise TensorRTExportError(f"{path.name}: Constant node {node.name!r} holds {attr.f:g}, beyond "
                                              f"fp16's {FP16_MAX:g}")
    if found:
        onnx.save(model, str(path))
    return found


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _all_graphs(graph):
    """`graph` and every subgraph (If / Loop bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.ByteSize():
                yield from _all_graphs(attr.g)
            for sub in attr.graphs:
                yield from _all_graphs(sub)


def _all_nodes(graph):
    for sub in _all_graphs(graph):
        yield from sub.node


def _check_graphs(bundle: Path) -> None:
    """verify.py's onnxruntime mode on the new bundle: the fp32 graphs must give the PyTorch references, or the
    export fails (the README says this held when the bundle was written)."""
    import io

    from .tensorrt_verify import verify

    log = io.StringIO()
    if verify(bundle, "onnxruntime", out=log) != 0:
        failed = [line for line in log.getvalue().splitlines() if line.startswith("FAIL")]
        raise TensorRTExportError("the ONNX graphs do not reproduce PyTorch on the reference inputs: " + "; ".join(failed))


def example(size: tuple[int, int]) -> Image.Image:
    """The repository's example image resized to `size` (what a camera or a stitched view would deliver)."""
    with Image.open(assets_dir() / "example.png") as image:
        return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


class References:
    """.npy files under references/, written without pickle."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(exist_ok=True)

    def save(self, check: str, tensor: str, value: torch.Tensor) -> dict[str, str]:
        array = value.detach().cpu().numpy()
        array = array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)
        path = self.folder / f"{check}.{tensor}.npy"
        np.save(path, array, allow_pickle=False)
        return {"file": f"{REFERENCES}/{path.name}"}


def trtexec(onnx: str, engine: str, shapes: dict[str, tuple[list[int], list[int], list[int]]]) -> str:
    """The trtexec command building `engine` from `onnx` in fp16 with one profile (min, opt, max per input)."""
    spec = [",".join(f"{name}:{'x'.join(map(str, s[i]))}" for name, s in shapes.items()) for i in range(3)]
    return (f"trtexec --onnx={onnx} --saveEngine={engine} --fp16 --minShapes={spec[0]} --optShapes={spec[1]} "
            f"--maxShapes={spec[2]}")


def fp16_entry(outputs: dict[str, dict], checked: str, module: torch.nn.Module, args: tuple, vlm) -> dict:
    """One graph's fp16 comparison plus the fp32 magnitudes of its PyTorch module (eager attention, as exported);
    `checked`: the output verify.py compares (judged at TensorRT's tolerance; the others are informative)."""
    tol = TOLERANCE["tensorrt"]
    stats = outputs[checked]
    stats["within_tolerance"] = bool(stats["max_abs_error"] <= tol["atol"] + tol["rtol"] * stats["max_abs_fp32"]
                                     and not stats["nonfinite_fp16"])
    with eager_attention(vlm):
        magnitudes = scan_magnitudes(module, args)
    return {"outputs": outputs, "magnitudes": magnitudes}


def fp16_report(graphs: dict[str, dict], clamped: list[dict] | None = None) -> dict:
    import onnxruntime

    judged = [(g, o, s) for g, e in graphs.items() for o, s in e["outputs"].items() if "within_tolerance" in s]
    worst = max(judged, key=lambda t: t[2]["relative_error"])
    overflow = sorted({f"{r['module']}:{r['op']}" for e in graphs.values() for r in e["magnitudes"]["overflow"]})
    norms = sorted({f"{r['module']}:{r['op']}" for e in graphs.values()
                    for r in e["magnitudes"]["norm_sum_of_squares_over_fp16"]})
    ok = all(s["within_tolerance"] for _, _, s in judged)
    nonfinite = [f"{g}/{o} ({s['nonfinite_fp16']})" for g, e in graphs.items() for o, s in e["outputs"].items()
                 if s.get("nonfinite_fp16")]
    summary = (f"fp16 check: {'within' if ok else 'OUTSIDE'} tolerance"
               + (f"; inf or NaN in fp16 in {', '.join(nonfinite)}" if nonfinite else "") + "; worst relative error "
               f"{worst[2]['relative_error']:.2e} ({worst[0]}/{worst[1]}); {len(overflow)} operator(s) above "
               f"fp16's 65504 in fp32{': ' + ', '.join(overflow[:3]) if overflow else ''}; {len(norms)} "
               f"normalisation(s) whose sum of squares exceeds it"
               + (f"; {len(clamped)} constant(s) below fp16's range set to {FP16_MASK_FILL:g} (attention-mask fills: "
                  + ", ".join(f"{c['graph']}:{c['constant']}" for c in clamped[:3]) + ")" if clamped else ""))
    return {
        "summary": summary, "within_tolerance": ok, "tolerance": TOLERANCE["tensorrt"],
        "how": "each graph converted by onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types) "
               "and run in onnxruntime " + onnxruntime.__version__ + " (CPU) against the fp32 graph on the reference "
               "inputs; relative_error = max_abs_error / max|fp32 output|; magnitudes: the PyTorch module in fp32, "
               "largest |value| per (module, aten operator), fp16 overflows above 65504; within_tolerance judges the "
               "outputs verify.py compares (image_features, logits), the KV cache is informative",
        "graphs": graphs,
        "clamped_constants": clamped or [],
    }


def _named(shapes: dict) -> dict:
    return {name: {"min": s[0], "opt": s[1], "max": s[2]} for name, s in shapes.items()}


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
