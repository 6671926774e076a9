"""`adapt chat --interactive`: follow-up questions about the same images, read from stdin."""

from __future__ import annotations

import io
import sys

import pytest

from adapt.cli import DEFAULT_QUESTION, main


@pytest.fixture()
def recorded(monkeypatch):
    """model.load whose model records the input ids of every generate (and, with `context`, a shorter context)."""
    import model

    real_load = model.load
    seen: dict = {"prompts": [], "context": None}

    def load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        generate = vlm.generate
        if seen["context"] is not None:
            monkeypatch.setattr(vlm.config.text_config, "max_position_embeddings", seen["context"])
        monkeypatch.setattr(vlm, "generate", lambda *a, **kw: seen["prompts"].append(kw["input_ids"][0].tolist())
                            or generate(*a, **kw))
        seen["processor"] = processor
        return vlm, processor

    monkeypatch.setattr(model, "load", load)
    return seen


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_follow_up_questions_carry_the_conversation(monkeypatch, capsys, recorded):
    """Two questions piped on stdin are asked after the first, each with the conversation so far: the earlier answers
    as assistant turns, rendered by the chat template as training renders a multi-turn conversation, the image once
    (in the first turn); the input's end stops the session."""
    from model.resources import assets_dir

    _stdin(monkeypatch, "Which colour is it?\nAnd the background?\n")
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "4"]) == 0
    answers = capsys.readouterr().out.splitlines()
    prompts, processor = recorded["prompts"], recorded["processor"]
    assert len(prompts) == len(answers) == 3
    image = [str(assets_dir() / "example.png")]
    history = [{"role": "user", "content": DEFAULT_QUESTION}, {"role": "assistant", "content": answers[0]},
               {"role": "user", "content": "Which colour is it?"}]
    assert prompts[1] == processor(history, images=image).input_ids.tolist()
    history += [{"role": "assistant", "content": answers[1]}, {"role": "user", "content": "And the background?"}]
    assert prompts[2] == processor(history, images=image).input_ids.tolist()
    start = processor.tokenizer.convert_tokens_to_ids("<img>")
    assert [p.count(start) for p in prompts] == [1, 1, 1]
    assert f"assistant\n{answers[0]}<|im_end|>" in processor.tokenizer.decode(prompts[2])


@pytest.mark.parametrize("end", ["\n", "/exit\n"])
def test_an_empty_line_or_exit_ends_the_session(monkeypatch, capsys, recorded, end):
    _stdin(monkeypatch, end + "never asked\n")
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "2"]) == 0
    assert len(recorded["prompts"]) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_a_prompt_on_stderr_says_it_waits_for_a_question_at_a_terminal(monkeypatch, capsys, recorded, terminal):
    """At a terminal, a wait for the next question looked like a hung run; a "> " on stderr (not in the answers on
    stdout) now shows it before each read. Piped questions get none: no one watches it."""
    monkeypatch.setattr(sys, "stdin", (_Terminal if terminal else io.StringIO)("Which colour?\n\n"))
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "2"]) == 0
    out, err = capsys.readouterr()
    assert len(recorded["prompts"]) == 2 and len(out.splitlines()) == 2 and "> " not in out
    assert err.count("> ") == (2 if terminal else 0), err


def test_a_bad_follow_up_is_refused_and_the_session_goes_on(monkeypatch, capsys, recorded):
    """A follow-up with <image> (the images stay with the first question) or a control token is refused with its
    reason, and the next question is asked with the history unchanged."""
    _stdin(monkeypatch, "Where is <image>?\nSay <|im_end|> now\nWhich colour?\n")
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "a follow-up question cannot hold <image>" in err and "'<|im_end|>', a control token" in err
    assert len(recorded["prompts"]) == 2
    tail = recorded["processor"].tokenizer.decode(recorded["prompts"][1])
    assert "Which colour?" in tail and "now" not in tail


def test_an_answer_with_a_placeholder_does_not_stick_the_session(monkeypatch, capsys, recorded):
    """An answer holding <image> or a control token as text (the processor refuses them in an answer) is kept in the
    history without them, with a note: every later question is still answered, not refused."""
    import adapt.cli as cli

    real_turn = cli._chat_turn
    calls = []

    def turn(*args, **kwargs):
        real_turn(*args, **kwargs)
        calls.append(1)
        return "a red <image> circle<|im_start|>" if len(calls) == 1 else "ok"

    monkeypatch.setattr(cli, "_chat_turn", turn)
    _stdin(monkeypatch, "Which colour?\nAnd the size?\n")
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "ask again" not in err
    assert "the answer's <image>, <|im_start|> left out of the conversation's history" in err
    assert len(recorded["prompts"]) == 3
    tail = recorded["processor"].tokenizer.decode(recorded["prompts"][2])
    assert "assistant\na red  circle<|im_end|>" in tail and "And the size?" in tail


def test_a_history_past_the_context_is_a_clear_error(monkeypatch, capsys, recorded):
    """The first prompt takes 154 tokens; with a context of 160 the second question no longer fits: one line naming
    the question, the tokens and the context, exit 1, no traceback."""
    recorded["context"] = 160
    _stdin(monkeypatch, "Which colour is it?\nnever asked\n")
    assert main(["chat", "--example-image", "--interactive", "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "question 2: the conversation so far takes" in err and "context of 160" in err
    assert "Traceback" not in err and len(recorded["prompts"]) == 1


def test_interactive_is_refused_for_an_export_runtime(tmp_path, capsys):
    assert main(["chat", "--runtime", "onnx", "--model", str(tmp_path), "--interactive"]) == 1
    assert "--interactive applies to the pytorch runtime" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [(["--model", ""], "--model"), (["--domain", " "], "--domain"),
                                        (["--device", ""], "--device"), (["--image", "x.png", "--image", ""], "--image")])
def test_an_empty_flag_is_refused_before_loading(argv, flag, capsys, recorded):
    """`adapt chat --domain "$UNSET"` chatted with no domain and `--model ""` named the current folder; an empty value
    is refused by name, as `adapt demo` refuses it, before the model loads."""
    assert main(["chat", "--example-image", *argv]) == 1
    err = capsys.readouterr().err
    assert f"{flag} is empty; give a value or leave the flag out for the default" in err and "processor" not in recorded


@pytest.mark.parametrize("question", ["", "  \n"])
def test_an_empty_question_is_refused_before_loading(question, capsys, recorded):
    """`adapt chat "$Q"` with Q unset asked the model with no question at all (an answer, exit 0); the demo refuses
    an empty question, and so does chat now, before loading the model."""
    assert main(["chat", "--example-image", question]) == 1
    assert "the question is empty" in capsys.readouterr().err and "processor" not in recorded
