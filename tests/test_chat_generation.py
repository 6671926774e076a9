"""`adapt chat`'s generation options as a user gives them, and the sampling they lead to."""

from __future__ import annotations

import json

import pytest

from adapt.cli import MAX_SEED, build_parser


@pytest.mark.parametrize("seed", ["-1", str(MAX_SEED + 1), "99999999999999999999999"])
def test_a_seed_no_runtime_reads_alike_is_a_usage_error(seed, capsys):
    """A negative seed (numpy refuses it), one above 2**64 (torch.manual_seed's traceback after the model had loaded)
    or above 32 bits (llama.cpp's helper wraps it onto another seed's draw) is a usage error naming --seed."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["chat", "--seed", seed])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and f"0 to {MAX_SEED}" in err and "Traceback" not in err


def test_every_seed_in_range_is_taken():
    assert [build_parser().parse_args(["chat", "--seed", s]).seed for s in ("0", str(MAX_SEED))] == [0, MAX_SEED]


def test_chat_samples_from_the_whole_softmax_as_the_export_runtimes_do(monkeypatch, capsys):
    """--temperature T drew, on the PyTorch model, from transformers' default top_k=50 only (the export runtimes'
    pick_token draws from the whole softmax): with every token about as likely, 400 first tokens drawn for one prompt
    now reach far more than 50 distinct ones, and `adapt chat` generates with these options."""
    import torch

    import model
    from adapt.cli import main
    from model.generation import sampling_options

    vlm, processor = model.load("pocket-tiny-scratch")
    with torch.no_grad():  # logits all near 0, not tied (top-k keeps ties): a near-uniform softmax
        head = vlm.language_model.get_output_embeddings().weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)) * 1e-4)
    inputs = processor([{"role": "user", "content": "Hi"}]).to_model_inputs()
    rows = {name: value.expand(400, -1) for name, value in inputs.items()}  # 400 independent draws of one step
    torch.manual_seed(0)
    first = vlm.generate(**rows, max_new_tokens=1, pad_token_id=processor.pad_token_id, **sampling_options(1.0))
    assert len(set(first[:, 0].tolist())) > 150
    assert sampling_options(0.0) == {"do_sample": False}
    assert sampling_options(1e-4) == {"do_sample": False}  # below MIN_TEMPERATURE: greedy, as pick_token

    asked: list[dict] = []
    real_load = model.load

    def recording_load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        generate = vlm.generate
        monkeypatch.setattr(vlm, "generate", lambda *a, **kw: asked.append(kw) or generate(*a, **kw))
        return vlm, processor

    monkeypatch.setattr(model, "load", recording_load)
    assert main(["chat", "Hi", "--temperature", "0.7", "--max-new-tokens", "2"]) == 0
    capsys.readouterr()
    assert asked and sampling_options(0.7).items() <= asked[0].items()


def test_max_tiles_below_the_models_min_tiles_lowers_both_as_the_export_runtimes_do(monkeypatch, capsys):
    """`adapt chat --max-tiles 2` on a model trained with min_tiles 4 failed on the PyTorch model with
    "TilingConfig.min_tiles (4) must be <= max_tiles (2)" (a config's words, not the flag's), while the export
    runtimes lower min_tiles to the cap; now PyTorch does too and answers on at most 2 tiles (+ thumbnail), saying
    once on stderr that the model's min_tiles was lowered (it was done without a word)."""
    import dataclasses

    import model
    from adapt.cli import main

    real_load = model.load

    def min4_load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        processor.tiling = dataclasses.replace(processor.tiling, min_tiles=4)
        return vlm, processor

    monkeypatch.setattr(model, "load", min4_load)
    assert main(["chat", "--example-image", "--max-tiles", "2", "--max-new-tokens", "1"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s), 3 tile(s)" in err
    assert err.count("note: --max-tiles 2 is below the model's min_tiles 4: using 2-2 tiles") == 1
    assert main(["chat", "--example-image", "--max-tiles", "4", "--max-new-tokens", "1"]) == 0
    assert "min_tiles" not in capsys.readouterr().err  # a cap at min_tiles lowers nothing


def test_max_tiles_below_an_exports_min_tiles_is_said_once(monkeypatch, tmp_path, capsys):
    """An export runtime got min_tiles lowered to `--max-tiles` silently too; the note now says so, and the runtime
    is asked with the lowered tiling."""
    from adapt.cli import main
    from deploy.runtimes import RUNTIMES, Answer
    from model.tiling import TilingConfig
    from tests.export_fakes import fake_export_vlm, timings

    asked: list[dict] = []
    FakeVLM = fake_export_vlm(Answer("a", [1], "prompt", False, timings(1)), TilingConfig(min_tiles=2, max_tiles=6),
                              asked)
    monkeypatch.setattr(type(RUNTIMES["onnx"]), "load", lambda self, which: FakeVLM)
    assert main(["chat", "--runtime", "onnx", "--model", str(tmp_path), "--max-tiles", "1", "hello"]) == 0
    assert capsys.readouterr().err.count("note: --max-tiles 1 is below the model's min_tiles 2: using 1-1 tiles") == 1
    assert (asked[0]["tiling"].min_tiles, asked[0]["tiling"].max_tiles) == (1, 1)


def _template_with_stops(tmp_path, *stops: str) -> str:
    from model.chat import _chat_dir

    text = (_chat_dir() / "pocket-tiny.yaml").read_text(encoding="utf-8")
    text = text.replace('stop_strings: ["<|im_end|>", "<|endoftext|>"]',
                        "stop_strings: " + json.dumps(["<|im_end|>", "<|endoftext|>", *stops]))
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_stop_string_of_several_tokens_ends_the_answer_exactly(monkeypatch, tmp_path, capsys):
    """A template's stop string that is no single token ("###", "ros") was left out of the stop ids, so `adapt chat`
    ran on past it ("red ## blue ###Human: hi"); now generation stops on it as text and the answer is cut exactly
    before it, however the tokens split it (inside "cross", across "#", "#", "#"), and one in the prompt stops
    nothing."""
    import torch

    import model
    from adapt.cli import main

    real_load = model.load
    template = {"path": _template_with_stops(tmp_path, "ros")}
    monkeypatch.setattr(model, "load", lambda *a, **kw: real_load(*a, **kw, chat_template=template["path"]))
    assert main(["chat", "--example-image", "--max-new-tokens", "8"]) == 0  # pocket-tiny answers "cross"
    out, err = capsys.readouterr()
    assert out == "c\n" and "[cut at" not in err

    template["path"] = _template_with_stops(tmp_path, "shapes")  # in the default question only
    assert main(["chat", "--example-image", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == "cross\n"

    template["path"] = _template_with_stops(tmp_path, "###")

    def scripted_load(*args, **kwargs):  # a model that answers "red ## blue ###Human: hi", a token at a time
        vlm, processor = real_load(*args, **kwargs, chat_template=template["path"])

        def generate(*a, streamer, **kw):
            assert kw["stop_strings"] == ["###"] and kw["tokenizer"] is processor.tokenizer
            streamer.put(torch.tensor([[]], dtype=torch.long))
            for i in processor.tokenizer.encode("red ## blue ###Human: hi", add_special_tokens=False):
                streamer.put(torch.tensor([i]))
            streamer.end()

        monkeypatch.setattr(vlm, "generate", generate)
        return vlm, processor

    monkeypatch.setattr(model, "load", scripted_load)
    assert main(["chat", "--example-image", "--max-new-tokens", "30"]) == 0
    out, err = capsys.readouterr()
    assert out == "red ## blue\n" and "[cut at" not in err


def test_eval_and_decode_cut_answers_at_a_stop_string_of_several_tokens(monkeypatch, tmp_path):
    """Only `adapt chat` honoured a stop string that is no single token: `processor.decode` (adapt eval, the export
    runtimes, the demo's text) kept "red ## blue ###Human: hi" whole and eval scored the made-up turn after the stop;
    generation in eval and the demo ran on past it to max_new_tokens."""
    import torch

    import model
    from adapt.data.samples import Record
    from adapt.evaluate import predict

    vlm, processor = model.load("pocket-tiny", chat_template=_template_with_stops(tmp_path, "###"))
    ids = processor.tokenizer.encode("red ## blue ###Human: hi", add_special_tokens=False)
    assert processor.text_stop_strings == ["###"]
    assert processor.decode(ids) == "red ## blue"
    assert processor.decode(ids, cut_text_stops=False) == "red ## blue ###Human: hi"
    seen = {}

    def generate(*a, **kw):
        seen.update(kw)
        return torch.tensor([ids])

    monkeypatch.setattr(vlm, "generate", generate)
    record = Record("s", 1, [{"from": "human", "value": "Colours?"}, {"from": "gpt", "value": "red ## blue"}], [], [])
    [pred] = predict(vlm, processor, [record], progress=False)
    assert pred.prediction == "red ## blue" and pred.scores["exact_match"] == 1.0
    assert seen["stop_strings"] == ["###"] and seen["tokenizer"] is processor.tokenizer
