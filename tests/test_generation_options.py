"""model/generation.py: the generate options a temperature and top-p give, and what they refuse."""

from __future__ import annotations

import pytest

from model.generation import sampling_options


@pytest.mark.parametrize("temperature", [-1.0, float("nan"), float("inf"), "0.7"])
def test_a_temperature_that_cannot_work_is_refused_not_greedy_or_nan(temperature):
    """-1 was greedy without a word; nan / inf reached generate as a sampling temperature."""
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        sampling_options(temperature)


@pytest.mark.parametrize("top_p", [0.0, 1.5, float("nan")])
def test_a_top_p_outside_0_1_is_refused_greedy_or_not(top_p):
    for temperature in (0.0, 0.7):
        with pytest.raises(ValueError, match="above 0 and at most 1"):
            sampling_options(temperature, top_p)


def test_temperature_zero_is_greedy_and_a_real_one_samples_from_the_whole_softmax():
    assert sampling_options(0) == {"do_sample": False}
    assert sampling_options(0.7, 0.9) == {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 0.9}


@pytest.mark.parametrize("longest", [0, -3, 2.5, True])
def test_answer_room_refuses_an_answer_of_no_tokens(longest):
    """0 went on to generate (or, with no context known, was handed back as the room for the answer)."""
    from types import SimpleNamespace

    from model.generation import answer_room

    for context in (None, 100):
        vlm = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=context)))
        with pytest.raises(ValueError, match="max_new_tokens must be a whole number >= 1"):
            answer_room(vlm, 10, longest)
        assert answer_room(vlm, 10, 5) == 5


def test_a_prompt_that_fills_the_context_gets_its_last_positions_token_as_the_export_runtimes_give_it():
    """A prompt of exactly the context was refused as 'more than' it, while the exported runtimes answer it with
    the one token the context's last position gives (prompt + answer may be one more than the context)."""
    from types import SimpleNamespace

    from model.generation import PromptTooLongError, answer_room

    vlm = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=100)))
    assert answer_room(vlm, 99, 64) == 2
    assert answer_room(vlm, 100, 64) == 1
    with pytest.raises(PromptTooLongError, match="takes 101 tokens, more than the model's context of 100"):
        answer_room(vlm, 101, 64)


@pytest.mark.parametrize("temperature", ["0", "0.7"])
def test_adapt_chat_names_nan_scores_instead_of_answering_nothing_or_a_traceback(monkeypatch, capsys, temperature):
    """A model whose weights hold NaN: greedy answered nothing without a word, sampling ended in torch.multinomial's
    RuntimeError traceback; both are now one line saying what is wrong."""
    import torch

    import model
    from adapt.cli import main

    real_load = model.load

    def broken_load(*args, **kwargs):
        vlm, processor = real_load(*args, **kwargs)
        with torch.no_grad():
            vlm.language_model.get_output_embeddings().weight[5].fill_(float("nan"))
        return vlm, processor

    monkeypatch.setattr(model, "load", broken_load)
    rc = main(["chat", "Hi", "--model", "pocket-tiny-scratch", "--max-new-tokens", "3", "--temperature", temperature])
    err = capsys.readouterr().err
    assert rc == 1 and "scores for answer token 1 are NaN or infinite" in err and "Traceback" not in err


def test_finite_scores_lets_masked_tokens_through():
    import torch

    from model.generation import FiniteScores, NonFiniteScoresError

    scores = torch.tensor([[0.5, float("-inf"), 1.0]])
    assert FiniteScores()(torch.zeros((1, 2), dtype=torch.long), scores) is scores
    with pytest.raises(NonFiniteScoresError, match="answer token 3"):
        FiniteScores()(torch.zeros((1, 2), dtype=torch.long), torch.tensor([[0.5, float("inf"), 1.0]]))


def test_the_demo_fails_on_nan_scores_instead_of_answering_nothing():
    import torch

    from deploy.demo.session import GenerationError, ModelSession
    from model.generation import NonFiniteScoresError

    session = ModelSession("pocket-tiny", max_new_tokens=3)
    with torch.no_grad():
        session.vlm.language_model.get_output_embeddings().weight[5].fill_(float("nan"))
    with pytest.raises(GenerationError) as caught:
        session.answer("Hi")
    assert isinstance(caught.value.__cause__, NonFiniteScoresError)
