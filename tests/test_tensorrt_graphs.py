"""What deploy/tensorrt.py does to the ONNX graphs and the decoder limits before the bundle is written, on
hand-made graphs: fast, no export. The whole bundle is checked in tests/test_tensorrt.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .deps import require

require("onnx", "the deploy extra: ONNX export")
require("onnxruntime", "the deploy extra: ONNX Runtime")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy.tensorrt import (  # noqa: E402
    FP16_MASK_FILL,
    TEXT_BUDGET,
    TensorRTExportError,
    clamp_fp16_constants,
    convert_opset,
    sequence_limits,
)

MIN32 = float(np.finfo(np.float32).min)


def _masked_softmax(path: Path, fill: float) -> Path:
    """softmax(scores + where(mask, 0, fill)), the attention mask as torch.onnx writes it (opset 18)."""
    nodes = [helper.make_node("Where", ["mask", "zero", "fill"], ["bias"], name="node_where"),
             helper.make_node("Add", ["scores", "bias"], ["masked"], name="node_add"),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="node_softmax")]
    graph = helper.make_graph(
        nodes, "mask", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4]),
                        helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.array(fill, np.float32), "fill")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _run(path: Path, **feeds) -> list[np.ndarray]:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_mask_fill_below_fp16_is_clamped_and_reported(tmp_path):
    """torch.finfo(float32).min as a mask fill is -inf in fp16 (a fully masked row's softmax is NaN); the graph gets
    a fill fp16 holds, the masked probabilities stay 0 in fp32, and the change names the constant and its node."""
    path = _masked_softmax(tmp_path / "decoder.onnx", MIN32)
    scores = np.array([[0.5, -2.0, 3.0, 1.0]], np.float32)
    mask = np.array([[True, True, False, False]])
    before = _run(path, scores=scores, mask=mask)[0]
    found = clamp_fp16_constants(path)
    assert found == [{"constant": "fill", "used_by": ["Where node_where"], "was": MIN32, "now": FP16_MASK_FILL}]
    fill = next(i for i in onnx.load(str(path)).graph.initializer if i.name == "fill")
    assert float(numpy_helper.to_array(fill)) == FP16_MASK_FILL
    assert np.isfinite(np.float16(FP16_MASK_FILL)) and np.isfinite(np.float16(FP16_MASK_FILL - 1000))
    after = _run(path, scores=scores, mask=mask)[0]
    np.testing.assert_allclose(after, before, atol=1e-7)
    assert after[0, 2:].max() == 0
    fully = _run(path, scores=scores.astype(np.float16).astype(np.float32), mask=np.zeros((1, 4), bool))[0]
    assert np.isfinite(fully).all()
    assert clamp_fp16_constants(path) == []  # nothing left to change


def test_constant_above_fp16_is_refused_naming_it(tmp_path):
    path = _masked_softmax(tmp_path / "decoder.onnx", 1e6)
    with pytest.raises(TensorRTExportError,
                       match=r"decoder.onnx: constant 'fill' \(used by Where node_where\) holds 1e\+06"):
        clamp_fp16_constants(path)


def test_opset_17_conversion_gives_a_valid_graph_with_the_same_outputs(tmp_path):
    """onnx's converter leaves ReduceMean (axes input at 18, attribute at 17) with an attribute opset 17 does not
    have, which onnxruntime refuses; the converted graph is valid, at opset 17, and computes the same."""
    path = tmp_path / "norm.onnx"
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["mean"], keepdims=1, noop_with_empty_axes=0,
                              name="node_mean"),
             helper.make_node("Sqrt", ["mean"], ["rms"]), helper.make_node("Div", ["x", "rms"], ["y"])]
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([-1], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    before = _run(path, x=x)[0]
    convert_opset(path, 17)
    converted = onnx.load(str(path))
    assert [(o.domain, o.version) for o in converted.opset_import] == [("", 17)]
    onnx.checker.check_model(converted)
    np.testing.assert_allclose(_run(path, x=x)[0], before, rtol=1e-6)


def _layer_norm(path: Path, axis: int, stats: bool = False, bias: bool = True) -> Path:
    """One LayerNormalization over x (2, 3, 4) from `axis` (opset 18, as torch.onnx writes it); `stats`: its Mean and
    InvStdDev outputs too."""
    outputs = ["y", "mean", "inv_std"] if stats else ["y"]
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"] if bias else ["x", "scale"], outputs,
                            axis=axis, epsilon=1e-3, name="node_ln")
    shape = [2, 3, 4][axis:]
    reduced = [2, 3, 4][:axis] + [1] * len(shape)
    graph = helper.make_graph(
        [node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]),
         *(helper.make_tensor_value_info(n, TensorProto.FLOAT, reduced) for n in outputs[1:])],
        [numpy_helper.from_array(np.linspace(0.5, 2, np.prod(shape), dtype=np.float32).reshape(shape), "scale"),
         numpy_helper.from_array(np.linspace(-1, 1, np.prod(shape), dtype=np.float32).reshape(shape), "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("axis, stats, bias", [(-1, False, True), (1, True, True), (-2, True, False)])
def test_opset_16_decomposes_layer_normalization(tmp_path, axis, stats, bias):
    """TensorRT 8.5 (JetPack 5) has no LayerNormalization importer: at opset 16 none is left, and the graph (its
    Mean / InvStdDev outputs too) computes layer norm, on rows whose mean is far from zero."""
    x = (np.random.default_rng(0).standard_normal((2, 3, 4)) + 30).astype(np.float32)
    path = _layer_norm(tmp_path / "ln.onnx", axis, stats, bias)
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(path)).graph.initializer}
    axes = tuple(range(axis % 3, 3))
    mean = x.astype(np.float64).mean(axes, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + 1e-3)
    y = (x - mean) / std * init["scale"] + (init["bias"] if bias else 0)
    assert convert_opset(path, 16) == 1
    converted = onnx.load(str(path))
    assert [(o.domain, o.version) for o in converted.opset_import] == [("", 16)]
    assert "LayerNormalization" not in {n.op_type for n in converted.graph.node}
    onnx.checker.check_model(converted)
    for got, expected in zip(_run(path, x=x), [y, mean, 1 / std][:3 if stats else 1]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_an_operator_opset_16_lacks_is_refused_naming_it(tmp_path):
    path = tmp_path / "bits.onnx"
    graph = helper.make_graph([helper.make_node("BitwiseAnd", ["a", "b"], ["c"], name="node_and")], "bits",
                              [helper.make_tensor_value_info(n, TensorProto.INT32, [2]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(TensorRTExportError, match=r"bits.onnx: ONNX opset 16 has no BitwiseAnd \(node 'node_and'\)"):
        convert_opset(path, 16)


def test_max_input_len_leaves_room_for_the_answer():
    longest, max_input, cut = sequence_limits(288, 32768, 256)
    assert (longest, max_input, cut) == (288 + TEXT_BUDGET, 288 + TEXT_BUDGET - 256, None)
    with pytest.raises(TensorRTExportError, match="max_new_tokens 1100 leaves 212 input tokens"):
        sequence_limits(288, 32768, 1100)


def test_an_answer_longer_than_the_whole_sequence_is_refused_in_words_without_the_cut_warning(recwarn):
    """`--max-new-tokens 999999` said "leaves -998719 input tokens", after warning that the profile was cut."""
    with pytest.raises(TensorRTExportError, match=r"^the model: max_new_tokens 999999 leaves no input tokens in the "
                                                  r"1280-token sequence, not more than the 256 image tokens"):
        sequence_limits(256, 32768, 999999)
    with pytest.raises(TensorRTExportError, match="max_new_tokens 256 leaves 3840 input tokens of the 4096-token"):
        sequence_limits(15984, 4096, 256)  # --max-images 999: no warning that a profile is cut first
    assert not recwarn.list


def test_a_cut_to_max_position_embeddings_is_said():
    with pytest.warns(UserWarning) as caught:
        longest, max_input, cut = sequence_limits(3328, 4096, 256, "recipe r.yaml")
    assert (longest, max_input) == (4096, 3840)
    assert str(caught[0].message) == cut
    assert cut.startswith("recipe r.yaml: the decoder profile wants 4352 tokens (3328 image tokens + 1024 text) but "
                          "the model has max_position_embeddings 4096")


def test_opset_is_a_tensorrt_choice(tmp_path, capsys):
    from adapt.cli import main

    assert main(["export", "-f", "onnx", "--model", "pocket-tiny", "--opset", "17", "--out", str(tmp_path / "a")]) == 1
    assert "--opset applies to --format tensorrt only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "-f", "tensorrt", "--model", "pocket-tiny", "--opset", "15", "--out", str(tmp_path / "b")])
    assert "invalid choice: 15" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_write_tensorrt_refuses_an_opset_or_answer_length_it_cannot_serve(tmp_path):
    from deploy.tensorrt import write_tensorrt

    with pytest.raises(TensorRTExportError,
                       match="ONNX opset 15 is not one the bundle is written at; choose one of 16, 17, 18"):
        write_tensorrt(None, None, tmp_path, opset=15)
    with pytest.raises(TensorRTExportError, match="max_new_tokens must be a whole number >= 1, got 0"):
        write_tensorrt(None, None, tmp_path, max_new_tokens=0)


@pytest.mark.parametrize("positions, max_new_tokens", [(220, 1), (480, 256)])
def test_a_reference_prompt_longer_than_the_decoder_allows_is_refused_before_the_export(
        positions, max_new_tokens, tmp_path, monkeypatch):
    """pocket-tiny, driving tiling (13 tiles x 16 tokens), one image: the stitched reference prompt is 250 tokens.
    max_position_embeddings 220 cuts the decoder's max to 220 (opt 250 > max: trtexec refuses the profile);
    480 leaves max_input_len 224 < 250. Both are refused, naming the numbers, before the ONNX export starts."""
    import copy

    import model
    from adapt.recipe import load_recipe
    from deploy import tensorrt

    def reached(*args, **kwargs):
        raise AssertionError("the export started: the setting was not refused up front")

    monkeypatch.setattr(tensorrt, "write_onnx", reached)
    vlm, processor = model.load("pocket-tiny")
    vlm = copy.deepcopy(vlm)
    vlm.config.text_config.max_position_embeddings = positions
    tiling = load_recipe(Path(__file__).resolve().parents[1] / "templates/recipes/driving_pocket-tiny_full.yaml"
                         ).tiling_for(processor.tiling)
    with pytest.warns(UserWarning, match=f"max_position_embeddings {positions}"), \
            pytest.raises(TensorRTExportError, match=rf"reference prompt .* is 250 tokens, more than max_input_len "
                          rf"{positions - max_new_tokens} \(max_seq_len {positions} - max_new_tokens {max_new_tokens}"):
        tensorrt.write_tensorrt(vlm, processor, tmp_path, tiling=tiling, max_images=1, max_new_tokens=max_new_tokens)


def test_every_prompt_tile_count_has_an_engine_route():
    """Fixed vision engines take exactly their own count; every prompt of up to max_images images (the images share
    max_tiles, each any grid it can get) adds up to a count the range engine takes and the fixed engines can be run
    in pieces for. With the driving tiling (max_tiles 12) two images give up to 7 + 7 = 14 tiles, which no fixed
    engine (1, 13, 18) takes: 13 + 1."""
    import itertools

    import model
    from adapt.recipe import load_recipe
    from deploy.tensorrt import layouts, other_counts, split_tiles, tile_counts

    _, processor = model.load("pocket-tiny")
    tiling = load_recipe(Path(__file__).resolve().parents[1] / "templates/recipes/driving_pocket-tiny_full.yaml"
                         ).tiling_for(processor.tiling)
    found = layouts(processor, tiling, 6)
    other = other_counts(found, tiling, 6)
    assert other == {"range": [1, 18], "fixed": [1, 13, 18],
                     "example": {"images": 2, "tiles": 14, "each": 7, "split": [13, 1]}}
    low, high = other["range"]
    for n in range(1, 7):
        for each in itertools.combinations_with_replacement(tile_counts(tiling.for_images(n)), n):
            total = sum(each)
            assert low <= total <= high, (n, each)
            pieces = split_tiles(total, other["fixed"])
            assert pieces is not None and sum(pieces) == total and set(pieces) <= set(other["fixed"]), (n, each)
    assert split_tiles(5, [3]) is None and split_tiles(6, [1, 3]) == [3, 3]


def test_max_new_tokens_is_a_tensorrt_flag_that_reaches_the_writer(tmp_path, capsys, monkeypatch):
    """The refusals of a too-long answer advise --max-new-tokens: `adapt export -f tensorrt` takes it (other formats
    refuse it) and hands it to write_tensorrt, which refuses a value that leaves no room, naming the flag."""
    from adapt.cli import main
    from deploy import tensorrt

    def reached(*args, **kwargs):
        raise AssertionError("the export started: the setting was not refused up front")

    monkeypatch.setattr(tensorrt, "write_onnx", reached)
    assert main(["export", "-f", "onnx", "--model", "pocket-tiny", "--max-new-tokens", "8",
                 "--out", str(tmp_path / "a")]) == 1
    assert "--max-new-tokens applies to --format tensorrt only" in capsys.readouterr().err
    assert main(["export", "-f", "tensorrt", "--model", "pocket-tiny", "--max-new-tokens", "100000",
                 "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "max_new_tokens 100000 leaves" in err and "fewer new tokens (--max-new-tokens)" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_readme_opset_note_says_what_is_known_of_each_jetpack():
    """The README claimed TensorRT 8.5 (JetPack 5) parses the opset-17 graphs; its ONNX parser has no importer for
    LayerNormalization (added in 8.6), which the vision graph holds, so the note says JetPack 5 cannot build it."""
    from deploy.tensorrt_readme import _opset_note

    def flat(text: str) -> str:
        return " ".join(text.split())

    note = flat(_opset_note(17, ["vision.onnx"]))
    assert note.startswith("The graphs are ONNX opset 17, which TensorRT 8.6 (JetPack 6.0) and 10.3 (JetPack 6.1)")
    assert "TensorRT 8.5 (JetPack 5) cannot build this bundle: `vision.onnx` holds LayerNormalization" in note
    assert "every JetPack" not in note and "8.5 (JetPack 5)," not in note
    assert "No graph holds LayerNormalization" in flat(_opset_note(17, []))
    assert "a graph holding one does not parse there" in flat(_opset_note(17))  # a bundle that did not record them
    assert "export again with `--opset 16` for it, which decomposes it" in note
    note = flat(_opset_note(16, [], ["vision.onnx"]))
    assert note.startswith("The graphs are ONNX opset 16, for TensorRT 8.5 (JetPack 5): every LayerNormalization")
    assert "decomposed into ReduceMean / Sub / Mul / Add / Sqrt / Div (in `vision.onnx`)" in note
    note = flat(_opset_note(18, ["vision.onnx", "decoder.onnx"]))
    assert "build with TensorRT 10" in note and "8.6 (JetPack 6.0) parses this opset is unconfirmed" in note
    assert "`vision.onnx`, `decoder.onnx` hold LayerNormalization" in note
    assert all(len(line) <= 115 for line in _opset_note(18, ["vision.onnx"]).splitlines())
