"""The demo's sampling options (--temperature / --top-p / --seed): greedy by default, checked as `adapt chat` checks
them, and drawn by the same `generate` options `adapt chat` uses."""

from __future__ import annotations

import re

import pytest

from adapt.cli import build_parser


@pytest.mark.parametrize("argv, needle", [
    (["--temperature", "-0.5"], "argument --temperature: must be a finite number >= 0"),
    (["--temperature", "nan"], "argument --temperature: must be a finite number >= 0"),
    (["--temperature", "1e-9"], "argument --temperature: must be 0 (greedy) or at least 0.001"),
    (["--top-p", "0"], "argument --top-p: must be above 0 and at most 1"),
    (["--top-p", "1.5"], "argument --top-p: must be above 0 and at most 1"),
    (["--top-p", "nan"], "argument --top-p: must be above 0 and at most 1"),
    (["--top-p", "high"], "argument --top-p: 'high' is not a number"),
    (["--seed", "-1"], "argument --seed: must be 0 to 4294967295"),
])
def test_bad_sampling_flags_are_usage_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["demo", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_sampling_flags_default_to_greedy_and_reach_the_page(monkeypatch):
    from deploy.demo import app, cli

    args = build_parser().parse_args(["demo"])
    assert (args.temperature, args.top_p, args.seed) == (0.0, 1.0, 0)
    seen = {}

    def build_demo(model, domain, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(app, "build_demo", build_demo)
    monkeypatch.setattr(cli, "check_address", lambda host, port: None)
    args = build_parser().parse_args(["demo", "--temperature", "0.7", "--top-p", "0.9", "--seed", "5"])
    with pytest.raises(SystemExit):
        cli.run_demo(args)
    assert (seen["temperature"], seen["top_p"], seen["seed"]) == (0.7, 0.9, 5)


@pytest.mark.parametrize("argv", [["--top-p", "0.9"], ["--seed", "5"]])
def test_sampling_flags_without_a_temperature_are_refused_not_ignored(argv, monkeypatch):
    """Greedy answers draw nothing, so --top-p / --seed alone were silently without effect."""
    from deploy.demo import app, cli
    from deploy.demo.page import DemoError

    monkeypatch.setattr(app, "build_demo", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DemoError, match="give --temperature too"):
        cli.run_demo(build_parser().parse_args(["demo", *argv]))


@pytest.mark.parametrize("kwargs, needle", [
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": 0.5, "top_p": 0.0}, "top_p must be above 0 and at most 1"),
    ({"top_p": 1.01}, "top_p must be above 0 and at most 1"),
    ({"seed": 2**40}, "seed must be 0 to 4294967295"),
])
def test_build_demo_refuses_bad_sampling_before_loading_the_model(kwargs, needle, tmp_path):
    from deploy.demo.app import build_demo

    with pytest.raises(ValueError, match=needle):
        build_demo(tmp_path / "no-model-here", **kwargs)  # a model load would fail otherwise, naming the folder


def test_session_samples_as_adapt_chat_and_a_seed_repeats_the_answer(monkeypatch):
    from PIL import Image

    from deploy.demo.session import ModelSession
    from model.generation import sampling_options

    session = ModelSession("pocket-tiny", max_new_tokens=8)
    asked: list[dict] = []
    generate = session.vlm.generate

    def spy(*args, **kwargs):
        asked.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(session.vlm, "generate", spy)
    image = Image.new("RGB", (64, 48), (20, 160, 40))
    ask = lambda: str(session.answer("What colour is it?", [image], stop_repetition=False))  # noqa: E731
    ask()
    assert asked[-1]["do_sample"] is False and "temperature" not in asked[-1]  # greedy unless asked
    session.set_sampling(temperature=3.0, top_p=0.95, seed=11)
    first = ask()
    assert sampling_options(3.0, 0.95).items() <= asked[-1].items()
    assert asked[-1]["top_p"] == 0.95 and asked[-1]["top_k"] == 0
    assert ask() == first  # the seed is set for each question
    answers = {first}
    for seed in range(12):
        session.set_sampling(seed=seed)
        answers.add(ask())
    assert len(answers) > 1  # it does sample
    with pytest.raises(ValueError, match="top_p"):
        session.set_sampling(top_p=-0.1)
    assert session.top_p == 0.95  # a refused value changes nothing
    assert "temperature 3" in session.sampling_note and "seed 11" in session.sampling_note


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "64"])
def test_build_demo_refuses_a_bad_answer_length_before_loading_the_model(value, tmp_path):
    """2.5 was cut to 2 and "64" failed with a raw TypeError ('<' between str and int)."""
    from deploy.demo.app import build_demo
    from deploy.demo.page import DemoError

    with pytest.raises(DemoError, match=f"max_new_tokens must be a whole number >= 1, got {re.escape(repr(value))}"):
        build_demo(tmp_path / "no-model-here", max_new_tokens=value)


def test_build_demo_gives_a_loaded_session_the_answer_length_asked_for():
    """A ModelSession handed to build_demo kept answering at its own length: max_new_tokens was ignored (and the
    page's settings said the asked-for one). None keeps the session's own."""
    from deploy.demo.app import build_demo
    from deploy.demo.session import ModelSession

    session = ModelSession("pocket-tiny", max_new_tokens=20)
    assert build_demo(session, None).pocket_settings.max_new_tokens == 20 and session.max_new_tokens == 20
    blocks = build_demo(session, None, max_new_tokens=5)
    assert session.max_new_tokens == 5 and blocks.pocket_settings.max_new_tokens == 5


@pytest.mark.parametrize("kwargs, named", [({"dtype": "bfloat16"}, "dtype='bfloat16'"),
                                           ({"device": "cuda"}, "device='cuda'"),
                                           ({"allow_pickle": True}, "allow_pickle=True")])
def test_build_demo_refuses_load_settings_for_a_loaded_session(kwargs, named):
    """dtype / device / allow_pickle given with a loaded ModelSession were silently ignored: the page answered in the
    session's own dtype on its own device."""
    from deploy.demo.app import build_demo
    from deploy.demo.page import DemoError
    from deploy.demo.session import ModelSession

    session = ModelSession("pocket-tiny", max_new_tokens=20)
    with pytest.raises(DemoError, match=rf"build_demo: {re.escape(named)} cannot apply to a model already loaded"):
        build_demo(session, None, max_new_tokens=5, temperature=0.5, **kwargs)
    assert (session.max_new_tokens, session.temperature) == (20, 0.0)  # a refused build changes nothing
    with pytest.raises(ValueError):
        build_demo(session, "no_such_domain", max_new_tokens=5, temperature=0.5)
    assert (session.max_new_tokens, session.temperature) == (20, 0.0)
    assert build_demo(session, None, allow_pickle=False).pocket_settings.max_new_tokens == 20  # the default: fine


@pytest.mark.parametrize("value", [0, -3, 2.5, "64"])
def test_a_bad_answer_length_for_one_question_is_refused_not_replaced(value):
    """stream(max_new_tokens=0) answered at the session's length, 2.5 at 2 tokens, -3 failed inside generate."""
    from deploy.demo.session import ModelSession

    session = ModelSession("pocket-tiny", max_new_tokens=4)
    with pytest.raises(ValueError, match=f"max_new_tokens must be a whole number >= 1, got {re.escape(repr(value))}"):
        session.answer("What is it?", max_new_tokens=value)


@pytest.mark.parametrize("kwargs", [{"top_p": 0.9}, {"seed": 5}, {"temperature": 0.0, "top_p": 0.5}])
def test_build_demo_refuses_top_p_or_seed_for_greedy_answers(kwargs, tmp_path):
    """`adapt demo --top-p` without --temperature is refused; build_demo(top_p=0.9) served greedy answers silently."""
    from deploy.demo.app import build_demo
    from deploy.demo.page import DemoError

    with pytest.raises(DemoError, match="shape sampled answers, and these answers are greedy"):
        build_demo(tmp_path / "no-model-here", **kwargs)  # before the model loads


def test_build_demo_takes_top_p_for_a_session_that_samples():
    from deploy.demo.app import build_demo
    from deploy.demo.page import DemoError
    from deploy.demo.session import ModelSession

    session = ModelSession("pocket-tiny", max_new_tokens=4)
    with pytest.raises(DemoError, match="greedy"):
        build_demo(session, None, seed=3)
    session.set_sampling(temperature=0.7)
    build_demo(session, None, top_p=0.8, seed=3)
    assert (session.temperature, session.top_p, session.seed) == (0.7, 0.8, 3)
