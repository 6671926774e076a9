"""`adapt chat` on PyTorch at the end of the model's context: the answer's last token comes from the context's last
position, so prompt + answer is one more than the context, as llama.cpp and the exported runtimes count; the same
question then gets the same number of tokens on each runtime."""

from __future__ import annotations

from adapt.cli import main


def test_the_answer_uses_the_contexts_last_position(monkeypatch, capsys):
    import model

    real_load = model.load
    seen: dict = {}

    def load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        generate = vlm.generate

        def recording(*a, **kw):
            seen["prompt"] = kw["input_ids"].shape[-1]
            out = generate(*a, **kw)
            seen["answer"] = out.shape[-1]
            return out

        monkeypatch.setattr(vlm.config.text_config, "max_position_embeddings", seen["context"])
        monkeypatch.setattr(vlm, "generate", recording)
        return vlm, processor

    monkeypatch.setattr(model, "load", load)
    chat = ["chat", "--model", "pocket-tiny-scratch", "--example-image", "--keep-repeats", "--max-new-tokens"]
    seen["context"] = 2048
    assert main([*chat, "8"]) == 0
    prompt = seen["prompt"]
    assert seen["answer"] == 8  # an untrained model answers on and on: the cut below is the context's
    capsys.readouterr()
    seen["context"] = prompt + 3  # room for 4 new tokens: positions prompt .. prompt + 2, and the last one's output
    assert main([*chat, "64"]) == 0
    assert seen["answer"] == 4
    assert "[cut at 4 tokens: the model's context is full]" in capsys.readouterr().err
    seen["context"] = prompt  # a prompt that fills the context: the one token its last position gives
    assert main([*chat, "64"]) == 0
    assert seen["answer"] == 1
    assert "[cut at 1 tokens: the model's context is full]" in capsys.readouterr().err
