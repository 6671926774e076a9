"""`adapt eval` prompts every model it compares the way training prompted the adapted one (issue 15, item 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

import adapt.run_eval as run_eval
from adapt.recipe import load_recipe
from adapt.train import train
from tests.deps import in_ci, require
from tests.test_reliability_training import data_root, make_run  # noqa: F401 - data_root is a fixture


def test_base_and_adapted_are_prompted_with_the_recipes_chat_template(tmp_path, data_root, monkeypatch):  # noqa: F811
    path = make_run(tmp_path, data_root)
    recipe = load_recipe(path, ["model.chat_template=vicuna_v1", "training.max_steps=1",
                                "data.eval_sources=[{name: field, path: data/field/train.jsonl}]",
                                "eval.max_new_tokens=1", "eval.max_samples=1"])
    final = train(recipe, progress=False)
    prompts: dict[str, str] = {}
    real_predict = run_eval.predict

    def recording_predict(vlm, processor, records, **kwargs):
        prompts[label] = processor.chat_template.name  # the template `predict` renders every prompt with
        return real_predict(vlm, processor, records, **kwargs)

    monkeypatch.setattr(run_eval, "predict", recording_predict)
    summaries = {}
    for label, source in (("base", "pocket-tiny-scratch"), ("adapted", str(final))):
        summaries[label] = run_eval.evaluate_model(recipe, source, label, tmp_path / "eval", progress=False)
    assert prompts == {"base": "vicuna_v1", "adapted": "vicuna_v1"}
    assert summaries["base"]["chat_template"] == summaries["adapted"]["chat_template"] == "vicuna_v1"
    assert Path(final).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("runtime, title", [("llamacpp", "llama.cpp f16"), ("onnx", "ONNX Runtime fp32"),
                                            ("executorch", "ExecuTorch fp32")])
def test_adapt_eval_scores_through_an_export_runtime_without_bars(tmp_path, data_root, capsys, runtime,  # noqa: F811
                                                                  title):
    """`adapt eval --runtime NAME --no-progress`: the model is exported in that runtime's format (its writer told
    not to draw a bar: ExecuTorch's export has one) and scored there."""
    import json

    from adapt.cli import main

    needs = {"llamacpp": ["gguf"], "onnx": ["onnx", "onnxruntime"], "executorch": ["executorch.runtime", "torchao"]}
    for module in needs[runtime]:
        require(module, f"the deploy extra: adapt eval --runtime {runtime}")
    if runtime == "llamacpp":
        from deploy.llamacpp import LlamaCppError, binary

        try:
            binary()
        except LlamaCppError as err:  # a skip here, a failure under CI (`make test` builds llama.cpp first)
            if in_ci():
                pytest.fail(f"{err} -- CI is set, so llama.cpp must be built (make llama-cpp)", pytrace=False)
            pytest.skip(str(err))
    path = make_run(tmp_path, data_root)
    out = tmp_path / "eval"
    assert main(["eval", str(path), "--model", "base=pocket-tiny", "--runtime", runtime, "--no-progress", "--out",
                 str(out), "data.eval_sources=[{name: field, path: data/field/train.jsonl}]", "eval.max_samples=2",
                 "eval.max_new_tokens=2"]) == 0
    assert "%|" not in capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    (run,) = report["runs"].values()
    assert run["runtime"] == title and run["sources"]["field"]["n"] == 2
